"""HNSW insertion in two phases, so a sub-batch of new nodes is inserted in parallel
without locks (batch insertion as in ParlayANN):

1. ``plan_links`` (read-only, parallel over new nodes): greedy descent, ef_construction
   search on each layer of the node, heuristic neighbor selection. The graph is not
   modified, so new nodes of the same sub-batch do not see each other; sub-batches are
   kept small relative to the graph (prefix doubling) so this costs no recall.
2. connect: every new node writes its own rows (``write_forward_links``), then the
   reverse links, grouped by target node (``collect_reverse_edges`` +
   ``add_reverse_links``): each target is touched by one worker only, and an
   overflowing row is re-selected with the heuristic.
"""

import numpy as np
from numba import njit

from .atomics import fetch_add
from .beam_search import beam_search_layer, descend_to_level
from .graph import adjacency, degree_of, row_of, write_row
from .heaps import heap_drain_descending
from .layout import LIVE
from .scoring import score_pool
from .select import select_neighbors, sort_pool_descending


@njit(nogil=True, cache=True, fastmath=True)
def plan_links(tables, nodes, cursor, params, mode, greedy_widths, scratch, plan, plan_offsets, counters):
    """Choose the out-neighbors of nodes on each of their layers, one node at a time,
    claimed from the shared ``cursor`` (int64[1], atomically advanced; every worker
    runs this until all nodes are claimed, so none waits behind a slow chunk).

    plan[plan_offsets[b] + level] receives node b's selection for ``level`` (column 0 =
    count). Nothing in the graph is written. ``mode``: how the searches read rows (the
    float16 copy when there is one: the walk is bound by memory traffic; the candidates'
    scores are then float16-rounded, and with ``params.half`` the selection's pairwise
    checks read the same copy, whose rows the walk has just brought into cache).
    """
    res_cap = scratch.res_key.shape[0]
    entry_nodes = scratch.pool_node[:res_cap]
    entry_scores = scratch.pool_score[:res_cap]
    selected = scratch.selected
    while True:
        b = fetch_add(cursor, 0, 1)
        if b >= nodes.shape[0]:
            return
        node = nodes[b]
        query = tables.vectors[tables.node_vec[node]]
        node_level = tables.node_level[node]
        graph = tables.node_graph[node]
        base = plan_offsets[b]
        for level in range(node_level + 1):
            plan[base + level, 0] = 0
        entry = tables.entry_node[graph]
        if entry < 0:
            continue
        top = tables.node_level[entry]
        stop_level = node_level if node_level < top else top
        n_entries = descend_to_level(
            tables, query, mode, graph, stop_level, greedy_widths, entry_nodes, entry_scores, scratch, counters
        )
        for level in range(stop_level, -1, -1):
            n_res = beam_search_layer(
                tables, query, mode, level, params.ef_construction, True,
                entry_nodes, entry_scores, n_entries, scratch, counters,
            )
            n_res = heap_drain_descending(scratch.res_key, scratch.res_val, n_res, entry_scores, entry_nodes)
            n_res = _without(node, entry_nodes, entry_scores, n_res)  # a node re-linked finds itself
            if n_res == 0:
                break
            n_sel = select_neighbors(
                tables, entry_nodes, entry_scores, n_res, params.M, params.metric, params.prune_alpha,
                params.M if params.fill else 0, selected, params.half,
            )
            plan[base + level, 0] = n_sel
            for i in range(n_sel):
                plan[base + level, 1 + i] = selected[i]
            # the next layer starts from the closest node found here (as hnswlib does)
            n_entries = 1


@njit(nogil=True, cache=True)
def _without(node, nodes, scores, n):
    """Remove ``node`` from the first n entries (order kept); returns the new count."""
    kept = 0
    for i in range(n):
        if nodes[i] != node:
            nodes[kept] = nodes[i]
            scores[kept] = scores[i]
            kept += 1
    return kept


@njit(nogil=True, cache=True)
def _in_row(links, row, degree, node):
    for i in range(degree):  # noqa: SIM110 (a generator in any() is slow in numba)
        if links[row, 1 + i] == node:
            return True
    return False


@njit(nogil=True, cache=True)
def write_forward_links(tables, nodes, plan, plan_offsets):
    """Give each new node its planned rows on every layer (its own rows only)."""
    for b in range(nodes.shape[0]):
        node = nodes[b]
        base = plan_offsets[b]
        for level in range(tables.node_level[node] + 1):
            row = row_of(tables, node, level)
            if row < 0:
                continue
            n = plan[base + level, 0]
            write_row(adjacency(tables, level), row, plan[base + level, 1 : 1 + n], n)


@njit(nogil=True, cache=True)
def collect_reverse_edges(tables, nodes, plan, plan_offsets, node_capacity):
    """All planned edges u -> v as reverse edges (target v, source u), sorted by
    (level, target) so each target's incoming edges are contiguous.

    Returns (targets, sources, levels, group_starts): group g spans
    group_starts[g]:group_starts[g + 1].
    """
    total = 0
    for b in range(nodes.shape[0]):
        base = plan_offsets[b]
        for level in range(tables.node_level[nodes[b]] + 1):
            total += plan[base + level, 0]
    targets = np.empty(total, np.int32)
    sources = np.empty(total, np.int32)
    levels = np.empty(total, np.int32)
    keys = np.empty(total, np.int64)
    e = 0
    for b in range(nodes.shape[0]):
        base = plan_offsets[b]
        for level in range(tables.node_level[nodes[b]] + 1):
            for i in range(plan[base + level, 0]):
                target = plan[base + level, 1 + i]
                targets[e] = target
                sources[e] = nodes[b]
                levels[e] = level
                keys[e] = np.int64(level) * node_capacity + target
                e += 1
    order = np.argsort(keys, kind="mergesort")
    targets = targets[order]
    sources = sources[order]
    levels = levels[order]
    keys = keys[order]
    n_groups = 0
    for i in range(total):
        if i == 0 or keys[i] != keys[i - 1]:
            n_groups += 1
    group_starts = np.empty(n_groups + 1, np.int64)
    g = 0
    for i in range(total):
        if i == 0 or keys[i] != keys[i - 1]:
            group_starts[g] = i
            g += 1
    group_starts[n_groups] = total
    return targets, sources, levels, group_starts


REVERSE_CLAIM = 32  # groups a worker claims at a time (a group costs ~1 us)


@njit(nogil=True, cache=True, fastmath=True)
def add_reverse_links(tables, targets, sources, levels, group_starts, cursor, params, scratch):
    """Link each target back to its new in-neighbors, REVERSE_CLAIM groups at a time
    claimed from the shared ``cursor`` (int64[1], as in plan_links).

    If the target's row has room the sources are appended; otherwise the row is
    re-selected with the heuristic from its live neighbors plus the sources. The
    scratch pool must hold a row plus the largest group (the caller sizes it); sources
    beyond it are not considered, never written past the buffer.
    """
    n_groups = group_starts.shape[0] - 1
    while True:
        g_start = fetch_add(cursor, 0, REVERSE_CLAIM)
        if g_start >= n_groups:
            return
        for g in range(g_start, min(g_start + REVERSE_CLAIM, n_groups)):
            _link_back(tables, targets, sources, levels, group_starts, g, params, scratch)


@njit(nogil=True, cache=True, fastmath=True)
def _link_back(tables, targets, sources, levels, group_starts, g, params, scratch):
    """add_reverse_links for group g."""
    pool_node = scratch.pool_node
    pool_score = scratch.pool_score
    selected = scratch.selected
    node_vec = tables.node_vec
    node_state = tables.node_state
    lo = group_starts[g]
    hi = group_starts[g + 1]
    target = targets[lo]
    level = levels[lo]
    cap = params.max_degree0 if level == 0 else params.M
    row = row_of(tables, target, level)
    if row < 0:
        return
    links = adjacency(tables, level)
    degree = degree_of(links, row)
    # sources already in the row (a re-linked node may be an old neighbor) are not added twice
    n_in = 0
    for i in range(lo, hi):
        if not _in_row(links, row, degree, sources[i]):
            sources[lo + n_in] = sources[i]
            n_in += 1
    if n_in == 0:
        return
    if degree + n_in <= cap:
        for i in range(n_in):
            links[row, 1 + degree + i] = sources[lo + i]
        links[row, 0] = degree + n_in
        return
    n_pool = 0
    capacity = pool_node.shape[0]
    for i in range(degree):
        nb = links[row, 1 + i]
        if node_state[nb] == LIVE:
            pool_node[n_pool] = nb
            n_pool += 1
    for i in range(n_in):
        if n_pool == capacity:
            break
        pool_node[n_pool] = sources[lo + i]
        n_pool += 1
    score_pool(tables, node_vec[target], pool_node, pool_score, 0, n_pool, params.metric, params.half)
    sort_pool_descending(pool_node, pool_score, n_pool)
    n_sel = select_neighbors(
        tables, pool_node, pool_score, n_pool, cap, params.metric, params.prune_alpha, 0, selected, params.half
    )
    write_row(links, row, selected, n_sel)
