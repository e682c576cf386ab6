"""The state one index's write and search paths share: tables, workers, epochs and the
metric's coefficients. Owned by ``rtindex.Index``; the path modules take it as input."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rtindex.core.config import IndexConfig
from rtindex.core.epochs import ReaderEpochs
from rtindex.core.runtime import BoundKernel, ScratchPool, Workers
from rtindex.core.storage import GraphStore
from rtindex.kernels.beam_search import search_queries
from rtindex.kernels.category_search import search_categories_queries
from rtindex.kernels.layout import BuildParams, SearchMode, metric_code

if TYPE_CHECKING:
    from rtindex.core.gpu import GpuBackend
    from rtindex.core.gpu.dirty import DirtyRows


@dataclass
class Counters:
    inserted: int = 0
    refreshed: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    consolidations: int = 0
    repaired_rows: int = 0
    adopted: int = 0
    relinked: int = 0
    reduced_ef_linked: int = 0  # nodes inserted with a beam narrower than ef_construction


@dataclass
class Engine:
    config: IndexConfig
    store: GraphStore
    workers: Workers
    epochs: ReaderEpochs
    params: BuildParams
    # how beam searches read rows, those of queries and of insertion alike (the float16
    # copy with traversal_precision="float16")
    search_mode: SearchMode
    greedy_widths: np.ndarray  # int32[max_level + 1] of zeros: width 1 on every upper level
    search_kernel: BoundKernel = field(default_factory=lambda: BoundKernel(search_queries))
    category_kernel: BoundKernel = field(default_factory=lambda: BoundKernel(search_categories_queries))
    live_nodes: int = 0
    tombstones: int = 0
    # live nodes per subgraph (the category engine's; the global engine keeps one entry)
    graph_live: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    counters: Counters = field(default_factory=Counters)
    # GPU backend (rtindex.core.gpu), None on the CPU: the search route and the rows written
    # since the last device sync, reported by the write paths through the note_* hooks
    gpu: GpuBackend | None = None
    dirty: DirtyRows | None = None

    def note_nodes(self, nodes: np.ndarray) -> None:
        """Whole node records (vector rows, state, level, links, upper rows) were written."""
        if self.dirty is not None:
            self.dirty.nodes(self.store.tables, nodes)

    def note_links(self, nodes: np.ndarray, levels: np.ndarray | None = None) -> None:
        """Adjacency rows of ``nodes`` were written (on levels[i], or on every level)."""
        if self.dirty is not None:
            self.dirty.links(self.store.tables, nodes, levels)

    def note_chain_states(self, first_nodes: np.ndarray) -> None:
        """The states of the item chains starting at ``first_nodes`` are about to change."""
        if self.dirty is not None:
            self.dirty.chain_states(self.store.tables, first_nodes)

    def note_items(self, items: np.ndarray) -> None:
        if self.dirty is not None:
            self.dirty.add("item", items)

    @classmethod
    def create(cls, config: IndexConfig) -> Engine:
        """An empty engine: tables of ``config.initial_capacity`` rows."""
        half = config.traversal_precision == "float16"
        return cls._around(config, GraphStore(config.dim, config.M, config.initial_capacity, half,
                                              config.deleted_versions_kept))

    @classmethod
    def restore(cls, config: IndexConfig, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Engine:
        """The engine an ``export_views`` described (``arrays``: copies of its views;
        ``meta``: at least its bookkeeping): tables, free lists, id map, graveyard, node
        counts and counters."""
        half = config.traversal_precision == "float16"
        store = GraphStore.restore(config.dim, config.M, half, config.deleted_versions_kept, arrays, meta["marks"])
        engine = cls._around(config, store)
        engine.live_nodes, engine.tombstones = meta["live_nodes"], meta["tombstones"]
        engine.counters = Counters(**meta["counters"])
        return engine

    def export_views(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Views of every array to save (copy them with writes excluded) and the
        bookkeeping ``restore`` needs besides them."""
        views, marks = self.store.export_views()
        meta = {"marks": marks, "live_nodes": self.live_nodes, "tombstones": self.tombstones,
                "counters": asdict(self.counters)}
        return views, meta

    @classmethod
    def for_categories(cls, main: Engine, store: GraphStore | None = None) -> Engine:
        """The engine of the category subgraphs of ``main``'s index: its own store of
        category nodes (degree ``category_M``; rows and items read from ``main``'s
        store), workers and counters, and ``main``'s reader epochs (a search of either
        protects the slots of both). Its walks read rows through ``node_vec``."""
        config = main.config
        sub_config = replace(config, M=config.category_M)
        if store is None:
            store = GraphStore(config.dim, config.category_M, config.initial_capacity, rows_from=main.store)
        engine = cls._around(sub_config, store)
        engine.epochs = main.epochs
        engine.search_mode = engine.search_mode._replace(direct_rows=False)
        return engine

    @classmethod
    def _around(cls, config: IndexConfig, store: GraphStore) -> Engine:
        scratch = ScratchPool(config.max_degree0, max_idle=4 * config.worker_threads + 4)
        code = metric_code(config.metric)
        half = config.traversal_precision == "float16"
        return cls(
            config=config,
            store=store,
            workers=Workers(config.worker_threads, scratch),
            epochs=ReaderEpochs(),
            params=BuildParams(
                metric=code,
                M=config.M,
                max_degree0=config.max_degree0,
                ef_construction=config.ef_construction,
                prune_alpha=float(config.prune_alpha),
                fill=bool(config.fill_pruned),
                repair_alpha=float(config.repair_alpha),
                repair_widen=int(config.repair_widen),
                # neighbor selection reads the float16 copy as well: the candidates' rows are
                # the ones the walk just read (in cache, half the bytes); faster inserts at
                # the same recall (README, In-process API, has the figures)
                half=half,
            ),
            # insertion walks the float16 copy too (half the bytes per row read; same recall)
            search_mode=SearchMode(metric=code, direct_rows=True, half=half),
            greedy_widths=np.zeros(config.max_level + 1, np.int32),
        )
