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
def _search_category(tables, query, mode, graph, k, ef, level_ef, scratch, out_ids, out_scores, out_stats):
    """Best k items of one subgraph for one query into out_ids / out_scores (best first,
    -1 / -inf padded up to k); expansions and rows scored added to out_stats."""
    n = scratch.res_key.shape[0]
    entry_nodes = scratch.pool_node[:n]
    entry_scores = scratch.pool_score[:n]
    n_res = 0
    if 0 <= graph < tables.entry_node.shape[0]:
        n_entries = descend_to_level(tables, query, mode, graph, 0, level_ef, entry_nodes, entry_scores, scratch,
                                     out_stats)
        if n_entries > 0:
            n_res = beam_search_layer(
                tables, query, mode, 0, ef, True, entry_nodes, entry_scores, n_entries, scratch, out_stats
            )
            n_res = heap_drain_descending(scratch.res_key, scratch.res_val, n_res, entry_scores, entry_nodes)
            if mode.half:
                rescore_exact(tables, query, mode.metric, mode.direct_rows, entry_nodes, entry_scores, n_res)
    write_results(tables, entry_nodes, entry_scores, n_res, k, out_ids, out_scores, scratch.selected)


@njit(nogil=True, cache=True, fastmath=True)
def search_categories_one(tables, query, mode, graphs, ks, efs, level_ef, scratch, out_ids, out_scores, out_stats):
    """out_ids[j, :ks[j]] / out_scores[j, :ks[j]]: best items of subgraph graphs[j]
    (best first, -1 / -inf padded; entries past ks[j] are left as they are);
    out_stats = [expansions, rows scored] over all categories. With
    ``mode.reuse_scores``, a row scored in one subgraph is not scored again in another."""
    out_stats[0] = 0
    out_stats[1] = 0
    next_row_generation(scratch)
    for j in range(graphs.shape[0]):
        _search_category(tables, query, mode, graphs[j], ks[j], efs[j], level_ef, scratch, out_ids[j],
                         out_scores[j], out_stats)


@njit(nogil=True, cache=True, fastmath=True)
def search_categories_queries(
    tables, queries, mode, plain_mode, graphs, ks, efs, level_ef, scratch, start, stop, out_ids, out_scores, out_stats
):
    """Categories of queries[start:stop] (one worker's share of a batch). One query:
    search_categories_one (its scores shared across its subgraphs). Several: category
    by category, each searched for all of them in turn, so that a subgraph's links and
    rows are read from cache by the queries after the first (as a per-category index
    would be); scores are then not shared across subgraphs (``mode.reuse_scores`` is
    ignored: a score memo per query would not fit in cache)."""
    if stop - start == 1:
        search_categories_one(tables, queries[start], mode, graphs, ks, efs, level_ef, scratch, out_ids[start],
                              out_scores[start], out_stats[start])
        return
    for i in range(start, stop):
        out_stats[i, 0] = 0
        out_stats[i, 1] = 0
    for j in range(graphs.shape[0]):
        for i in range(start, stop):
            _search_category(tables, queries[i], plain_mode, graphs[j], ks[j], efs[j], level_ef, scratch, out_ids[i, j],
                             out_scores[i, j], out_stats[i])
