"""Scorers: what the lock-step search calls to score candidates (DESIGN.md §6).

A scorer turns the queries of a batch into a state once (``prepare``), then scores
candidate embedding rows against the queries they belong to (``score``), for all the
queries of a batch in one call. Built-in metrics implement it (``MetricScorer``); a
neural scorer (TensorFlow SavedModel) implements the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numba import njit

from rtindex.core import validation
from rtindex.kernels.layout import METRIC_L2, metric_code


@runtime_checkable
class Scorer(Protocol):
    """prepare(queries) -> state, once per search batch.
    score(state, query_index int32[n], rows float32[n, dim]) -> float32[n]: similarity of
    rows[i] to query query_index[i]; higher is better."""

    def prepare(self, queries: Any) -> Any: ...

    def score(self, state: Any, query_index: np.ndarray, rows: np.ndarray) -> np.ndarray: ...


@njit(nogil=True, cache=True, fastmath=True)
def _score_pairs(queries, query_index, rows, metric, out):
    dim = rows.shape[1]
    for i in range(rows.shape[0]):
        q = query_index[i]
        acc = np.float32(0.0)
        if metric == METRIC_L2:
            for j in range(dim):
                d = queries[q, j] - rows[i, j]
                acc -= d * d
        else:
            for j in range(dim):
                acc += queries[q, j] * rows[i, j]
        out[i] = acc


class MetricScorer:
    """inner product, cosine (queries normalised here; stored rows are unit-norm) or
    negative squared L2."""

    def __init__(self, metric: str, dim: int) -> None:
        self.metric = metric
        self.dim = dim
        self._code = metric_code(metric)

    def prepare(self, queries: Any) -> np.ndarray:
        return validation.as_queries(queries, self.dim, self.metric)

    def score(self, state: np.ndarray, query_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), np.float32)
        _score_pairs(state, query_index, rows, self._code, out)
        return out
