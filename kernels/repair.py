"""Delete handling as explicit phases (DiskANN's process_delete / consolidate_deletes):

- ``tombstone_chains``: an item's nodes become TOMBSTONE at once; searches skip them in
  results from then on but may still walk through them.
- ``find_entry_points``: subgraphs whose entry point was tombstoned get a live one.
- ``repair_in_neighbors``: every live node p with a tombstoned neighbor v re-selects its
  row from N(p) ∪ N(v) ∪ N(u) (u: p's few closest live candidates) minus tombstones with
  RobustPrune (FreshDiskANN, with DiskANN's growing-alpha passes), filled back to its
  previous degree. The wider pool keeps recall after heavy churn at a fresh build's.
  Each worker rewrites only the rows of its own range of p, and rows of tombstoned nodes
  are only read, so ranges run in parallel without locks.
- ``collect_upper_rows``: the rows to free with the repaired (now unreachable) nodes.
"""

import numpy as np
from numba import njit

from .graph import adjacency, degree_of, next_stamp, row_of, write_row
from .layout import LIVE, TOMBSTONE
from .scoring import score_pool, similarity_of_rows
from .select import select_neighbors, sort_pool_descending


@njit(nogil=True, cache=True)
def tombstone_chains(tables, first_nodes, graph_live):
    """Tombstone every node of the chains starting at first_nodes; returns the count.
    graph_live[g] (live nodes per subgraph) loses one per node of subgraph g."""
    count = 0
    n_graphs = graph_live.shape[0]
    for i in range(first_nodes.shape[0]):
        node = first_nodes[i]
        while node >= 0:
            if tables.node_state[node] == LIVE:
                tables.node_state[node] = TOMBSTONE
                count += 1
                graph = tables.node_graph[node]
                if graph < n_graphs:
                    graph_live[graph] -= 1
            node = tables.node_next[node]
    return count


@njit(nogil=True, cache=True)
def find_entry_points(tables, wanted, node_high_water, out):
    """out[g] = the live node of the highest level in subgraph g (lowest id on ties),
    or -1, for every g with wanted[g]; one pass over the nodes."""
    best_level = np.full(out.shape[0], -1, np.int32)
    for g in range(out.shape[0]):
        if wanted[g]:
            out[g] = -1
    for node in range(node_high_water):
        if tables.node_state[node] != LIVE:
            continue
        graph = tables.node_graph[node]
        if graph >= out.shape[0] or not wanted[graph]:
            continue
        level = tables.node_level[node]
        if level > best_level[graph]:
            best_level[graph] = level
            out[graph] = node


@njit(nogil=True, cache=True)
def _add_row_to_pool(tables, links, row, visited, stamp, pool_node, n_pool):
    """Append the live, not yet seen entries of links[row] to the pool; returns its size."""
    for j in range(degree_of(links, row)):
        w = links[row, 1 + j]
        if visited[w] != stamp:
            visited[w] = stamp
            if tables.node_state[w] == LIVE and n_pool < pool_node.shape[0]:
                pool_node[n_pool] = w
                n_pool += 1
    return n_pool


@njit(nogil=True, cache=True, fastmath=True)
def repair_in_neighbors(tables, start, stop, params, scratch):
    """Repair the rows of live nodes start..stop-1 that point at tombstoned nodes.

    Returns the number of rows rewritten.
    """
    pool_node = scratch.pool_node
    pool_score = scratch.pool_score
    selected = scratch.selected
    visited = scratch.visited
    node_state = tables.node_state
    node_vec = tables.node_vec
    repaired = 0
    for p in range(start, stop):
        if node_state[p] != LIVE:
            continue
        for level in range(tables.node_level[p] + 1):
            row = row_of(tables, p, level)
            if row < 0:
                continue
            links = adjacency(tables, level)
            degree = degree_of(links, row)
            dead = False
            for i in range(degree):
                if node_state[links[row, 1 + i]] != LIVE:
                    dead = True
                    break
            if not dead:
                continue
            stamp = next_stamp(scratch)
            visited[p] = stamp
            n_pool = 0
            for i in range(degree):
                v = links[row, 1 + i]
                if visited[v] == stamp:
                    continue
                visited[v] = stamp
                if node_state[v] == LIVE:
                    pool_node[n_pool] = v
                    n_pool += 1
                    continue
                if node_state[v] != TOMBSTONE:
                    continue
                v_row = row_of(tables, v, level)
                if v_row >= 0:
                    n_pool = _add_row_to_pool(tables, links, v_row, visited, stamp, pool_node, n_pool)
            p_row = node_vec[p]
            score_pool(tables, p_row, pool_node, pool_score, 0, n_pool, params.metric, params.half)
            sort_pool_descending(pool_node, pool_score, n_pool)
            if params.repair_widen > 0:
                # widen the pool with the rows of p's closest live candidates: N(v) alone
                # is a narrow view, and rows repaired from it drift away from what a
                # fresh search would choose (recall after heavy churn falls)
                n_first = n_pool
                for a in range(min(params.repair_widen, n_first)):
                    u_row = row_of(tables, pool_node[a], level)
                    if u_row >= 0:
                        n_pool = _add_row_to_pool(tables, links, u_row, visited, stamp, pool_node, n_pool)
                score_pool(tables, p_row, pool_node, pool_score, n_first, n_pool, params.metric, params.half)
                sort_pool_descending(pool_node, pool_score, n_pool)
            cap = params.max_degree0 if level == 0 else params.M
            # RobustPrune with DiskANN's growing alpha keeps the long edges a deleted node
            # carried; the row is filled back to its old degree (re-pruning alone would
            # thin the graph a little with every repair, and recall with it)
            n_sel = select_neighbors(
                tables, pool_node, pool_score, n_pool, cap, params.metric, params.repair_alpha,
                degree, selected, params.half,
            )
            write_row(links, row, selected, n_sel)
            repaired += 1
    return repaired


@njit(nogil=True, cache=True)
def collect_upper_rows(tables, nodes):
    """All upper-level rows owned by ``nodes`` (to return them to the free list)."""
    total = 0
    for i in range(nodes.shape[0]):
        total += tables.node_level[nodes[i]]
    rows = np.empty(total, np.int32)
    k = 0
    for i in range(nodes.shape[0]):
        r = tables.node_upper[nodes[i]]
        while r >= 0 and k < total:
            rows[k] = r
            k += 1
            r = tables.upper_next[r]
    return rows[:k]


@njit(nogil=True, cache=True)
def level0_in_degrees(tables, node_high_water):
    """In-degree of every node on level 0, counting edges from live nodes only."""
    in_degree = np.zeros(node_high_water, np.int32)
    links = tables.links0
    for p in range(node_high_water):
        if tables.node_state[p] != LIVE:
            continue
        for j in range(degree_of(links, p)):
            nb = links[p, 1 + j]
            if 0 <= nb < node_high_water:
                in_degree[nb] += 1
    return in_degree


@njit(nogil=True, cache=True, fastmath=True)
def adopt_orphans(tables, node_high_water, params, min_in_degree):
    """Give every live node without a live in-edge on level 0 one again, so no item
    becomes unreachable under churn.

    The orphan u is linked from its most similar live out-neighbor w: appended if w's
    row has room, else it replaces the entry of w's row least similar to w among those
    that keep another in-edge. Returns the number of orphans adopted.
    """
    in_degree = level0_in_degrees(tables, node_high_water)
    links = tables.links0
    node_state = tables.node_state
    entry = tables.entry_node
    adopted = 0
    for u in range(node_high_water):
        if node_state[u] != LIVE or in_degree[u] >= min_in_degree:
            continue
        graph = tables.node_graph[u]
        if entry[graph] == u:
            continue
        # the most similar live out-neighbor that does not point at u yet
        best_w = -1
        best_score = -np.inf
        for j in range(degree_of(links, u)):
            w = links[u, 1 + j]
            if node_state[w] != LIVE:
                continue
            already = False
            for i in range(degree_of(links, w)):
                if links[w, 1 + i] == u:
                    already = True
                    break
            if already:
                continue
            score = similarity_of_rows(tables.vectors, tables.node_vec[u], tables.node_vec[w], params.metric)
            if score > best_score:
                best_score = score
                best_w = w
        if best_w < 0:
            continue  # no live out-neighbor left to ask (isolated ones are relinked)
        w = best_w
        degree = degree_of(links, w)
        if degree < params.max_degree0:
            links[w, 1 + degree] = u
            links[w, 0] = degree + 1
        else:
            victim = -1
            victim_score = np.inf
            for j in range(degree):
                x = links[w, 1 + j]
                if in_degree[x] < 2 and node_state[x] == LIVE:
                    continue
                score = similarity_of_rows(tables.vectors, tables.node_vec[w], tables.node_vec[x], params.metric)
                if score < victim_score:
                    victim_score = score
                    victim = j
            if victim < 0:
                continue
            in_degree[links[w, 1 + victim]] -= 1
            links[w, 1 + victim] = u
        in_degree[u] += 1
        adopted += 1
    return adopted


@njit(nogil=True, cache=True)
def isolated_nodes(tables, node_high_water):
    """Live nodes (not entry points) with no live out-neighbor on level 0: they need a
    fresh insertion to rejoin the graph."""
    out = []
    links = tables.links0
    for u in range(node_high_water):
        if tables.node_state[u] != LIVE or tables.entry_node[tables.node_graph[u]] == u:
            continue
        alone = True
        for j in range(degree_of(links, u)):
            if tables.node_state[links[u, 1 + j]] == LIVE:
                alone = False
                break
        if alone:
            out.append(u)
    return np.array(out, dtype=np.int32)
