"""Search path for the built-in metrics: per-query HNSW search in compiled kernels,
the queries of a batch spread over the worker threads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtindex.engine import Engine
from rtindex.kernels.beam_search import search_queries
from rtindex.kernels.layout import Scratch


@dataclass(frozen=True)
class SearchResult:
    """ids int64[b, k] (-1 padded) and scores float32[b, k] (-inf padded), best first;
    per query: hops (nodes expanded) and evaluations (rows scored), int64[b]."""

    ids: np.ndarray
    scores: np.ndarray
    hops: np.ndarray
    evaluations: np.ndarray


def search_batch(
    engine: Engine, queries: np.ndarray, k: int, ef: int, level_widths: np.ndarray, graph: int = 0
) -> SearchResult:
    """queries: float32[b, dim], already validated (unit-norm for cosine)."""
    b = queries.shape[0]
    ids = np.empty((b, k), np.int64)
    scores = np.empty((b, k), np.float32)
    stats = np.zeros((b, 2), np.int64)
    metric = engine.params.metric
    direct_rows = engine.params.rows_are_nodes
    with engine.epochs.reading():
        t = engine.store.tables

        def chunk(lo: int, hi: int, scratch: Scratch) -> None:
            search_queries(
                t, queries, metric, direct_rows, graph, k, ef, level_widths,
                scratch, lo, hi, ids, scores, stats,
            )

        beam = max(ef, int(level_widths.max()))
        engine.workers.run(b, chunk, t.node_state.shape[0], beam, results=k, min_chunk=16)
    return SearchResult(ids=ids, scores=scores, hops=stats[:, 0], evaluations=stats[:, 1])
