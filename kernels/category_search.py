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

from .beam_search import search_graph


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
            search_graph(tables, queries[i], mode, graphs[j], ks[j], efs[j], level_ef, scratch, out_ids[i, j],
                         out_scores[i, j], out_stats[i])
