"""The state one index's write and search paths share: tables, workers, epochs and the
metric's coefficients. Owned by ``rtindex.Index``; the path modules take it as input."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtindex.config import IndexConfig
from rtindex.epochs import ReaderEpochs
from rtindex.kernels.layout import BuildParams, metric_code
from rtindex.runtime import ScratchPool, Workers
from rtindex.storage import GraphStore


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


@dataclass
class Engine:
    config: IndexConfig
    store: GraphStore
    workers: Workers
    epochs: ReaderEpochs
    params: BuildParams
    greedy_widths: np.ndarray  # int32[max_level + 1] of zeros: width 1 on every upper level
    live_nodes: int = 0
    tombstones: int = 0
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def create(cls, config: IndexConfig) -> Engine:
        scratch = ScratchPool(config.max_degree0)
        return cls(
            config=config,
            store=GraphStore(config.dim, config.M, config.initial_capacity),
            workers=Workers(config.worker_threads, scratch),
            epochs=ReaderEpochs(),
            params=BuildParams(
                metric=metric_code(config.metric),
                M=config.M,
                max_degree0=config.max_degree0,
                ef_construction=config.ef_construction,
                prune_alpha=float(config.prune_alpha),
                fill=bool(config.fill_pruned),
                rows_are_nodes=True,
                repair_alpha=float(config.repair_alpha),
                repair_widen=int(config.repair_widen),
            ),
            greedy_widths=np.zeros(config.max_level + 1, np.int32),
        )
