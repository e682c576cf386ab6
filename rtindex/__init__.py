"""rtindex: a real-time incremental vector index (mutable HNSW, CPU kernels in numba)."""

from rtindex.config import IndexConfig
from rtindex.index import DeleteResult, GetResult, Index, UpsertResult
from rtindex.scorers import MetricScorer, Scorer
from rtindex.search import SearchResult

__all__ = [
    "DeleteResult", "GetResult", "Index", "IndexConfig", "MetricScorer", "Scorer", "SearchResult", "UpsertResult",
]
__version__ = "0.1.0"
