"""Neighbor selection: HNSW's heuristic (hnswlib getNeighborsByHeuristic2), generalised
to DiskANN's RobustPrune with a pruning factor ``prune_alpha`` >= 1, optionally filling
the row back up with the pruned candidates (hnswlib's keepPrunedConnections). Used by
insert, reverse-link pruning, delete repair and refresh."""

import numpy as np
from numba import njit

from .layout import METRIC_L2
from .scoring import similarity_of_halves, similarity_of_rows


@njit(nogil=True, cache=True, fastmath=True)
def select_neighbors(tables, pool_node, pool_score, n_pool, max_degree, metric, prune_alpha, fill_to, selected, half):
    """Pick up to ``max_degree`` diverse neighbors from a candidate pool.

    pool_node/pool_score: candidates and their similarity to the base node, sorted best
    first. With distances d = offset - similarity, candidate c is occluded at factor a
    when some kept neighbor s has a * d(c, s) <= d(c, base). Passes at a = 1, 1.2,
    1.44, ... up to ``prune_alpha`` keep the candidates not occluded at that factor
    (a = 1 alone is hnswlib's heuristic; the schedule is DiskANN's occlude_list).
    Then, up to ``fill_to`` entries, the closest remaining candidates fill the row.
    ``half``: the pairwise checks read the float16 copy of the rows.
    Writes ``selected``; returns the count.
    """
    node_vec = tables.node_vec
    vectors = tables.vectors
    halves = tables.vectors16
    offset = np.float32(0.0) if metric == METRIC_L2 else np.float32(1.0)
    n_sel = 0
    alpha = np.float32(1.0)
    limit = np.float32(prune_alpha) * np.float32(1.0001)
    while alpha <= limit and n_sel < max_degree:
        for i in range(n_pool):
            if n_sel == max_degree:
                break
            cand = pool_node[i]
            if cand < 0:
                continue  # taken in an earlier pass
            cand_row = node_vec[cand]
            to_base = offset - pool_score[i]
            keep = True
            for j in range(n_sel):
                if half:
                    between = offset - similarity_of_halves(halves, cand_row, node_vec[selected[j]], metric)
                else:
                    between = offset - similarity_of_rows(vectors, cand_row, node_vec[selected[j]], metric)
                if alpha * between <= to_base:
                    keep = False
                    break
            if keep:
                selected[n_sel] = cand
                n_sel += 1
                pool_node[i] = -1 - cand  # mark taken (restored below)
        alpha *= np.float32(1.2)
    if fill_to > max_degree:
        fill_to = max_degree
    for i in range(n_pool):
        if pool_node[i] < 0:
            pool_node[i] = -1 - pool_node[i]
        elif n_sel < fill_to:
            selected[n_sel] = pool_node[i]
            n_sel += 1
    return n_sel


@njit(nogil=True, cache=True)
def sort_pool_descending(pool_node, pool_score, n):
    """Sort the first n pool entries by similarity, best first. Small pools (the common
    case) use an allocation-free insertion sort."""
    if n > 64:
        order = np.argsort(-pool_score[:n], kind="mergesort")
        nodes = pool_node[:n][order]
        scores = pool_score[:n][order]
        pool_node[:n] = nodes
        pool_score[:n] = scores
        return
    for i in range(1, n):
        s = pool_score[i]
        v = pool_node[i]
        j = i - 1
        while j >= 0 and pool_score[j] < s:
            pool_score[j + 1] = pool_score[j]
            pool_node[j + 1] = pool_node[j]
            j -= 1
        pool_score[j + 1] = s
        pool_node[j + 1] = v
