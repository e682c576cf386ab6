"""Request coalescing for Search: concurrent single-query (or small) calls with the
same parameters become one batched index call, as Triton's dynamic batcher or Milvus's
merged searches do. A batch amortises what every index call pays once (dispatch,
argument checks, result allocation) and runs its queries on the index's worker threads
together; the callers' RPC overhead stays theirs.

Leader and followers, no extra thread: the first call of a kind opens a batch and
leads it; calls that arrive while it is open join it (up to ``max_queries`` queries);
the leader closes it after ``max_wait_s`` — at once when no other search is in flight,
so a lone client waits for nothing — runs the index call on its own RPC thread, and
hands each follower its rows. Calls with different parameters (k, ef, level widths,
categories) never share a batch. Each caller's queries are checked on their own
before they join (``Index.prepare_queries``), so one caller's bad input is its own
error; a batch that fails anyway fails all its callers with that error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtindex.core.deadlines import SearchDeadlineExceeded
from rtindex.core.index import Index
from rtindex.core.results import SearchResult


@dataclass
class _Batch:
    key: Hashable
    parts: list[np.ndarray] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    queries: int = 0
    closed: bool = False
    full: threading.Event = field(default_factory=threading.Event)  # no room left: the leader stops waiting
    done: threading.Event = field(default_factory=threading.Event)
    result: SearchResult | None = None
    error: BaseException | None = None


@dataclass
class CoalescerStats:
    calls: int = 0
    batches: int = 0
    queries: int = 0


class SearchCoalescer:
    def __init__(self, index: Index, max_queries: int = 256, max_wait_s: float = 0.001) -> None:
        """max_queries: most queries in one merged call; max_wait_s: how long a batch
        stays open for more calls while other searches are in flight (0: only calls
        that arrive while the leader takes its lock join)."""
        self.index = index
        self.max_queries = max_queries
        self.max_wait_s = max_wait_s
        self.stats = CoalescerStats()
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}
        self._in_flight = 0

    def search(self, queries: np.ndarray, k: int | Sequence[int], ef: int | None, level_ef: Sequence[int] | None,
               categories: Sequence[int] | None, deadline: float | None) -> SearchResult:
        """``Index.search`` of ``queries`` (float32[b, dim]), possibly merged with
        concurrent calls of the same parameters. Raises what ``Index.search`` raises."""
        rows = self.index.prepare_queries(queries)
        key = (tuple(k) if isinstance(k, Sequence) else k, ef, tuple(level_ef or ()),
               None if categories is None else tuple(categories))
        if len(rows) >= self.max_queries:  # nothing to gain
            return self._run(rows, key, deadline)
        with self._lock:
            self.stats.calls += 1
            self._in_flight += 1
            batch = self._open.get(key)
            leader = batch is None or batch.closed or batch.queries + len(rows) > self.max_queries
            if leader:
                batch = self._open[key] = _Batch(key)
            assert batch is not None
            at = batch.queries
            batch.parts.append(rows)
            batch.deadlines.append(deadline)
            batch.queries += len(rows)
            if batch.queries >= self.max_queries:
                batch.full.set()
            others = self._in_flight > 1
        try:
            if leader:
                self._lead(batch, others)
            else:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not batch.done.wait(remaining):
                    raise SearchDeadlineExceeded("search: the deadline passed while the merged search ran")
            if batch.error is not None:
                raise batch.error
            assert batch.result is not None
            return _rows(batch.result, at, at + len(rows))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _lead(self, batch: _Batch, others: bool) -> None:
        if others and self.max_wait_s > 0:
            batch.full.wait(self.max_wait_s)
        with self._lock:
            batch.closed = True
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
            parts, deadlines = list(batch.parts), list(batch.deadlines)
            self.stats.batches += 1
            self.stats.queries += batch.queries
        try:
            # the batch runs until its last caller's deadline (each caller gives up at its own)
            latest = None if any(d is None for d in deadlines) else max(deadlines)  # type: ignore[type-var]
            batch.result = self._run(np.concatenate(parts) if len(parts) > 1 else parts[0], batch.key, latest)
        except BaseException as exc:
            batch.error = exc
        finally:
            batch.done.set()

    def _run(self, rows: np.ndarray, key: tuple[Any, ...], deadline: float | None) -> SearchResult:
        k, ef, level_ef, categories = key
        return self.index.search(rows, k=list(k) if isinstance(k, tuple) else k, ef=ef,
                                 level_ef=list(level_ef) or None, deadline=deadline,
                                 categories=None if categories is None else list(categories))


def _rows(result: SearchResult, start: int, stop: int) -> SearchResult:
    if start == 0 and stop == len(result.ids):
        return result
    return SearchResult(result.ids[start:stop], result.scores[start:stop], result.hops[start:stop],
                        result.evaluations[start:stop])
