"""The single writer: every write (gRPC, and later Kafka) is queued here and applied by
one thread, in arrival order, in batches.

Consecutive queued writes of the same kind are merged into one index call while their
ids are disjoint — merging then cannot change the outcome of any id — which amortises
the per-batch work of the index (sub-batch planning, consolidation) over many small
requests. A write completes (its future resolves) once the index call returned, i.e.
once it is searchable. A full queue refuses new writes (``Overloaded``) instead of
growing without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from rtindex.index import DELETED, INSERTED, REFRESHED, SKIPPED_STALE, UNKNOWN, DeleteResult, Index, UpsertResult

log = logging.getLogger("rtindex.writer")


class Overloaded(RuntimeError):
    """The write queue is full; retry later with backoff."""


@dataclass
class _Write:
    kind: str  # "upsert" | "delete"
    ids: np.ndarray
    rows: np.ndarray | None
    versions: np.ndarray | None
    future: Future = field(default_factory=Future)


@dataclass
class WriterStats:
    batches: int = 0
    requests: int = 0
    ids: int = 0
    apply_seconds: float = 0.0


_STOP = object()


class Writer:
    def __init__(self, index: Index, queue_size: int = 1024, batch_ids: int = 65_536) -> None:
        self.index = index
        self.batch_ids = batch_ids
        self.stats = WriterStats()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rtindex-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submitting
    def upsert(self, ids: np.ndarray, rows: np.ndarray, versions: np.ndarray | None) -> Future:
        """Queue a validated upsert (see Index.prepare_upsert); resolves to UpsertResult."""
        return self._submit(_Write("upsert", ids, rows, versions))

    def delete(self, ids: np.ndarray, versions: np.ndarray | None) -> Future:
        """Queue a validated delete (see Index.prepare_delete); resolves to DeleteResult."""
        return self._submit(_Write("delete", ids, None, versions))

    def _submit(self, write: _Write) -> Future:
        if self._closed:
            raise Overloaded("the server is shutting down and takes no more writes")
        try:
            self._queue.put_nowait(write)
        except queue.Full:
            raise Overloaded(
                f"write queue full ({self._queue.maxsize} writes waiting); retry with backoff"
            ) from None
        return write.future

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking writes, apply those already queued, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ applying
    def _run(self) -> None:
        pending: object | None = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is _STOP:
                return
            assert isinstance(first, _Write)
            batch = [first]
            ids = first.ids
            while len(ids) < self.batch_ids:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not self._mergeable(first, nxt, ids):
                    pending = nxt
                    break
                batch.append(nxt)  # type: ignore[arg-type]
                ids = np.concatenate([ids, nxt.ids])  # type: ignore[union-attr]
            self._apply(batch)

    @staticmethod
    def _mergeable(first: _Write, nxt: object, ids: np.ndarray) -> bool:
        return (
            isinstance(nxt, _Write)
            and nxt.kind == first.kind
            and (nxt.versions is None) == (first.versions is None)
            and len(np.intersect1d(ids, nxt.ids, assume_unique=True)) == 0
        )

    def _apply(self, batch: list[_Write]) -> None:
        t0 = time.perf_counter()
        try:
            outcomes = self._call_index(batch)
        except Exception as exc:
            if len(batch) > 1:  # find the culprit: apply one by one so the others go through
                for write in batch:
                    self._apply([write])
                return
            log.warning("write rejected by the index", extra={"kind": batch[0].kind, "ids": len(batch[0].ids),
                                                              "error": str(exc)})
            batch[0].future.set_exception(exc)
            return
        offset = 0
        for write in batch:
            write.future.set_result(_result(write, outcomes[offset : offset + len(write.ids)]))
            offset += len(write.ids)
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.ids += len(outcomes)
        self.stats.apply_seconds += time.perf_counter() - t0

    def _call_index(self, batch: list[_Write]) -> np.ndarray:
        ids = np.concatenate([w.ids for w in batch])
        versions = None if batch[0].versions is None else np.concatenate([w.versions for w in batch])  # type: ignore[misc]
        if batch[0].kind == "upsert":
            rows = np.concatenate([w.rows for w in batch])  # type: ignore[misc]
            result = self.index.upsert(ids, rows, versions)
        else:
            result = self.index.delete(ids, versions)
        assert result.outcome is not None
        return result.outcome


def _result(write: _Write, outcome: np.ndarray) -> UpsertResult | DeleteResult:
    if write.kind == "upsert":
        return UpsertResult(
            inserted=int((outcome == INSERTED).sum()), refreshed=int((outcome == REFRESHED).sum()),
            skipped_stale=int((outcome == SKIPPED_STALE).sum()), outcome=outcome,
        )
    return DeleteResult(
        deleted=int((outcome == DELETED).sum()), unknown_ids=write.ids[outcome == UNKNOWN],
        skipped_stale=int((outcome == SKIPPED_STALE).sum()), outcome=outcome,
    )
