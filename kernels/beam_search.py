"""HNSW beam search on one layer, and the per-query search over all layers.

This is the search path for the built-in metrics on the CPU: one query per call of
``search_one``, many queries per ``search_queries`` call (a worker thread's share of a
batch). The lock-step batch shape used by scorers lives in ``lockstep.py``.

``mode`` (layout.SearchMode) says how rows are read: the metric, whether a node's
vector row is its own id, and whether to traverse on the float16 copy (final results
are then rescored in float32, so returned scores are exact).
"""

import numpy as np
from numba import njit

from .graph import adjacency, degree_of, next_stamp, row_of
from .half import half_to_float
from .heaps import heap_drain_descending, heap_pop, heap_push, heap_push_bounded, heap_replace_top
from .layout import LIVE, METRIC_L2
from .prefetch import prefetch_whole_row
from .scoring import similarity_to_row
from .select import sort_pool_descending


@njit(nogil=True, cache=True)
def _compact_candidates(cand_key, cand_val, size, worst_kept):
    """Drop candidates that can never be expanded (similarity below the result bound)."""
    kept = 0
    for i in range(size):
        if -cand_key[i] >= worst_kept:
            cand_key[kept] = cand_key[i]
            cand_val[kept] = cand_val[i]
            kept += 1
    rebuilt = 0
    for i in range(kept):
        rebuilt = heap_push(cand_key, cand_val, rebuilt, cand_key[i], cand_val[i])
    return rebuilt


@njit(nogil=True, cache=True, fastmath=True)
def traversal_score(tables, query, mode, node):
    """Similarity used while walking the graph (float16 copy in half mode)."""
    row = node if mode.direct_rows else tables.node_vec[node]
    if row < 0 or row >= tables.vectors.shape[0]:  # written after these tables were read
        return np.float32(-np.inf)
    if not mode.half:
        return similarity_to_row(query, tables.vectors, row, mode.metric)
    halves = tables.vectors16
    acc = np.float32(0.0)
    if mode.metric == METRIC_L2:
        for i in range(query.shape[0]):
            d = query[i] - half_to_float(halves[row, i])
            acc -= d * d
    else:
        for i in range(query.shape[0]):
            acc += query[i] * half_to_float(halves[row, i])
    return acc


@njit(nogil=True, cache=True, fastmath=True)
def beam_search_layer(tables, query, mode, level, ef, live_only, entry_nodes, entry_scores, n_entries, scratch, counters):
    """Best-first search of width ``ef`` on one layer (hnswlib's searchBaseLayer).

    Entries are already scored. Tombstoned nodes are traversed but, with ``live_only``,
    never enter the results. Results are left in scratch.res_key/res_val as a min-heap
    on similarity; returns their count. counters[0] += expansions, counters[1] += scored.
    """
    stamp = next_stamp(scratch)
    visited = scratch.visited
    cand_key = scratch.cand_key
    cand_val = scratch.cand_val
    res_key = scratch.res_key
    res_val = scratch.res_val
    block = scratch.block
    cand_capacity = cand_key.shape[0]
    node_state = tables.node_state
    node_vec = tables.node_vec
    vectors = tables.vectors
    halves = tables.vectors16
    links = adjacency(tables, level)
    # links may name nodes past these tables' rows (added after a growth this search
    # does not see): they are skipped
    n_nodes = min(visited.shape[0], node_state.shape[0])
    # likewise rows: a category node may read a row of global tables grown since
    n_rows = vectors.shape[0]
    dim = query.shape[0]
    metric = mode.metric
    direct_rows = mode.direct_rows
    half = mode.half
    n_cand = 0
    n_res = 0
    for i in range(n_entries):
        node = entry_nodes[i]
        visited[node] = stamp
        n_cand = heap_push(cand_key, cand_val, n_cand, -entry_scores[i], node)
        if not live_only or node_state[node] == LIVE:
            n_res = heap_push_bounded(res_key, res_val, n_res, ef, entry_scores[i], node)
    hops = 0
    scored = 0
    while n_cand > 0:
        if n_res == ef and -cand_key[0] < res_key[0]:
            break
        node = cand_val[0]
        n_cand = heap_pop(cand_key, cand_val, n_cand)
        hops += 1
        row = row_of(tables, node, level)
        if row < 0:
            continue
        degree = degree_of(links, row)
        # Collect unvisited neighbors first and prefetch their rows, then score them:
        # the row loads overlap instead of stalling one after another.
        n_block = 0
        for j in range(1, degree + 1):
            nb = links[row, j]
            if nb < 0 or nb >= n_nodes:
                continue
            if visited[nb] != stamp:
                visited[nb] = stamp
                vrow = nb if direct_rows else node_vec[nb]
                if vrow < 0 or vrow >= n_rows:
                    continue
                block[n_block] = nb
                n_block += 1
                if half:
                    prefetch_whole_row(halves, vrow)
                else:
                    prefetch_whole_row(vectors, vrow)
        for j in range(n_block):
            nb = block[j]
            # the similarity is written out here rather than called: a call per row
            # costs more than the 128-float dot product itself
            vrow = nb if direct_rows else node_vec[nb]
            score = np.float32(0.0)
            if half:
                if metric == METRIC_L2:
                    for i in range(dim):
                        d = query[i] - half_to_float(halves[vrow, i])
                        score -= d * d
                else:
                    for i in range(dim):
                        score += query[i] * half_to_float(halves[vrow, i])
            elif metric == METRIC_L2:
                for i in range(dim):
                    d = query[i] - vectors[vrow, i]
                    score -= d * d
            else:
                for i in range(dim):
                    score += query[i] * vectors[vrow, i]
            scored += 1
            if n_res < ef or score > res_key[0]:
                if n_cand == cand_capacity:
                    n_cand = _compact_candidates(cand_key, cand_val, n_cand, res_key[0])
                    if n_cand == cand_capacity:  # all still useful: drop the last leaf
                        n_cand -= 1
                n_cand = heap_push(cand_key, cand_val, n_cand, -score, nb)
                if level == 0:  # likely expanded soon: start loading its row
                    prefetch_whole_row(links, nb)
                if not live_only or node_state[nb] == LIVE:
                    if n_res < ef:
                        n_res = heap_push(res_key, res_val, n_res, score, nb)
                    else:
                        heap_replace_top(res_key, res_val, n_res, score, nb)
    counters[0] += hops
    counters[1] += scored
    return n_res


@njit(nogil=True, cache=True, fastmath=True)
def descend_to_level(tables, query, mode, graph, stop_level, level_ef, entry_nodes, entry_scores, scratch, counters):
    """Search the upper layers from the subgraph's entry point down to ``stop_level``+1.

    Writes the entry set for ``stop_level`` into entry_nodes/entry_scores (best first)
    and returns its size (0 if the subgraph is empty). Layer l uses beam width
    level_ef[l] (0 or 1 = greedy).
    """
    entry = tables.entry_node[graph]
    if entry < 0:
        return 0
    top = tables.node_level[entry]
    entry_nodes[0] = entry
    entry_scores[0] = traversal_score(tables, query, mode, entry)
    counters[1] += 1
    n_entries = 1
    for level in range(top, stop_level, -1):
        width = level_ef[level] if level < level_ef.shape[0] else 1
        if width < 1:
            width = 1
        n_res = beam_search_layer(
            tables, query, mode, level, width, False, entry_nodes, entry_scores, n_entries, scratch, counters
        )
        n_entries = heap_drain_descending(scratch.res_key, scratch.res_val, n_res, entry_scores, entry_nodes)
    return n_entries


@njit(nogil=True, cache=True)
def sort_ties_by_id(scores, ids, n):
    """Results come out sorted by similarity; order equal similarities by ascending id
    (the same order on every backend). Insertion sort is linear on sorted input."""
    for i in range(1, n):
        s = scores[i]
        v = ids[i]
        j = i - 1
        while j >= 0 and (scores[j] < s or (scores[j] == s and ids[j] > v)):
            scores[j + 1] = scores[j]
            ids[j + 1] = ids[j]
            j -= 1
        scores[j + 1] = s
        ids[j + 1] = v


@njit(nogil=True, cache=True, fastmath=True)
def rescore_exact(tables, query, metric, direct_rows, nodes, scores, n):
    """Replace float16 traversal scores by float32 ones and re-sort, best first."""
    for i in range(n):
        row = nodes[i] if direct_rows else tables.node_vec[nodes[i]]
        if row < 0 or row >= tables.vectors.shape[0]:  # written after these tables were read
            scores[i] = -np.inf
            continue
        scores[i] = similarity_to_row(query, tables.vectors, row, metric)
    sort_pool_descending(nodes, scores, n)


@njit(nogil=True, cache=True)
def write_results(tables, nodes, scores, n, k, out_ids, out_scores, item_scratch):
    """Best-first (node, score) list -> k external ids / scores: live nodes only, one
    entry per item (an item refreshed while the search ran, or one in several
    subgraphs, has several nodes), equal scores by ascending id, -1 / -inf padding."""
    node_state = tables.node_state
    node_item = tables.node_item
    item_ids = tables.item_ids
    written = 0
    for i in range(n):
        if written == k:
            break
        node = nodes[i]
        if node_state[node] != LIVE:  # tombstoned while we searched
            continue
        item = node_item[node]
        if item < 0 or item >= item_ids.shape[0]:  # written after these tables were read
            continue
        duplicate = False
        for j in range(written):
            if item_scratch[j] == item:
                duplicate = True
                break
        if duplicate:
            continue
        item_scratch[written] = item
        out_ids[written] = item_ids[item]
        out_scores[written] = scores[i]
        written += 1
    sort_ties_by_id(out_scores, out_ids, written)
    for i in range(written, k):
        out_ids[i] = -1
        out_scores[i] = -np.inf
    return written


@njit(nogil=True, cache=True, fastmath=True)
def search_graph(tables, query, mode, graph, k, ef, level_ef, scratch, out_ids, out_scores, out_stats):
    """Full HNSW search of one query in subgraph ``graph``. Writes k external ids /
    similarities (best first, -1 / -inf padded, one entry per item) and adds
    [expansions, scored rows] to out_stats; a subgraph these tables have no entry
    point for (an unknown category) gives an empty, padded list."""
    n = scratch.res_key.shape[0]
    entry_nodes = scratch.pool_node[:n]
    entry_scores = scratch.pool_score[:n]
    n_entries = 0
    if 0 <= graph < tables.entry_node.shape[0]:
        n_entries = descend_to_level(tables, query, mode, graph, 0, level_ef, entry_nodes, entry_scores, scratch,
                                     out_stats)
    n_res = 0
    if n_entries > 0:
        n_res = beam_search_layer(
            tables, query, mode, 0, ef, True, entry_nodes, entry_scores, n_entries, scratch, out_stats
        )
        n_res = heap_drain_descending(scratch.res_key, scratch.res_val, n_res, entry_scores, entry_nodes)
        if mode.half:
            rescore_exact(tables, query, mode.metric, mode.direct_rows, entry_nodes, entry_scores, n_res)
    return write_results(tables, entry_nodes, entry_scores, n_res, k, out_ids, out_scores, scratch.selected)


@njit(nogil=True, cache=True, fastmath=True)
def search_one(tables, query, mode, graph, k, ef, level_ef, scratch, out_ids, out_scores, out_stats):
    """search_graph with out_stats = [expansions, scored rows] of this search alone."""
    out_stats[0] = 0
    out_stats[1] = 0
    return search_graph(tables, query, mode, graph, k, ef, level_ef, scratch, out_ids, out_scores, out_stats)


@njit(nogil=True, cache=True, fastmath=True)
def search_queries(tables, queries, mode, graph, k, ef, level_ef, scratch, start, stop, out_ids, out_scores, out_stats):
    """Search queries[start:stop] one after another (one worker's share of a batch)."""
    for i in range(start, stop):
        search_one(tables, queries[i], mode, graph, k, ef, level_ef, scratch, out_ids[i], out_scores[i], out_stats[i])
