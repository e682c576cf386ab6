"""Typed configuration of an index (one dataclass, validated once)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from functools import cached_property

METRICS = ("ip", "cosine", "l2")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class IndexConfig:
    """Parameters of one index.

    dim: embedding dimension. metric: "ip" | "cosine" | "l2" (scores are inner product,
    cosine similarity, or negative squared L2 distance; higher is better).
    M: HNSW out-degree on upper levels; level 0 holds up to 2*M.
    ef_construction: beam width when inserting. ef_search: default search beam width.
    prune_alpha: neighbor pruning factor (1.0 = HNSW heuristic; DiskANN uses 1.2: keeps
      more long edges, a denser and more navigable graph).
    fill_pruned: fill a new node's row back to M with the best pruned candidates.
    traversal_precision: "float16" (default): searches walk the graph on a float16 copy
      of the rows (half the memory traffic of float32: search is bound by it, so batch
      QPS rises: README, Performance) and rescore the final candidates in float32, so returned scores
      stay exact; costs +50% vector memory, and values must fit float16 (|x| <= 65504).
      "float32": no copy (less memory, any float32 values).
    repair_alpha: RobustPrune factor for rows repaired after deletes (FreshDiskANN 1.2).
    repair_widen: a repaired row also considers the rows of its this-many closest live
      candidates (0 = FreshDiskANN's N(p) ∪ N(v) only); 2 keeps recall after heavy
      churn at a fresh build's.
    threads: worker threads for batch search/insert/repair (0 = all cores).
    seed: random seed for node levels (same inputs + seed = same graph).
    insert_batch_fraction / max_insert_batch: size of parallel insert sub-batches as a
      fraction of the live graph (prefix doubling) and its cap.
    repair_fraction: consolidate deletes once tombstones exceed this fraction of live
      nodes (at least repair_min_tombstones).
    initial_capacity: rows/nodes allocated up front; tables grow by half when full.
    deleted_versions_kept: how many deleted ids remember their delete version, so a
      replayed older upsert cannot bring them back (oldest forgotten first).
    category_M: degree of the category subgraphs (their level 0 holds up to
      2*category_M); smaller than M: a category holds fewer items than the whole
      catalog, and every node costs its row of links (README, Categories).
    category_ef_construction: beam width when inserting into a category subgraph (an
      item has a node in each of its categories and their ancestors: this beam is the
      main cost of a write with categories).
    category_exact_limit: a category with at most this many live items (or at most the
      beam width) is searched exhaustively: its results are exact.
    device: search backend: "auto" (the GPU when CuPy finds one, else the CPU; the
      choice is logged), "cpu", or "cuda" (raises if there is no usable GPU). A runtime
      choice, not part of the index: snapshots do not store it. See rtindex/core/gpu.
    """

    dim: int
    metric: str = "ip"
    M: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    prune_alpha: float = 1.0
    fill_pruned: bool = True
    traversal_precision: str = "float16"
    repair_alpha: float = 1.2
    repair_widen: int = 2
    threads: int = 0
    seed: int = 0
    insert_batch_fraction: float = 0.02
    max_insert_batch: int = 4096
    repair_fraction: float = 0.02
    repair_min_tombstones: int = 1
    initial_capacity: int = 1024
    deleted_versions_kept: int = 1_000_000
    category_M: int = 12
    category_ef_construction: int = 100
    category_exact_limit: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.dim, int) or self.dim < 1:
            problems.append(f"dim must be a positive integer, got {self.dim!r}")
        if self.metric not in METRICS:
            problems.append(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not isinstance(self.M, int) or not 2 <= self.M <= 256:
            problems.append(f"M must be an integer in [2, 256], got {self.M!r}")
        if not isinstance(self.ef_construction, int) or self.ef_construction < 1:
            problems.append(f"ef_construction must be a positive integer, got {self.ef_construction!r}")
        if not isinstance(self.ef_search, int) or self.ef_search < 1:
            problems.append(f"ef_search must be a positive integer, got {self.ef_search!r}")
        if self.traversal_precision not in ("float32", "float16"):
            problems.append(f"traversal_precision must be float32 or float16, got {self.traversal_precision!r}")
        for name in ("prune_alpha", "repair_alpha"):
            value = getattr(self, name)
            if not 1.0 <= value <= 4.0:
                problems.append(f"{name} must be in [1, 4], got {value!r}")
        if not isinstance(self.repair_widen, int) or not 0 <= self.repair_widen <= 32:
            problems.append(f"repair_widen must be an integer in [0, 32], got {self.repair_widen!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            problems.append(f"threads must be >= 0 (0 = all cores), got {self.threads!r}")
        if not 0.0 < self.insert_batch_fraction <= 1.0:
            problems.append(f"insert_batch_fraction must be in (0, 1], got {self.insert_batch_fraction!r}")
        if self.max_insert_batch < 1:
            problems.append(f"max_insert_batch must be >= 1, got {self.max_insert_batch!r}")
        if not 0.0 <= self.repair_fraction <= 1.0:
            problems.append(f"repair_fraction must be in [0, 1], got {self.repair_fraction!r}")
        if not isinstance(self.category_M, int) or not 2 <= self.category_M <= 256:
            problems.append(f"category_M must be an integer in [2, 256], got {self.category_M!r}")
        if not isinstance(self.category_ef_construction, int) or self.category_ef_construction < 1:
            problems.append(f"category_ef_construction must be a positive integer, got {self.category_ef_construction!r}")
        if not isinstance(self.category_exact_limit, int) or not 0 <= self.category_exact_limit <= 65536:
            problems.append(f"category_exact_limit must be an integer in [0, 65536], got {self.category_exact_limit!r}")
        if self.initial_capacity < 1:
            problems.append(f"initial_capacity must be >= 1, got {self.initial_capacity!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if problems:
            raise ValueError("invalid index configuration: " + "; ".join(problems))

    @property
    def max_degree0(self) -> int:
        return 2 * self.M

    @property
    def level_multiplier(self) -> float:
        return 1.0 / math.log(self.M)

    @cached_property
    def max_level(self) -> int:
        """Levels are capped where reaching them takes ~1e12 nodes."""
        return max(4, min(32, math.ceil(math.log(1e12) / math.log(self.M))))

    @property
    def worker_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
