"""Search of several category subgraphs per query in one kernel call: each category
gets its own beam (its own ef) and its own top-k list.

``tables`` are the category store's (rows and items read from the global store);
``graphs[j]`` is the subgraph of the query's j-th category, -1 when the index has no
such category (its list stays padded).

Scores are not shared across the subgraphs of a query here: for the built-in metrics a
lookup in a per-query score memo by row cost more than scoring the row again (measured
on 100k x 128 with 16 categories per query: the memo saved 7% of the rows scored, 25%
when the categories were nested, and was 5-6% slower either way; README, Categories).
The lock-step search, whose scorer calls are the dear part, does share them.
"""

from numba import njit

from .beam_search import beam_search_layer, descend_to_level, rescore_exact, write_results
from .heaps import heap_drain_descending


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
def search_categories_queries(
    tables, queries, mode, graphs, ks, efs, level_ef, scratch, start, stop, out_ids, out_scores, out_stats
):
    """out_ids[i, j, :ks[j]] / out_scores[i, j, :ks[j]]: best items of subgraph graphs[j]
    for query i of start..stop (one worker's share of a batch; best first, -1 / -inf
    padded; entries past ks[j] are left as they are); out_stats[i] = [expansions, rows
    scored] over its categories. Category by category, each searched for all the
    queries in turn: a subgraph's links and rows are then read from cache by the queries
    after the first, as a per-category index would be (1.19-1.27x per query over
    query-by-query order, 16 categories on 50k-100k items)."""
    for i in range(start, stop):
        out_stats[i, 0] = 0
        out_stats[i, 1] = 0
    for j in range(graphs.shape[0]):
        for i in range(start, stop):
            _search_category(tables, queries[i], mode, graphs[j], ks[j], efs[j], level_ef, scratch, out_ids[i, j],
                             out_scores[i, j], out_stats[i])
