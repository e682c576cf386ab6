"""Similarity for the built-in metrics (higher is better): the inner product (ip, and
cosine on unit-norm rows) or the negative squared L2 distance (l2).

Rows are read as vectors[row, i] (no row views: see graph.py)."""

import numpy as np
from numba import njit

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
def similarity_of_nodes(tables, node_a, node_b, metric):
    return similarity_of_rows(tables.vectors, tables.node_vec[node_a], tables.node_vec[node_b], metric)
