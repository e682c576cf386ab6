"""rtindex: a real-time incremental vector index (mutable HNSW, CPU kernels in numba).

Layers (imports point one way: service -> consumers/snapshots -> core -> kernels):
  rtindex.core       the index: tables, insert / repair / search paths, scorers, writer
  rtindex.kernels    compiled hot loops (numba; CUDA C for the GPU mirror)
  rtindex.consumers  Kafka ingestion, message codec, producer
  rtindex.snapshots  RocksDB snapshots and restore
  rtindex.service    gRPC server, settings, CLI, demo
  rtindex.api        gRPC client, wire tensors, generated code (v1)

The names below load lazily, so ``import rtindex.client`` (gRPC only) does not load the
engine, numba or the kernels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtindex.core.config import IndexConfig
    from rtindex.core.index import Index
    from rtindex.core.results import DeleteResult, GetResult, SearchResult, UpsertResult
    from rtindex.core.scorers import MetricScorer, Scorer

_EXPORTS = {
    "DeleteResult": "rtindex.core.results", "GetResult": "rtindex.core.results",
    "SearchResult": "rtindex.core.results", "UpsertResult": "rtindex.core.results",
    "Index": "rtindex.core.index", "IndexConfig": "rtindex.core.config",
    "MetricScorer": "rtindex.core.scorers", "Scorer": "rtindex.core.scorers",
}
__all__ = [
    "DeleteResult", "GetResult", "Index", "IndexConfig", "MetricScorer", "Scorer", "SearchResult", "UpsertResult",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rtindex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
