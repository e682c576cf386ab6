"""Lock-step batch search: the search path for scorers (neural networks, GPU) — every
query of a batch advances one expansion per step and all new candidates of the batch
are scored in one scorer call. Same algorithm as the per-query search (``search.py``);
on a graph without tombstones it expands the same nodes and returns the same ids.

A step: ``expand_step`` (per query: pop best unexpanded beam entry, test-and-set the
visited bitmap on its neighbors) -> one ``scorer.score`` for the whole batch ->
``merge_step`` (per query: insert into its sorted beam). Visited bitmaps are cleared
from the list of nodes touched, so a reset costs O(touched), never O(N).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtindex.core.deadlines import check_deadline
from rtindex.core.engine import Engine
from rtindex.core.results import SearchResult
from rtindex.core.scorers import Scorer
from rtindex.kernels.layout import Scratch
from rtindex.kernels.lockstep import (
    clear_visited,
    expand_step,
    finish_results,
    gather_rows,
    mark_visited,
    merge_step,
)

# bound on the visited bitmaps of one group of queries (queries are searched in groups)
_BITMAP_BUDGET_BYTES = 256 << 20


def search_lockstep(
    engine: Engine, scorer: Scorer, queries: Any, n_queries: int, k: int, ef: int, level_widths: np.ndarray,
    graph: int = 0, deadline: float | None = None,
) -> SearchResult:
    """Search ``n_queries`` queries (in whatever form the scorer's prepare takes);
    raises SearchDeadlineExceeded at the first step after ``deadline``."""
    state = scorer.prepare(queries)
    ids = np.empty((n_queries, k), np.int64)
    scores = np.empty((n_queries, k), np.float32)
    hops = np.zeros(n_queries, np.int64)
    evaluations = np.zeros(n_queries, np.int64)
    with engine.epochs.reading():
        t = engine.store.tables
        words = (t.node_state.shape[0] + 63) // 64
        group = max(1, min(n_queries, _BITMAP_BUDGET_BYTES // (8 * words)))
        for lo in range(0, n_queries, group):
            hi = min(n_queries, lo + group)
            _search_group(engine, t, scorer, state, lo, hi, k, ef, level_widths, graph, words,
                          ids[lo:hi], scores[lo:hi], hops[lo:hi], evaluations[lo:hi], deadline)
    return SearchResult(ids=ids, scores=scores, hops=hops, evaluations=evaluations)


class _Group:
    """Per-query beams and visited bitmaps of one group of queries."""

    def __init__(self, n: int, width: int, words: int) -> None:
        self.scores = np.full((n, width), -np.inf, np.float32)
        self.nodes = np.full((n, width), -1, np.int32)
        self.flags = np.zeros((n, width), np.uint8)
        self.size = np.zeros(n, np.int32)
        self.visited = np.zeros((n, words), np.uint64)
        self.touched_q: list[np.ndarray] = []
        self.touched_nodes: list[np.ndarray] = []

    def mark(self, query_index: np.ndarray, nodes: np.ndarray) -> None:
        self.touched_q.append(query_index)
        self.touched_nodes.append(nodes)

    def reset_visited(self) -> None:
        if self.touched_nodes:
            clear_visited(self.visited, np.concatenate(self.touched_q), np.concatenate(self.touched_nodes))
        self.touched_q, self.touched_nodes = [], []


def _search_group(
    engine: Engine, t: Any, scorer: Scorer, state: Any, lo: int, hi: int, k: int, ef: int,
    level_widths: np.ndarray, graph: int, words: int,
    out_ids: np.ndarray, out_scores: np.ndarray, hops: np.ndarray, evaluations: np.ndarray,
    deadline: float | None,
) -> None:
    n = hi - lo
    entry = int(t.entry_node[graph])
    if entry < 0:
        out_ids[:] = -1
        out_scores[:] = -np.inf
        return
    top = int(t.node_level[entry])
    width = max([ef] + [int(w) for w in level_widths[1 : top + 1]])
    g = _Group(n, width, words)
    query_of = np.arange(lo, hi, dtype=np.int32)
    entry_nodes = np.full(n, entry, np.int32)
    rows = np.empty((n, t.vectors.shape[1]), np.float32)
    gather_rows(t.vectors, t.node_vec, entry_nodes, rows)
    g.scores[:, 0] = scorer.score(state, query_of, rows)
    g.nodes[:, 0] = entry
    g.size[:] = 1
    evaluations += 1
    for level in range(top, -1, -1):
        level_width = ef if level == 0 else max(1, int(level_widths[level]))
        _search_layer(engine, t, scorer, state, g, lo, level, level_width, hops, evaluations, deadline)
    finish_results(t, g.scores, g.nodes, g.size, k, out_ids, out_scores, np.empty(k, np.int32))


def _search_layer(
    engine: Engine, t: Any, scorer: Scorer, state: Any, g: _Group, lo: int, level: int, width: int,
    hops: np.ndarray, evaluations: np.ndarray, deadline: float | None,
) -> None:
    """Search one layer in lock-step; the beam entries (from the layer above) are the
    entry points. On return the beam holds the best ``width`` nodes of this layer."""
    n = g.size.shape[0]
    g.reset_visited()
    # entries: the previous layer's beam, cut to this layer's width and marked visited
    np.minimum(g.size, width, out=g.size)
    g.flags[:] = 0
    entry_q, entry_slot = np.nonzero(np.arange(g.nodes.shape[1])[None, :] < g.size[:, None])
    entry_q = entry_q.astype(np.int32)
    entry_nodes = g.nodes[entry_q, entry_slot]
    mark_visited(g.visited, entry_q, entry_nodes)
    g.mark(entry_q, entry_nodes)
    max_degree = t.links0.shape[1] - 1 if level == 0 else t.upper_links.shape[1] - 1
    candidates = np.empty((n, max_degree), np.int32)
    counts = np.zeros(n, np.int32)
    slots = np.arange(max_degree)[None, :]
    rows = np.empty((n * max_degree, t.vectors.shape[1]), np.float32)
    capacity = t.node_state.shape[0]

    def expand(a: int, b: int, scratch: Scratch) -> int:
        return int(expand_step(t, level, a, b, g.nodes, g.flags, g.size, g.visited, candidates, counts, hops))

    while True:
        check_deadline(deadline)  # once per step (a scorer call can be the dear part)
        active = sum(engine.workers.run(n, expand, capacity, 1, min_chunk=64))  # type: ignore[arg-type]
        if active == 0:
            break
        cand_q, cand_slot = np.nonzero(slots < counts[:, None])
        if len(cand_q) == 0:
            continue
        cand_nodes = candidates[cand_q, cand_slot]
        cand_q = cand_q.astype(np.int32)
        g.mark(cand_q, cand_nodes)
        batch_rows = rows[: len(cand_nodes)]
        gather_rows(t.vectors, t.node_vec, cand_nodes, batch_rows)
        cand_scores = np.ascontiguousarray(scorer.score(state, cand_q + np.int32(lo), batch_rows), np.float32)
        evaluations += counts
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])

        def merge(
            a: int, b: int, scratch: Scratch,
            offsets: np.ndarray = offsets, nodes: np.ndarray = cand_nodes, scores: np.ndarray = cand_scores,
        ) -> None:
            merge_step(g.scores, g.nodes, g.flags, g.size, width, a, b, offsets, nodes, scores)

        engine.workers.run(n, merge, capacity, 1, min_chunk=64)
