"""Neighbor selection: HNSW's heuristic (hnswlib getNeighborsByHeuristic2), generalised
to DiskANN's RobustPrune with a pruning factor ``prune_alpha`` >= 1, optionally filling
the row back up with the pruned candidates (hnswlib's keepPrunedConnections). Used by
insert, reverse-link pruning, delete repair and refresh."""

import numpy as np
from numba import njit

from .layout import METRIC_L2
from .scoring import similarity_of_rows


@njit(nogil=True, cache=True, fastmath=True)
def select_neighbors(tables, pool_node, pool_score, n_pool, max_degree, metric, prune_alpha, fill_to, selected):
    """Pick up to ``max_degree`` diverse neighbors from a candidate pool.

    pool_node/pool_score: candidates and their similarity to the base node, sorted best
    first. With distances d = offset - similarity, a candidate c is pruned when some
    kept neighbor s has prune_alpha * d(c, s) <= d(c, base) (alpha = 1: plain HNSW
    heuristic; larger keeps more long edges). Then, up to ``fill_to`` entries, the best
    pruned candidates fill the remaining places (0 = no filling). Writes ``selected``;
    returns the count.
    """
    vectors = tables.vectors
    node_vec = tables.node_vec
    offset = np.float32(0.0) if metric == METRIC_L2 else np.float32(1.0)
    alpha = np.float32(prune_alpha)
    n_sel = 0
    for i in range(n_pool):
        if n_sel == max_degree:
            break
        cand_row = node_vec[pool_node[i]]
        to_base = offset - pool_score[i]
        keep = True
        for j in range(n_sel):
            between = offset - similarity_of_rows(vectors, cand_row, node_vec[selected[j]], metric)
            if alpha * between <= to_base:
                keep = False
                break
        if keep:
            selected[n_sel] = pool_node[i]
            n_sel += 1
    if fill_to > max_degree:
        fill_to = max_degree
    if n_sel < fill_to:
        kept = n_sel
        for i in range(n_pool):
            if n_sel == fill_to:
                break
            cand = pool_node[i]
            taken = False
            for j in range(kept):
                if selected[j] == cand:
                    taken = True
                    break
            if not taken:
                selected[n_sel] = cand
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
