"""The single writer: every write (gRPC, Kafka, a replayed write-ahead log) is queued
here and applied by one thread, in arrival order, in batches.

Durable writes (gRPC's: Kafka is its own log) go to a ``Journal`` (the server's
write-ahead log, ``rtindex.snapshots.wal``) before they are applied: every durable write
of a batch in one append and one fsync (group commit), so a write is on disk before it
is acknowledged. The index records the last journal record applied (``Index.log_seq``)
under its write lock, which tells a snapshot exactly which records it covers.

Consecutive queued writes of the same kind are merged into one index call while their
ids are disjoint — merging then cannot change the outcome of any id — which amortises
the per-batch work of the index (sub-batch planning, consolidation) over many small
requests. A write completes (its future resolves) once the index call returned, i.e.
once it is searchable. A full queue refuses new writes (``Overloaded``) instead of
growing without bound.

Freshness under load: an upsert batch from a live stream (the Kafka consumer once it
serves; gRPC writes and the start-up catch-up have no deadline) should be searchable
within ``freshness_budget_s`` of its oldest change. If its age plus its predicted
apply time at the full ef_construction exceeds that, it is linked with the widest beam
that fits the time left, down to ``ef_construction_min``; a batch whose full-beam
apply takes under ``SMALL_BATCH_SHARE`` of the budget keeps the full beam (its delay
is transit, a narrower beam would gain nothing). Cost model: per id, the share
``FIXED_COST_SHARE`` of the full-beam cost does not depend on the beam, the rest is
proportional to it; the full-beam cost is re-estimated from every batch.

The floor stays at 64 and a narrow beam is not used while the index holds fewer than
``reduced_ef_min_items`` items: a narrower beam is a lasting trade in graph quality, and
the graph's first nodes matter most. A lower floor lost much recall in the Kafka
benchmark without making 10k/s measurably easier; sustained overload drifts the graph
toward an all-floor build. The measurements are in README ("Freshness under load").
``freshness_budget_s=0`` keeps the full beam.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rtindex.core.categories import ItemCategories
from rtindex.core.index import Index
from rtindex.core.results import DELETED, INSERTED, REFRESHED, SKIPPED_STALE, UNKNOWN, DeleteResult, UpsertResult

log = logging.getLogger("rtindex.writer")


class Overloaded(RuntimeError):
    """The write queue is full; retry later with backoff."""


class JournalFailed(RuntimeError):
    """A durable write could not be journaled (disk full, I/O error): it was not applied."""


@dataclass
class WriteRecord:
    """One validated write, as a journal stores it."""

    kind: str  # "upsert" | "delete" | "taxonomy"
    ids: np.ndarray  # int64[n]; taxonomy: the child categories
    rows: np.ndarray | None = None  # upserts: float32[n, dim] as stored
    versions: np.ndarray | None = None  # int64[n] or None (unversioned)
    categories: ItemCategories | None = None  # upserts: categories per item (None: none)
    parents: np.ndarray | None = None  # taxonomy: int64[n] parent of each child (-1: a root)


class Journal(Protocol):
    def append(self, records: Sequence[WriteRecord]) -> list[int]:
        """Write ``records`` durably (one fsync), in order; returns their sequence
        numbers. Raises OSError when they could not be written."""
        ...


@dataclass
class _Write(WriteRecord):
    since: float | None = None  # time.time() when its oldest change was made; None: no freshness deadline
    durable: bool = False  # journal it before applying it
    log_seq: int | None = None  # its journal record, once journaled (or when replayed from the journal)
    future: Future = field(default_factory=Future)


@dataclass
class WriterStats:
    batches: int = 0
    requests: int = 0
    ids: int = 0
    apply_seconds: float = 0.0
    reduced_ef_batches: int = 0  # upsert batches linked with a narrower beam (behind the freshness budget)


class WriteObserver(Protocol):
    """Told of every batch applied, on the writer thread (so: quick): how the server's
    metrics (``rtindex.service.metrics.WriterMetrics``) see the writer without the core
    importing them."""

    def batch_applied(self, kind: str, requests: int, ids: int, seconds: float, reduced_ef: bool) -> None:
        """kind: the batch's ("upsert", "delete", "taxonomy"); requests merged into it; ids
        in it; seconds to apply it (until searchable); reduced_ef: linked with a narrower
        beam."""


_STOP = object()
FIXED_COST_SHARE = 0.4  # of an insert's cost at the full beam, the part that does not shrink with the beam
SMALL_BATCH_SHARE = 0.25  # a batch whose full-beam apply takes less than this share of the budget keeps the full beam


class Writer:
    def __init__(self, index: Index, queue_size: int = 1024, batch_ids: int = 65_536,
                 freshness_budget_s: float = 0.02, ef_construction_min: int = 64,
                 reduced_ef_min_items: int = 20_000, journal: Journal | None = None) -> None:
        """freshness_budget_s: 0 = always the full ef_construction. journal: where durable
        writes go before they are applied (None: nowhere; ``durable`` is then ignored)."""
        self.index = index
        self.journal = journal
        self.batch_ids = batch_ids
        self.freshness_budget_s = freshness_budget_s
        self.ef_construction_min = ef_construction_min
        self.reduced_ef_min_items = reduced_ef_min_items
        self.stats = WriterStats()
        self.observer: WriteObserver | None = None  # told of every batch applied (the server's metrics)
        # decayed sums over upsert batches: seconds, and ids weighted by their cost
        # relative to the full beam, so that seconds / ids is the cost of one id at it
        self._cost_seconds = 0.0
        self._cost_ids = 0.0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rtindex-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submitting
    def upsert(self, ids: np.ndarray, rows: np.ndarray, versions: np.ndarray | None,
               since: float | None = None, categories: ItemCategories | None = None,
               durable: bool = False) -> Future:
        """Queue a validated upsert (see Index.prepare_upsert, prepare_categories);
        resolves to UpsertResult. since: when the oldest of these changes was made
        (time.time()), for a stream with a freshness deadline; None (gRPC writes, a
        stream catching up before it serves): no deadline, always the full
        ef_construction. categories: the items' categories (None: none). durable:
        journaled before it is applied (a gRPC write; Kafka is its own log)."""
        return self._submit(_Write("upsert", ids, rows, versions, categories,
                                   since=None if since is None else _since(since), durable=durable))

    def delete(self, ids: np.ndarray, versions: np.ndarray | None, durable: bool = False) -> Future:
        """Queue a validated delete (see Index.prepare_delete); resolves to DeleteResult."""
        return self._submit(_Write("delete", ids, versions=versions, durable=durable))

    def set_category_parents(self, children: np.ndarray, parents: np.ndarray, durable: bool = False) -> Future:
        """Queue a taxonomy change (see Index.set_category_parents, which checks it when
        applied); resolves to the number of items whose memberships changed. Through
        the writer, so that it is journaled in the order it is applied."""
        return self._submit(_Write("taxonomy", np.asarray(children, np.int64), parents=np.asarray(parents, np.int64),
                                   durable=durable))

    def replay(self, seq: int, record: WriteRecord, block: bool = True) -> Future:
        """Queue a write read back from the journal (record ``seq``): applied as it was,
        not journaled again. Waits for room in the queue unless ``block`` is False."""
        write = _Write(record.kind, record.ids, record.rows, record.versions, record.categories, record.parents,
                       log_seq=seq)
        if not block:
            return self._submit(write)
        self._queue.put(write)
        return write.future

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
            while first.kind != "taxonomy" and len(ids) < self.batch_ids:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not self._mergeable(first, nxt, ids):
                    pending = nxt
                    break
                batch.append(nxt)  # type: ignore[arg-type]
                ids = np.concatenate([ids, nxt.ids])  # type: ignore[union-attr]
            batch = self._journal(batch)
            if batch:
                self._apply(batch)

    def _journal(self, batch: list[_Write]) -> list[_Write]:
        """Append the batch's durable writes to the journal (one fsync); a write that
        could not be written fails (nothing of it applied) and leaves the batch."""
        durable = [w for w in batch if w.durable and w.log_seq is None]
        if self.journal is None or not durable:
            return batch
        try:
            seqs = self.journal.append(durable)
        except OSError as exc:
            log.error("write-ahead log append failed; the writes were refused", extra={
                "writes": len(durable), "error": str(exc)})
            for w in durable:
                w.future.set_exception(JournalFailed(
                    f"{w.kind}: the write-ahead log could not be written ({exc}); nothing was applied. Free disk "
                    "space or fix the data directory, then retry"))
            return [w for w in batch if not w.durable]
        for w, seq in zip(durable, seqs, strict=True):
            w.log_seq = seq
        return batch

    @staticmethod
    def _mergeable(first: _Write, nxt: object, ids: np.ndarray) -> bool:
        return (
            isinstance(nxt, _Write)
            and nxt.kind == first.kind != "taxonomy"
            and (nxt.versions is None) == (first.versions is None)
            and len(np.intersect1d(ids, nxt.ids, assume_unique=True)) == 0
        )

    def _beam_for(self, since: float | None, n: int) -> int:
        """The widest insert beam that makes ``n`` ids made at ``since`` searchable
        within the freshness budget (see the module docstring); None: no deadline."""
        full = self.index.config.ef_construction
        if since is None or self.freshness_budget_s <= 0 or len(self.index) < self.reduced_ef_min_items:
            return full
        if not self._cost_ids:
            return full
        need = n * self._cost_seconds / self._cost_ids
        remaining = self.freshness_budget_s - (time.time() - since)
        if need <= remaining or need <= SMALL_BATCH_SHARE * self.freshness_budget_s:
            return full  # fits; or too small to be what makes it late (transit is)
        affordable = max(0.0, remaining) / need  # share of the full-beam cost
        beam = full * (affordable - FIXED_COST_SHARE) / (1 - FIXED_COST_SHARE)
        return int(min(full, max(self.ef_construction_min, beam)))

    def _learn_cost(self, seconds: float, ids: int, beam: int) -> None:
        relative = FIXED_COST_SHARE + (1 - FIXED_COST_SHARE) * beam / self.index.config.ef_construction
        self._cost_seconds = 0.8 * self._cost_seconds + seconds
        self._cost_ids = 0.8 * self._cost_ids + ids * relative

    def _apply(self, batch: list[_Write]) -> None:
        t0 = time.perf_counter()
        reduced_before = self.stats.reduced_ef_batches  # _call_index counts a narrower beam
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
            if write.kind == "taxonomy":
                write.future.set_result(int(outcomes[0]))
                continue
            write.future.set_result(_result(write, outcomes[offset : offset + len(write.ids)]))
            offset += len(write.ids)
        seconds = time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.ids += sum(len(w.ids) for w in batch)
        self.stats.apply_seconds += seconds
        if self.observer is not None:
            self.observer.batch_applied(batch[0].kind, len(batch), sum(len(w.ids) for w in batch), seconds,
                                        self.stats.reduced_ef_batches > reduced_before)

    def _call_index(self, batch: list[_Write]) -> np.ndarray:
        """The index call of a batch: the outcome of each id (taxonomy: [items moved])."""
        seqs = [w.log_seq for w in batch if w.log_seq is not None]
        log_seq = max(seqs) if seqs else None
        if batch[0].kind == "taxonomy":
            moved = self.index.set_category_parents(batch[0].ids, batch[0].parents, log_seq=log_seq)
            return np.array([moved], np.int64)
        ids = np.concatenate([w.ids for w in batch])
        versions = None if batch[0].versions is None else np.concatenate([w.versions for w in batch])  # type: ignore[misc]
        if batch[0].kind == "upsert":
            rows = np.concatenate([w.rows for w in batch])  # type: ignore[misc]
            deadlines = [w.since for w in batch if w.since is not None]
            beam = self._beam_for(min(deadlines) if deadlines else None, len(ids))
            t0 = time.perf_counter()
            categories = None
            if any(w.categories is not None for w in batch):
                categories = ItemCategories.concat([
                    ItemCategories.none(len(w.ids)) if w.categories is None else w.categories for w in batch
                ])
            result = self.index.upsert_prepared(ids, rows, versions, ef_construction=beam, categories=categories,
                                                log_seq=log_seq)
            if result.inserted + result.refreshed:
                self._learn_cost(time.perf_counter() - t0, result.inserted + result.refreshed, beam)
            self.stats.reduced_ef_batches += beam < self.index.config.ef_construction
        else:
            result = self.index.delete_prepared(ids, versions, log_seq=log_seq)
        assert result.outcome is not None
        return result.outcome


def _since(since: float) -> float:
    """A change's creation time; a clock far ahead or behind ours counts as now (a
    skewed producer clock must not make every batch look late, or fresh)."""
    now = time.time()
    return since if now - 3600 < since <= now else now


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
