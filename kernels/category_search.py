"""Search of several category subgraphs per query in one kernel call: each category
gets its own beam (its own ef) and its own top-k list, and a row scored for the query in
one subgraph is not scored again in another (``mode.reuse_scores``: the scratch keeps
the scores of this query by vector row, cleared in O(1) per query by a generation).

``tables`` are the category store's (rows and items read from the global store);
``graphs[j]`` is the subgraph of the query's j-th category, -1 when the index has no
such category (its list stays padded).
"""

import numpy as np
from numba import njit

from .beam_search import beam_search_layer, descend_to_level, rescore_exact, write_results
from .heaps import heap_drain_descending


@njit(nogil=True, cache=True)
def next_row_generation(scratch):
    """Start a new query in the row score cache (cleared once per 2^32 - 1 queries)."""
    g = np.uint32(scratch.row_gen[0] + np.uint32(1))
    if g == np.uint32(0):
        scratch.row_seen[:] = 0
        g = np.uint32(1)
    scratch.row_gen[0] = g


@njit(nogil=True, cache=True, fastmath=True)
def search_categories_one(tables, query, mode, graphs, ks, efs, level_ef, scratch, out_ids, out_scores, out_stats):
    """out_ids[j, :ks[j]] / out_scores[j, :ks[j]]: best items of subgraph graphs[j]
    (best first, -1 / -inf padded; entries past ks[j] are left as they are);
    out_stats = [expansions, rows scored] over all categories."""
    out_stats[0] = 0
    out_stats[1] = 0
    next_row_generation(scratch)
    n = scratch.res_key.shape[0]
    entry_nodes = scratch.pool_node[:n]
    entry_scores = scratch.pool_score[:n]
    n_graphs = tables.entry_node.shape[0]
    for j in range(graphs.shape[0]):
        graph = graphs[j]
        n_res = 0
        if 0 <= graph < n_graphs:
            n_entries = descend_to_level(
                tables, query, mode, graph, 0, level_ef, entry_nodes, entry_scores, scratch, out_stats
            )
            if n_entries > 0:
                n_res = beam_search_layer(
                    tables, query, mode, 0, efs[j], True, entry_nodes, entry_scores, n_entries, scratch, out_stats
                )
                n_res = heap_drain_descending(scratch.res_key, scratch.res_val, n_res, entry_scores, entry_nodes)
                if mode.half:
                    rescore_exact(tables, query, mode.metric, mode.direct_rows, entry_nodes, entry_scores, n_res)
        write_results(tables, entry_nodes, entry_scores, n_res, ks[j], out_ids[j], out_scores[j], scratch.selected)


@njit(nogil=True, cache=True, fastmath=True)
def search_categories_queries(
    tables, queries, mode, graphs, ks, efs, level_ef, scratch, start, stop, out_ids, out_scores, out_stats
):
    """search_categories_one for queries[start:stop] (one worker's share of a batch)."""
    for i in range(start, stop):
        search_categories_one(
            tables, queries[i], mode, graphs, ks, efs, level_ef, scratch, out_ids[i], out_scores[i], out_stats[i]
        )
