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

from typing import Any, NamedTuple

import numpy as np

from rtindex.core.deadlines import check_deadline
from rtindex.core.engine import Engine
from rtindex.core.results import SearchResult
from rtindex.core.scorers import Scorer
from rtindex.core.storage import IdMap
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
    lanes = Lanes(np.arange(n_queries, dtype=np.int32), np.full(n_queries, graph, np.int32),
                  np.full(n_queries, k, np.int32), np.full(n_queries, ef, np.int32))
    ids, scores, hops, evaluations = run_lanes(engine, scorer, scorer.prepare(queries), lanes, level_widths,
                                               deadline)
    return SearchResult(ids=ids, scores=scores, hops=hops, evaluations=evaluations)


def search_categories_lockstep(
    engine: Engine, scorer: Scorer, queries: Any, n_queries: int, graphs: np.ndarray, ks: np.ndarray,
    efs: np.ndarray, level_widths: np.ndarray, deadline: float | None = None,
) -> SearchResult:
    """Lock-step search of several category subgraphs per query (``engine``: the
    category engine): one beam per (query, category), all advancing together, every
    step's candidates of all of them scored in one scorer call; a row already scored
    for a query (in another of its categories) is not scored again. Result as
    ``rtindex.core.search.search_categories``."""
    n_cat = len(graphs)
    lanes = Lanes(np.repeat(np.arange(n_queries, dtype=np.int32), n_cat), np.tile(graphs, n_queries),
                  np.tile(ks, n_queries), np.tile(efs, n_queries))
    ids, scores, hops, evaluations = run_lanes(engine, scorer, scorer.prepare(queries), lanes, level_widths,
                                               deadline, reuse_scores=True)
    per_query = np.zeros(n_queries, np.int64)
    np.add.at(per_query, lanes.query, hops)
    evals = np.zeros(n_queries, np.int64)
    np.add.at(evals, lanes.query, evaluations)
    width = ids.shape[1]
    return SearchResult(ids=ids.reshape(n_queries, n_cat, width), scores=scores.reshape(n_queries, n_cat, width),
                        hops=per_query, evaluations=evals)


class Lanes(NamedTuple):
    """Independent beams of one lock-step search: beam i searches subgraph graph[i] for
    scorer query query[i], keeps ef[i] entries and returns k[i] results."""

    query: np.ndarray  # int32
    graph: np.ndarray  # int32 (-1: no such subgraph: an empty result)
    k: np.ndarray  # int32
    ef: np.ndarray  # int32


def run_lanes(engine: Engine, scorer: Scorer, state: Any, lanes: Lanes, level_widths: np.ndarray,
              deadline: float | None, reuse_scores: bool = False) -> tuple[np.ndarray, ...]:
    """(ids [n_lanes, max k], scores, hops, evaluations) of every lane; -1 / -inf past
    a lane's own k."""
    n = len(lanes.query)
    width = int(lanes.k.max()) if n else 0
    ids = np.full((n, width), -1, np.int64)
    scores = np.full((n, width), -np.inf, np.float32)
    hops = np.zeros(n, np.int64)
    evaluations = np.zeros(n, np.int64)
    with engine.epochs.reading():
        t = engine.store.tables
        words = (t.node_state.shape[0] + 63) // 64
        group = max(1, min(n, _BITMAP_BUDGET_BYTES // (8 * words)))
        known = ScoreMemo(t.vectors.shape[0]) if reuse_scores else None
        for lo in range(0, n, group):
            hi = min(n, lo + group)
            part = Lanes(*(a[lo:hi] for a in lanes))
            _search_group(engine, t, scorer, state, part, level_widths, words, ids[lo:hi], scores[lo:hi],
                          hops[lo:hi], evaluations[lo:hi], deadline, known)
    past_k = np.arange(width)[None, :] >= lanes.k[:, None]
    ids[past_k] = -1
    scores[past_k] = -np.inf
    return ids, scores, hops, evaluations


class ScoreMemo:
    """Scores already computed in this search, by (scorer query, vector row): lanes of
    one query in several subgraphs meet the same items (an item is in a category and
    its ancestors)."""

    def __init__(self, rows: int) -> None:
        self._rows = max(1, rows)
        self._where = IdMap(1024)  # key -> index into _scores
        self._scores = np.empty(1024, np.float32)
        self._count = 0

    def score(self, scorer: Scorer, state: Any, query: np.ndarray, rows: np.ndarray,
              vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of rows ``rows`` (vector row numbers) for scorer queries ``query``, and
        which pairs the scorer computed now: only pairs not seen before reach it (once)."""
        keys = query.astype(np.int64) * self._rows + rows
        where = self._where.get(keys)
        missing = np.flatnonzero(where < 0)
        fresh = np.zeros(len(keys), bool)
        if len(missing):
            new_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
            pick = missing[first]
            fresh[pick] = True
            computed = np.ascontiguousarray(scorer.score(state, query[pick], vectors[rows[pick]]), np.float32)
            slots = np.arange(self._count, self._count + len(new_keys), dtype=np.int32)
            if self._count + len(new_keys) > len(self._scores):
                grown = np.empty(max(2 * len(self._scores), self._count + len(new_keys)), np.float32)
                grown[: self._count] = self._scores[: self._count]
                self._scores = grown
            self._scores[slots] = computed
            self._count += len(new_keys)
            self._where.put(new_keys, slots)
            where[missing] = slots[inverse]
        return self._scores[where], fresh


class _Group:
    """Per-lane beams and visited bitmaps of one group of lanes."""

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


def _score(scorer: Scorer, state: Any, t: Any, query: np.ndarray, nodes: np.ndarray, rows: np.ndarray,
           known: ScoreMemo | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of ``nodes`` for scorer queries ``query`` (``rows``: scratch for their
    embedding rows), and with ``known`` which of them the scorer computed now."""
    if known is not None:
        return known.score(scorer, state, query, t.node_vec[nodes], t.vectors)
    batch_rows = rows[: len(nodes)]
    gather_rows(t.vectors, t.node_vec, nodes, batch_rows)
    return np.ascontiguousarray(scorer.score(state, query, batch_rows), np.float32), None


def _search_group(
    engine: Engine, t: Any, scorer: Scorer, state: Any, lanes: Lanes, level_widths: np.ndarray, words: int,
    out_ids: np.ndarray, out_scores: np.ndarray, hops: np.ndarray, evaluations: np.ndarray,
    deadline: float | None, known: ScoreMemo | None,
) -> None:
    n_graphs = t.entry_node.shape[0]
    graph_ok = (lanes.graph >= 0) & (lanes.graph < n_graphs)
    entries = np.where(graph_ok, t.entry_node[np.where(graph_ok, lanes.graph, 0)], -1).astype(np.int32)
    live = np.flatnonzero(entries >= 0)
    if len(live) == 0:
        return  # the outputs stay padded
    lanes = Lanes(*(a[live] for a in lanes))
    entries = entries[live]
    tops = t.node_level[entries]
    top = int(tops.max())
    n = len(live)
    width = max([int(lanes.ef.max())] + [int(w) for w in level_widths[1 : top + 1]])
    g = _Group(n, width, words)
    rows = np.empty((n * max(1, t.links0.shape[1] - 1), t.vectors.shape[1]), np.float32)
    g.scores[:, 0], fresh = _score(scorer, state, t, lanes.query, entries, rows, known)
    g.nodes[:, 0] = entries
    g.size[:] = 1
    lane_evaluations = np.ones(n, np.int64) if fresh is None else fresh.astype(np.int64)
    lane_hops = np.zeros(n, np.int64)
    for level in range(top, -1, -1):
        level_width = lanes.ef if level == 0 else np.full(n, max(1, int(level_widths[level])), np.int32)
        _search_layer(engine, t, scorer, state, g, lanes, level, level_width, rows, lane_hops, lane_evaluations,
                      deadline, known)
    ids = np.empty((n, out_ids.shape[1]), np.int64)
    scores = np.empty((n, out_ids.shape[1]), np.float32)
    finish_results(t, g.scores, g.nodes, g.size, out_ids.shape[1], ids, scores, np.empty(out_ids.shape[1], np.int32))
    out_ids[live], out_scores[live] = ids, scores
    hops[live] = lane_hops
    evaluations[live] = lane_evaluations


def _search_layer(
    engine: Engine, t: Any, scorer: Scorer, state: Any, g: _Group, lanes: Lanes, level: int, width: np.ndarray,
    rows: np.ndarray, hops: np.ndarray, evaluations: np.ndarray, deadline: float | None, known: ScoreMemo | None,
) -> None:
    """Search one layer in lock-step; the beam entries (from the layer above) are the
    entry points. On return each beam holds its best ``width[i]`` nodes of this layer
    (a lane whose subgraph has no such layer keeps its entry)."""
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
        cand_scores, fresh = _score(scorer, state, t, lanes.query[cand_q], cand_nodes, rows, known)
        evaluations += counts if fresh is None else np.bincount(cand_q[fresh], minlength=n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])

        def merge(
            a: int, b: int, scratch: Scratch,
            offsets: np.ndarray = offsets, nodes: np.ndarray = cand_nodes, scores: np.ndarray = cand_scores,
        ) -> None:
            merge_step(g.scores, g.nodes, g.flags, g.size, width, a, b, offsets, nodes, scores)

        engine.workers.run(n, merge, capacity, 1, min_chunk=64)
