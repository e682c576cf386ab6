"""``rtindex.Index``: the in-process API (faiss/hnswlib shape: numpy in, numpy out).

Writes are serialized by one lock (single writer) and applied in batches; searches run
concurrently from any number of threads and never see a deleted item once ``delete``
has returned. ``get`` does not wait for a write either: a write marks the short steps
that change what it reads (a sequence lock), and a ``get`` that overlapped one reads
again, so it sees each batch entirely or not at all.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from rtindex.core import gpu, validation
from rtindex.core.categories import ItemCategories, Taxonomy
from rtindex.core.config import IndexConfig
from rtindex.core.engine import Engine
from rtindex.core.insert import draw_levels, link_category_nodes, link_new_nodes
from rtindex.core.lockstep import search_categories_lockstep, search_lockstep
from rtindex.core.repair import consolidate, consolidation_due, fix_entry_points, tombstone_nodes_of
from rtindex.core.results import (
    DELETED,
    INSERTED,
    REFRESHED,
    SKIPPED_STALE,
    UNKNOWN,
    DeleteResult,
    GetResult,
    IndexState,
    SearchResult,
    UpsertResult,
)
from rtindex.core.scorers import MetricScorer, Scorer
from rtindex.core.search import search_batch, search_categories
from rtindex.core.storage import Allocate, GraphStore, copy_out
from rtindex.kernels.layout import LIVE, GraphTables

# a get retries this often while writes keep publishing, then waits for the write lock
OPTIMISTIC_GETS = 64


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class Index:
    """A mutable HNSW index over float32 embeddings with int64 ids.

    >>> idx = Index(dim=128, metric="ip", M=16, ef_construction=200)
    >>> idx.upsert(ids, vectors)            # existing id = embedding refresh
    >>> idx.delete(ids)                     # unknown ids are reported, not fatal
    >>> res = idx.search(queries, k=10, ef=64)   # res.ids int64[b, k], res.scores float32[b, k]

    Scores: inner product ("ip"), cosine similarity ("cosine"), or negative squared L2
    distance ("l2"); higher is better. Further options: see ``IndexConfig``.
    """

    def __init__(self, dim: int, metric: str = "ip", M: int = 16, ef_construction: int = 200, **options: Any):
        unknown = set(options) - set(IndexConfig.field_names())
        if unknown:
            raise ValueError(f"unknown Index option(s) {sorted(unknown)}; valid: {IndexConfig.field_names()}")
        self._init(IndexConfig(dim=dim, metric=metric, M=M, ef_construction=ef_construction, **options))

    @classmethod
    def from_config(cls, config: IndexConfig) -> Index:
        index = cls.__new__(cls)
        index._init(config)
        return index

    @classmethod
    def from_state(cls, state: IndexState) -> Index:
        """An index equal to the one ``state`` was exported from: same items, graph,
        free slots and versions, hence the same search results."""
        config = IndexConfig(**state.config)
        index = cls.__new__(cls)
        index._init(config, Engine.restore(config, state.arrays, state.meta))
        index._restore_categories(state.arrays, state.meta.get("categories"))
        index._rng.bit_generator.state = state.meta["rng"]
        return index

    def export_state(self, capture_with: Callable[[], dict[str, Any]] | None = None,
                     allocate: Allocate | None = None) -> IndexState:
        """A consistent copy of the whole index (for snapshots). Writes wait while the
        tables are copied (``meta["pause_seconds"]``); searches go on. ``capture_with``
        runs at the same instant and its result lands in ``extra``: what it reports
        (e.g. applied Kafka offsets) is exactly what the copy contains. ``allocate``
        says where the copies go (default: private numpy arrays)."""
        with self._write_lock:
            t0 = time.perf_counter()
            extra = capture_with() if capture_with is not None else {}
            views, meta = self._export_views()
            arrays = {name: copy_out(name, view, allocate) for name, view in views.items()}
            meta.update(rng=self._rng.bit_generator.state, items=len(self))
            meta["pause_seconds"] = time.perf_counter() - t0
        config = asdict(self.config)
        config.pop("device")  # where to search is the restoring process's choice
        return IndexState(config=config, arrays=arrays, meta=meta, extra=extra)

    def export_plan(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of each array ``export_state`` would copy now (so that a
        caller can prepare the memory before the copy)."""
        with self._write_lock:
            return {name: (view.shape, view.dtype) for name, view in self._export_views()[0].items()}

    def _export_views(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The global engine's views, then the category engine's (names prefixed
        ``category.``) and the taxonomy's."""
        views, meta = self._engine.export_views()
        cat_views, cat_meta = self._categories.export_views()
        views.update({f"category.{name}": view for name, view in cat_views.items()})
        views["category.graph_live"] = self._categories.graph_live
        views.update(self._taxonomy.export_views())
        meta["categories"] = cat_meta
        return views, meta

    def _restore_categories(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None) -> None:
        if meta is None:  # a snapshot from before categories existed: none
            return
        cfg = self.config
        own = {name[len("category."):]: a for name, a in arrays.items() if name.startswith("category.")}
        store = GraphStore.restore(cfg.dim, cfg.category_M, False, 0, own, meta["marks"], rows_from=self._engine.store)
        self._categories = Engine.for_categories(self._engine, store)
        self._categories.live_nodes, self._categories.tombstones = meta["live_nodes"], meta["tombstones"]
        self._categories.counters = type(self._categories.counters)(**meta["counters"])
        self._categories.graph_live = own["graph_live"].astype(np.int64).copy()
        self._taxonomy = Taxonomy.restore(arrays)

    def _init(self, config: IndexConfig, engine: Engine | None = None) -> None:
        self.config = config
        self._engine = Engine.create(config) if engine is None else engine
        # category subgraphs (rtindex.core.categories): their own engine over the same rows
        self._categories = Engine.for_categories(self._engine)
        self._taxonomy = Taxonomy()
        self._rng = np.random.default_rng(config.seed)
        self._write_lock = threading.Lock()
        # odd while a write changes what get() reads; a get that saw it move reads again
        self._publish_seq = 0
        # the last write-ahead-log record applied (the server's WAL: a snapshot taken now
        # covers every record up to it); set under the write lock with the write itself
        self.log_seq = 0
        # queries reach it already normalised, so it scores with the plain inner product
        self._metric_scorer = MetricScorer("ip" if config.metric == "cosine" else config.metric, config.dim)
        self.device = "cpu" if gpu.attach(self._engine) is None else "cuda"

    # ------------------------------------------------------------------ writes
    def prepare_upsert(
        self, ids: object, vectors: object, versions: object | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validate and convert an upsert batch (what ``upsert`` does first): returns
        (ids int64[n], rows float32[n, dim] as stored, versions int64[n] or None).
        Raises ValueError saying what is wrong; changes nothing."""
        cfg = self.config
        ids = validation.as_ids(ids, "upsert")
        rows = validation.as_matrix(vectors, cfg.dim, "upsert", rows=len(ids), metric=cfg.metric,
                                    float16=cfg.traversal_precision == "float16")
        versions = validation.as_versions(versions, len(ids), "upsert")
        return ids, validation.stored_rows(rows, cfg.metric), versions

    def prepare_delete(self, ids: object, versions: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Validate and convert a delete batch; raises ValueError, changes nothing."""
        ids = validation.as_ids(ids, "delete")
        return ids, validation.as_versions(versions, len(ids), "delete")

    def prepare_categories(self, categories: object, n: int) -> ItemCategories:
        """Validate and convert the categories of an upsert batch of ``n`` items (one
        list of category ids per item; None: none). Raises ValueError; changes nothing."""
        return validation.as_item_categories(categories, n, "upsert")

    def upsert(self, ids: object, vectors: object, versions: object | None = None, *,
               ef_construction: int | None = None, categories: object | None = None) -> UpsertResult:
        """Insert new ids; replace the embedding of existing ones (refresh).

        ids: int64[n] distinct, >= 0. vectors: float32[n, dim], finite. versions: optional
        int64[n]; an op is applied only if its version is greater than the stored one
        (replays are harmless). Unversioned writes always apply. The batch is validated
        as a whole; a rejected batch changes nothing. Returns once every applied item is
        searchable.

        ef_construction: beam width for this batch only, at most the index's (default
        it): a narrower beam links sooner at some cost in graph quality — the server's
        writer narrows it when it is behind its freshness budget (``rtindex.core.writer``
        says why; README has the measurements).

        categories: one list of category ids per item (None or [] for none; at most
        ``MAX_ITEM_CATEGORIES`` each): the item is a member of these categories and of all
        their ancestors (``set_category_parents``); a category id never seen before
        becomes a root. An applied upsert replaces the item's categories along with its
        embedding.
        """
        prepared = self.prepare_upsert(ids, vectors, versions)
        item_categories = None if categories is None else self.prepare_categories(categories, len(prepared[0]))
        return self.upsert_prepared(*prepared, ef_construction=ef_construction, categories=item_categories)

    def upsert_prepared(self, ids: np.ndarray, rows: np.ndarray, versions: np.ndarray | None, *,
                        ef_construction: int | None = None,
                        categories: ItemCategories | None = None, log_seq: int | None = None) -> UpsertResult:
        """``upsert`` of a batch exactly as ``prepare_upsert`` (and ``prepare_categories``)
        returned it (the server's writer: its callers validated each write before
        queueing it, so it is not checked twice). ``log_seq``: the write-ahead-log record
        this batch applies (see ``log_seq``)."""
        cfg = self.config
        ef = validation.as_ef_construction(ef_construction, cfg.ef_construction)
        engine = self._engine
        store = engine.store
        items = store.items
        with self._write_lock:
            self._note_log_seq(log_seq)
            self._reclaim()
            slots = items.slots_of(ids)
            exists = slots >= 0
            # versioned: a new id is stale too if the graveyard holds a later delete of it
            apply = np.ones(len(ids), bool) if versions is None else versions > items.stored_versions(ids, slots)
            new = np.flatnonzero(apply & ~exists)
            refresh = np.flatnonzero(apply & exists)
            skipped = len(ids) - len(new) - len(refresh)
            engine.counters.skipped_stale += skipped
            outcome = np.full(len(ids), SKIPPED_STALE, np.int8)
            outcome[new] = INSERTED
            outcome[refresh] = REFRESHED
            if len(new) + len(refresh) == 0:
                return UpsertResult(0, 0, skipped, outcome)
            order = np.concatenate([new, refresh])
            if versions is None:
                new_versions = np.concatenate([np.zeros(len(new), np.int64), items.versions_at(slots[refresh]) + 1])
            else:
                new_versions = versions[order]

            n = len(order)
            levels = draw_levels(self._rng, n, cfg.level_multiplier, cfg.max_level)
            new_items = items.allocate(len(new))
            nodes = store.node_slots.allocate(n)
            upper_rows = store.upper_slots.allocate(int(levels.sum()))
            store.ensure_capacity(store.node_slots.high_water, store.upper_slots.high_water, items.slots.high_water)
            with self._publishing():  # the rows and item slots may be reused ones
                owners = np.concatenate([new_items, slots[refresh]])
                vector_rows = store.add_nodes(nodes, rows[order], owners, levels, upper_rows)
                engine.note_nodes(nodes)
                engine.note_items(new_items)
                fresh = slice(0, len(new))
                items.add(new_items, ids[new], new_versions[fresh], vector_rows[fresh], nodes[fresh])

            link_new_nodes(engine, nodes, engine.params._replace(ef_construction=ef))
            if ef < cfg.ef_construction:
                engine.counters.reduced_ef_linked += n
            applied_categories = None if categories is None else categories.take(order)
            if applied_categories is not None and len(applied_categories.values):
                first_cnodes = self._add_category_nodes(owners, vector_rows, applied_categories.offsets,
                                                        self._taxonomy.ensure(applied_categories.values), ef)
            else:
                first_cnodes = np.full(n, -1, np.int32)

            with self._publishing():  # the batch becomes visible to get()
                if len(refresh):
                    # the new node is linked; now retire the old one (a search in between
                    # may meet both and returns the item once)
                    rest = slice(len(new), None)
                    old_first = items.repoint(slots[refresh], nodes[rest], vector_rows[rest], new_versions[rest])
                    engine.note_chain_states(old_first)
                    tombstone_nodes_of(engine, old_first)
                old_cnodes = items.repoint_categories(owners, first_cnodes)
                tombstone_nodes_of(self._categories, old_cnodes[old_cnodes >= 0])
                items.publish(ids[new], new_items, versioned=versions is not None)
            engine.counters.inserted += len(new)
            engine.counters.refreshed += len(refresh)
            self._after_write()
            return UpsertResult(len(new), len(refresh), skipped, outcome)


    def delete(self, ids: object, versions: object | None = None) -> DeleteResult:
        """Delete items. Once this returns no search returns them. Unknown ids are
        reported in ``unknown_ids``; with versions, a delete applies only if its version
        is greater than the stored one."""
        return self.delete_prepared(*self.prepare_delete(ids, versions))

    def delete_prepared(self, ids: np.ndarray, versions: np.ndarray | None, *,
                        log_seq: int | None = None) -> DeleteResult:
        """``delete`` of a batch exactly as ``prepare_delete`` returned it (``log_seq``:
        as in ``upsert_prepared``)."""
        engine = self._engine
        items = engine.store.items
        with self._write_lock:
            self._note_log_seq(log_seq)
            self._reclaim()
            slots = items.slots_of(ids)
            known = slots >= 0
            # newer than the stored version, or for an unknown id than the delete the
            # graveyard remembers (versioned deletes of unknown ids are remembered too)
            newer = known if versions is None else versions > items.stored_versions(ids, slots)
            apply = known & newer
            doomed = slots[apply]
            with self._publishing():
                first_nodes = items.first_nodes(doomed)
                engine.note_chain_states(first_nodes)
                tombstone_nodes_of(engine, first_nodes)
                first_cnodes = items.first_category_nodes(doomed)
                tombstone_nodes_of(self._categories, first_cnodes[first_cnodes >= 0])
                items.mark_deleted(ids[newer], slots[newer], None if versions is None else versions[newer])
            skipped = int(known.sum() - apply.sum())
            engine.counters.deleted += len(doomed)
            engine.counters.skipped_stale += skipped
            self._after_write()
            outcome = np.full(len(ids), UNKNOWN, np.int8)
            outcome[apply] = DELETED
            outcome[known & ~apply] = SKIPPED_STALE
            return DeleteResult(deleted=len(doomed), unknown_ids=ids[~known], skipped_stale=skipped, outcome=outcome)

    def _add_category_nodes(self, owners: np.ndarray, vector_rows: np.ndarray, offsets: np.ndarray,
                            graphs: np.ndarray, ef: int) -> np.ndarray:
        """Give item slot ``owners[i]`` (embedding row ``vector_rows[i]``) a linked node
        in each subgraph of ``graphs[offsets[i]:offsets[i + 1]]`` (the categories it was
        given) and of their ancestors. Returns the head of each item's new chain of
        category nodes (-1 if none); the items do not point at them yet."""
        cat = self._categories
        store = cat.store
        counts = np.diff(offsets)
        given = np.repeat(np.arange(len(owners)), counts)
        pos, member_graphs, member_direct = self._taxonomy.ancestors_closure(given, graphs)
        first = np.full(len(owners), -1, np.int32)
        m = len(pos)
        if m == 0:
            return first
        self._ensure_category_graphs()
        ccfg = cat.config
        levels = draw_levels(self._rng, m, ccfg.level_multiplier, ccfg.max_level)
        # slots in subgraph order: a category's nodes of one batch lie side by side (its
        # search reads their rows of links together)
        by_graph = np.lexsort((pos, member_graphs))
        cnodes = np.empty(m, np.int32)
        cnodes[by_graph] = store.node_slots.allocate(m)
        upper_rows = store.upper_slots.allocate(int(levels.sum()))
        store.ensure_capacity(store.node_slots.high_water, store.upper_slots.high_water, 0)
        store.init_nodes(cnodes, vector_rows[pos], owners[pos], member_graphs, levels, upper_rows, member_direct)
        # chain each item's nodes (pos is sorted by item)
        same_item = pos[1:] == pos[:-1]
        following = np.full(m, -1, np.int32)
        following[:-1][same_item] = cnodes[1:][same_item]
        store.tables.node_next[cnodes] = following
        heads = np.ones(m, bool)
        heads[1:] = ~same_item
        first[pos[heads]] = cnodes[heads]
        link_category_nodes(cat, cnodes, cat.params._replace(
            ef_construction=min(ef, self.config.category_ef_construction)))
        return first

    def _ensure_category_graphs(self) -> None:
        """Entry points and live counts for every category the taxonomy knows."""
        cat = self._categories
        n = self._taxonomy.count
        cat.store.ensure_graphs(n)
        if len(cat.graph_live) < n:
            grown = np.zeros(max(n, 2 * len(cat.graph_live)), np.int64)
            grown[: len(cat.graph_live)] = cat.graph_live
            cat.graph_live = grown

    def set_category_parents(self, children: object, parents: object, *, log_seq: int | None = None) -> int:
        """Set the parent of each category in ``children`` to the one in ``parents``
        (int64 ids >= 0; -1 makes the category a root; a root needs no entry). Ids not
        seen before become categories. Members follow at once: an item in a category is
        a member of all its ancestors, so moving a category moves its members' implied
        memberships (their nodes in the old ancestors go, nodes in the new ones are
        linked). Refuses a cycle, a category given two parents, a negative id, or more
        than ``MAX_TAXONOMY_DEPTH`` levels (ValueError; nothing changed). Returns the
        number of items whose memberships changed. ``log_seq``: as in ``upsert_prepared``."""
        children, parents = self.prepare_category_parents(children, parents)
        with self._write_lock:
            self._note_log_seq(log_seq)
            self._reclaim()
            moved = self._taxonomy.set_parents(children, parents)
            self._ensure_category_graphs()
            rebuilt = self._rebuild_memberships(moved)
            self._after_write()
            return rebuilt

    def prepare_category_parents(self, children: object, parents: object) -> tuple[np.ndarray, np.ndarray]:
        """Check and convert the arguments of ``set_category_parents`` (int64 arrays);
        the rules that need the taxonomy (one parent each, cycles, depth) are checked
        when it is applied. Raises ValueError saying what is wrong."""
        children = validation.as_category_ids(children, "set_category_parents", "children")
        parents = validation.as_category_ids(parents, "set_category_parents", "parents", allow_root=True)
        return children, parents

    def category_parents(self) -> tuple[np.ndarray, np.ndarray]:
        """(children, parents): every edge of the taxonomy, as int64 category ids."""
        with self._write_lock:
            return self._taxonomy.edges()

    def _rebuild_memberships(self, graphs: np.ndarray) -> int:
        """New node chains for the items with a node in ``graphs`` (whose ancestors
        changed), from the categories they were given; the old chains are tombstoned."""
        if len(graphs) == 0:
            return 0
        cat = self._categories
        t = cat.store.tables
        high = cat.store.node_slots.high_water
        live = t.node_state[:high] == LIVE
        touched = live & np.isin(t.node_graph[:high], graphs)
        owners = np.unique(t.node_item[:high][touched])
        if len(owners) == 0:
            return 0
        given = live & (t.node_direct[:high] == 1) & np.isin(t.node_item[:high], owners)
        given_nodes = np.flatnonzero(given)
        given_items = t.node_item[given_nodes]
        order = np.argsort(given_items, kind="stable")
        given_nodes, given_items = given_nodes[order], given_items[order]
        pos = np.searchsorted(owners, given_items)
        offsets = np.zeros(len(owners) + 1, np.int64)
        np.cumsum(np.bincount(pos, minlength=len(owners)), out=offsets[1:])
        items = self._engine.store.items
        vector_rows = self._engine.store.tables.item_vec[owners]
        first = self._add_category_nodes(owners, vector_rows, offsets, t.node_graph[given_nodes], self.config.ef_construction)
        with self._publishing():
            old = items.repoint_categories(owners, first)
            tombstone_nodes_of(cat, old[old >= 0])
        return len(owners)

    @contextlib.contextmanager
    def _publishing(self) -> Iterator[None]:
        """Bracket a step that changes what ``get`` reads (the id map, item slots and
        their versions, the vectors of reused rows). Only the writer, holding the write
        lock, calls it."""
        self._publish_seq += 1
        try:
            yield
        finally:
            self._publish_seq += 1

    def _reclaim(self) -> None:
        """Free list: slots retired before the oldest running search began."""
        oldest = self._engine.epochs.oldest_active()
        self._engine.store.reclaim(oldest)
        self._categories.store.reclaim(oldest)

    def _note_log_seq(self, log_seq: int | None) -> None:
        """Under the write lock: the write-ahead-log record being applied (a rejected one
        counts too: replaying it would be rejected again)."""
        if log_seq is not None:
            self.log_seq = max(self.log_seq, log_seq)

    def _after_write(self) -> None:
        fix_entry_points(self._engine)
        fix_entry_points(self._categories)
        if consolidation_due(self._engine) or consolidation_due(self._categories):
            self._consolidate()
        if self._engine.gpu is not None:
            self._engine.gpu.sync()

    def _consolidate(self) -> int:
        """Both graphs at once: a category node reads the row of its item's global node,
        so both are freed together (an item's nodes are tombstoned together)."""
        consolidate(self._categories, free_items=False)
        engine = self._engine
        if engine.dirty is None:
            return consolidate(engine)
        # the repair kernels report counts, not rows: the GPU mirror's dirty rows are
        # found by comparing the adjacency before and after (once per consolidation)
        store = engine.store
        with engine.dirty.compare(lambda: store.tables, store.node_slots.high_water, store.upper_slots.high_water):
            return consolidate(engine)

    def consolidate(self) -> int:
        """Repair and free all tombstoned nodes now (normally done in batches as deletes
        accumulate). Returns the number of nodes freed."""
        with self._write_lock:
            freed = self._consolidate()
            if self._engine.gpu is not None:
                self._engine.gpu.sync()
            return freed

    # ------------------------------------------------------------------ reads
    def prepare_queries(self, queries: object) -> np.ndarray:
        """Check and convert query vectors as ``search`` does (float32[b, dim]; unit
        rows for cosine). Raises ValueError saying what is wrong."""
        return validation.as_queries(queries, self.config.dim, self.config.metric)

    def search(
        self,
        queries: object,
        k: int = 10,
        ef: int | None = None,
        level_ef: Sequence[int] | None = None,
        *,
        scorer: Scorer | None = None,
        execution: str = "auto",
        deadline: float | None = None,
        categories: object | None = None,
    ) -> SearchResult:
        """k best items of each query, best first.

        queries: float32[b, dim] (or one vector); with a ``scorer``, whatever its
        ``prepare`` takes (e.g. query features). ef: beam width on level 0 (default
        max(ef_search, k); must be >= k). level_ef[i]: beam width on level i + 1
        (default 1, greedy; NANN's level_topn). If fewer than k items are live, rows are
        padded with id -1 and score -inf.

        scorer: score candidates with this instead of the index metric (the graph is
        still the one built on the embeddings, as in NANN). execution: "per_query"
        (compiled per-query kernels, built-in metric only), "lockstep" (all queries
        advance together, one scorer call per step), "auto" (per_query for the built-in
        metric, lockstep with a scorer). With the GPU backend (``device``), "auto" runs
        the built-in metric on the GPU and "per_query" on the CPU kernels.

        deadline: a ``time.monotonic()`` instant; the CPU paths check it between chunks of
        queries and lock-step steps and raise ``SearchDeadlineExceeded`` (a TimeoutError)
        once it passed. (A GPU launch is not interrupted.)

        categories: category ids (at most ``MAX_SEARCH_CATEGORIES``): the best items of
        each category, each its own quota: k, or k=[k1, ...] one per category. Then
        ``ids`` / ``scores`` are [n_queries, n_categories, max k], -1 / -inf padded
        (a category without members gives an empty list), and every id listed under a
        category is a member of it. The categories' subgraphs are searched in one pass
        per query, a row scored once per query; a category with at most
        ``max(ef, category_exact_limit)`` live members is searched exhaustively (exact).
        """
        cfg = self.config
        if execution not in ("auto", "per_query", "lockstep"):
            raise ValueError(f"search: execution must be auto, per_query or lockstep, got {execution!r}")
        if scorer is not None:
            if execution == "per_query":
                raise ValueError("search: a custom scorer needs execution='lockstep' (or 'auto')")
            if not isinstance(scorer, Scorer):
                raise ValueError("search: scorer must have prepare(queries) and score(state, query_index, rows)")
        if categories is not None:
            return self._search_categories(queries, k, ef, level_ef, categories, scorer, execution, deadline)
        k, ef, widths, beam = validation.check_search_args(k, ef, level_ef, cfg.ef_search, cfg.max_level)
        if scorer is not None:
            return search_lockstep(self._engine, scorer, queries, validation.batch_size(queries), k, ef, widths,
                                   deadline=deadline)
        q = validation.as_queries(queries, cfg.dim, cfg.metric)
        if execution == "lockstep":
            return search_lockstep(self._engine, self._metric_scorer, q, len(q), k, ef, widths, deadline=deadline)
        if execution == "auto" and self._engine.gpu is not None:
            return self._engine.gpu.search(q, k, ef, widths, beam)
        return search_batch(self._engine, q, k, ef, widths, beam, deadline=deadline)

    def _search_categories(self, queries: object, k: object, ef: int | None, level_ef: Sequence[int] | None,
                           categories: object, scorer: Scorer | None, execution: str,
                           deadline: float | None) -> SearchResult:
        cfg = self.config
        category_ids, quotas = validation.as_search_categories(categories, k)
        _, ef, widths, _ = validation.check_search_args(int(quotas.max()), ef, level_ef, cfg.ef_search, cfg.max_level)
        cat = self._categories
        graphs = self._taxonomy.graph_of(category_ids)
        live = np.where(graphs >= 0, cat.graph_live[np.maximum(graphs, 0)] if len(cat.graph_live) else 0, 0)
        efs = np.maximum(ef, quotas).astype(np.int64)
        small = live <= max(ef, cfg.category_exact_limit)
        efs[small] = np.maximum(efs[small], live[small])  # exhaustive: every live member is reached
        efs = efs.astype(np.int32)
        if scorer is not None:
            return search_categories_lockstep(cat, scorer, queries, validation.batch_size(queries), graphs, quotas,
                                              efs, widths, deadline)
        q = validation.as_queries(queries, cfg.dim, cfg.metric)
        if execution == "lockstep":
            return search_categories_lockstep(cat, self._metric_scorer, q, len(q), graphs, quotas, efs, widths,
                                              deadline)
        return search_categories(cat, q, graphs, quotas, efs, widths, deadline)

    def get(self, ids: object) -> GetResult:
        """Stored embedding and version of each id (found=False for unknown ids), as of
        the last write batch that completed: a write in progress is not waited for."""
        ids = validation.as_ids(ids, "get")
        for attempt in range(OPTIMISTIC_GETS):
            seq = self._publish_seq
            if seq % 2 == 0:
                try:
                    result = self._read_items(ids)
                except IndexError:  # the tables changed under the read (it is discarded)
                    result = None
                if result is not None and self._publish_seq == seq:
                    return result
            time.sleep(0 if attempt < 8 else 1e-4)  # a publishing step takes ~a millisecond
        with self._write_lock:
            return self._read_items(ids)

    def _read_items(self, ids: np.ndarray) -> GetResult:
        found, vectors, versions = self._engine.store.items.read(ids)
        return GetResult(found=found, vectors=vectors, versions=versions)

    @property
    def graph(self) -> GraphTables:
        """The graph's arrays as last published, as read-only views (for inspection:
        degrees, links, node states; see ``GraphTables`` for shapes). Rows written later
        show through them; tables grown later are not in them (read the property again)."""
        return GraphTables(*(_read_only(a) for a in self._engine.store.tables))

    @property
    def writes_applied(self) -> int:
        """Inserts, refreshes and deletes applied so far (cheap: no lock, no stats)."""
        c = self._engine.counters
        return c.inserted + c.refreshed + c.deleted

    def __len__(self) -> int:
        return self._engine.store.items.count

    def __contains__(self, item_id: object) -> bool:
        return bool(self.get([item_id]).found[0])

    def stats(self) -> dict[str, Any]:
        engine = self._engine
        store = engine.store
        with self._write_lock:
            t = store.tables
            entry = int(t.entry_node[0])
            pools = {
                "node": store.node_slots, "upper_row": store.upper_slots, "item": store.items.slots,
            }
            out: dict[str, Any] = {
                "items": len(self),
                "nodes_live": engine.live_nodes,
                "nodes_tombstoned": engine.tombstones,
                "entry_level": int(t.node_level[entry]) if entry >= 0 else -1,
                "dim": self.config.dim,
                "metric": self.config.metric,
                "M": self.config.M,
                "ef_construction": self.config.ef_construction,
            }
            capacities = {
                "node": t.node_state.shape[0], "upper_row": t.upper_next.shape[0], "item": t.item_ids.shape[0],
            }
            for name, pool in pools.items():
                out[f"{name}_slots_in_use"] = pool.in_use
                out[f"{name}_slots_free"] = pool.free_count
                out[f"{name}_slots_waiting"] = pool.limbo_count
                out[f"{name}_capacity"] = capacities[name]
            out["deleted_versions_kept"] = store.items.graveyard.count
            out["memory_bytes"] = store.nbytes() + engine.workers.scratch.nbytes()
            out.update(
                inserted=engine.counters.inserted,
                refreshed=engine.counters.refreshed,
                deleted=engine.counters.deleted,
                skipped_stale=engine.counters.skipped_stale,
                consolidations=engine.counters.consolidations,
                repaired_rows=engine.counters.repaired_rows,
                orphans_adopted=engine.counters.adopted,
                nodes_relinked=engine.counters.relinked,
                nodes_reduced_ef=engine.counters.reduced_ef_linked,
                active_searches=engine.epochs.active_readers,
                device=self.device,
            )
            cat = self._categories
            out.update(
                categories=self._taxonomy.count,
                category_nodes_live=cat.live_nodes,
                category_nodes_tombstoned=cat.tombstones,
                category_node_slots_in_use=cat.store.node_slots.in_use,
                category_node_capacity=cat.store.node_capacity,
                category_memory_bytes=cat.store.nbytes() + cat.workers.scratch.nbytes(),
                # the rows in use (below the high-water marks) of the global and category tables
                memory_used_bytes=store.used_nbytes() + cat.store.used_nbytes(),
                category_memory_used_bytes=cat.store.used_nbytes(),
            )
            out["memory_bytes"] += out["category_memory_bytes"]
            if engine.gpu is not None:
                out.update(engine.gpu.stats())
        return out

    def close(self) -> None:
        self._engine.workers.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
