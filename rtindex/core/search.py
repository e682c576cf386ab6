"""Search path for the built-in metrics: per-query HNSW search in compiled kernels,
the queries of a batch spread over the worker threads."""

from __future__ import annotations

import numpy as np

from rtindex.core.deadlines import check_deadline
from rtindex.core.engine import Engine
from rtindex.core.results import SearchResult
from rtindex.kernels.layout import Scratch


def search_batch(
    engine: Engine, queries: np.ndarray, k: int, ef: int, level_widths: np.ndarray, beam: int, graph: int = 0,
    deadline: float | None = None,
) -> SearchResult:
    """queries: float32[b, dim], already validated (unit-norm for cosine). beam: the
    widest beam of ef and level_widths (scratch buffers are sized to it)."""
    b = queries.shape[0]
    ids = np.empty((b, k), np.int64)
    scores = np.empty((b, k), np.float32)
    stats = np.zeros((b, 2), np.int64)
    mode = engine.search_mode
    kernel = engine.search_kernel
    with engine.epochs.reading():
        t = engine.store.tables

        def chunk(lo: int, hi: int, scratch: Scratch) -> None:
            check_deadline(deadline)  # before each chunk: the batch is split in several per worker
            kernel(
                t, queries, mode, graph, k, ef, level_widths,
                scratch, lo, hi, ids, scores, stats,
            )

        engine.workers.run(b, chunk, t.node_state.shape[0], beam, results=k, min_chunk=16)
    return SearchResult(ids=ids, scores=scores, hops=stats[:, 0], evaluations=stats[:, 1])


def search_categories(
    engine: Engine, queries: np.ndarray, graphs: np.ndarray, ks: np.ndarray, efs: np.ndarray,
    level_widths: np.ndarray, deadline: float | None = None,
) -> SearchResult:
    """Per-query search of several categories (``engine``: the category engine):
    ids / scores [b, len(graphs), max(ks)], -1 / -inf padded. graphs int32: subgraph of
    each category (-1: none); ks, efs int32: quota and beam width of each."""
    b = queries.shape[0]
    n_cat = len(graphs)
    width = int(ks.max()) if n_cat else 0
    ids = np.full((b, n_cat, width), -1, np.int64)
    scores = np.full((b, n_cat, width), -np.inf, np.float32)
    stats = np.zeros((b, 2), np.int64)
    beam = max(int(efs.max(initial=1)), int(level_widths.max(initial=1)))
    with engine.epochs.reading():
        t = engine.store.tables
        kernel = engine.category_kernel
        mode = engine.search_mode

        def chunk(lo: int, hi: int, scratch: Scratch) -> None:
            check_deadline(deadline)
            kernel(t, queries, mode, graphs, ks, efs, level_widths, scratch, lo, hi, ids, scores, stats)

        engine.workers.run(b, chunk, t.node_state.shape[0], beam, results=width, min_chunk=4)
    return SearchResult(ids=ids, scores=scores, hops=stats[:, 0], evaluations=stats[:, 1])
