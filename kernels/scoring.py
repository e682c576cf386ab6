"""Similarity for the built-in metrics (higher is better): the inner product (ip, and
cosine on unit-norm rows) or the negative squared L2 distance (l2).

Rows are read as vectors[row, i] (no row views: see graph.py)."""

import numpy as np
from numba import njit

from .half import half_to_float
from .layout import METRIC_L2


@njit(nogil=True, cache=True, fastmath=True)
def similarity_to_row(query, vectors, row, metric):
    """Similarity of a query vector (1-D) to vectors[row]."""
    acc = np.float32(0.0)
    if metric == METRIC_L2:
        for i in range(query.shape[0]):
            d = query[i] - vectors[row, i]
            acc += d * d
        return -acc
    for i in range(query.shape[0]):
        acc += query[i] * vectors[row, i]
    return acc


@njit(nogil=True, cache=True, fastmath=True)
def similarity_of_rows(vectors, row_a, row_b, metric):
    acc = np.float32(0.0)
    if metric == METRIC_L2:
        for i in range(vectors.shape[1]):
            d = vectors[row_a, i] - vectors[row_b, i]
            acc += d * d
        return -acc
    for i in range(vectors.shape[1]):
        acc += vectors[row_a, i] * vectors[row_b, i]
    return acc


@njit(nogil=True, cache=True, fastmath=True)
def similarity_of_halves(halves, row_a, row_b, metric):
    """similarity_of_rows on the float16 copy (rows as IEEE half bits)."""
    acc = np.float32(0.0)
    if metric == METRIC_L2:
        for i in range(halves.shape[1]):
            d = half_to_float(halves[row_a, i]) - half_to_float(halves[row_b, i])
            acc += d * d
        return -acc
    for i in range(halves.shape[1]):
        acc += half_to_float(halves[row_a, i]) * half_to_float(halves[row_b, i])
    return acc


@njit(nogil=True, cache=True, fastmath=True)
def score_pool(tables, base_row, pool_node, pool_score, lo, hi, metric, half):
    """pool_score[i] = similarity of stored row ``base_row`` to pool_node[i]'s row, for
    lo <= i < hi; on the float16 copy when ``half``. One call per pool: a call per row
    to a helper taking ``tables`` and ``half`` was measured several times slower than the
    product itself (reverse-link pruning 16 -> 88 us per insert)."""
    node_vec = tables.node_vec
    if half:
        halves = tables.vectors16
        for i in range(lo, hi):
            pool_score[i] = similarity_of_halves(halves, base_row, node_vec[pool_node[i]], metric)
    else:
        vectors = tables.vectors
        for i in range(lo, hi):
            pool_score[i] = similarity_of_rows(vectors, base_row, node_vec[pool_node[i]], metric)
