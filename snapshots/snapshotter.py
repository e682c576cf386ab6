"""When snapshots are taken: on demand (gRPC ``Snapshot``, ``rtindex snapshot``), every
``interval`` seconds and/or every ``every_ops`` applied writes, and at shutdown.

One snapshot at a time: the index state is copied into shared memory while writes wait
(searches go on), then a helper process writes it to disk while the index serves and
takes writes again (``writer_process``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from rtindex.core.index import Index
from rtindex.snapshots.store import Progress, SnapshotInfo, SnapshotStore
from rtindex.snapshots.writer_process import SnapshotWriterProcess

log = logging.getLogger("rtindex.snapshots")


class SnapshotObserver(Protocol):
    """Told of every snapshot written, on the snapshot thread: how the server's metrics
    (``rtindex.service.metrics.SnapshotMetrics``) see snapshots without this package
    importing them."""

    def snapshot_written(self, info: SnapshotInfo) -> None:
        """info: the snapshot's (``pause_seconds``, ``write_seconds``...)."""


class Snapshotter:
    def __init__(self, index: Index, store: SnapshotStore, capture_with: Callable[[], dict[str, Any]] | None = None,
                 interval: float = 0.0, every_ops: int = 0, after_write: Callable[[], None] | None = None) -> None:
        """after_write: called after each snapshot is written (and older ones pruned),
        e.g. to drop the write-ahead log it covers."""
        self.index = index
        self.after_write = after_write
        self.store = store
        self.capture_with = capture_with
        self.interval = interval
        self.every_ops = every_ops
        self.last: SnapshotInfo | None = None
        self.taken = 0
        self.failed = 0
        self.observer: SnapshotObserver | None = None  # told of every snapshot written (the server's metrics)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rtindex-snapshot")
        self._writer = SnapshotWriterProcess()
        self._stop = threading.Event()
        self._scheduler = threading.Thread(target=self._schedule, name="rtindex-snapshot-timer", daemon=True)
        self._last_at = time.monotonic()
        self._last_ops = self.index.writes_applied

    # ------------------------------------------------------------------ taking one
    def request(self, progress: Progress | None = None) -> Future[SnapshotInfo]:
        """Queue a snapshot; the future gives its info (or the error)."""
        return self._executor.submit(self._take, progress)

    def take(self, progress: Progress | None = None) -> SnapshotInfo:
        return self.request(progress).result()

    def _take(self, progress: Progress | None) -> SnapshotInfo:
        ops = self.index.writes_applied
        try:
            info = self._writer.write(self.store, self.index, self.capture_with, progress)
        except Exception:
            self.failed += 1
            log.exception("snapshot failed", extra={"data_dir": str(self.store.data_dir)})
            raise
        log.info("snapshot written", extra={"seq": info.seq, "path": str(info.path), "items": info.items,
                                            "bytes": info.bytes, "pause_ms": round(info.pause_seconds * 1e3, 2),
                                            "write_seconds": round(info.write_seconds, 3)})
        self.last, self.taken = info, self.taken + 1
        self._last_at, self._last_ops = time.monotonic(), ops
        if self.observer is not None:
            self.observer.snapshot_written(info)
        if self.after_write is not None:
            try:
                self.after_write()
            except Exception:  # the snapshot is fine; what it allows to drop is dropped next time
                log.exception("after a snapshot: cleaning up failed", extra={"seq": info.seq})
        return info

    # ------------------------------------------------------------------ periodic
    def start(self) -> None:
        if self.interval > 0 or self.every_ops > 0:
            self._scheduler.start()

    def _schedule(self) -> None:
        while not self._stop.wait(0.5):
            due_time = self.interval > 0 and time.monotonic() - self._last_at >= self.interval
            due_ops = self.every_ops > 0 and self.index.writes_applied - self._last_ops >= self.every_ops
            if due_time or due_ops:
                with contextlib.suppress(Exception):  # logged in _take; the next period retries
                    self.take()

    def close(self, final: bool = False) -> None:
        """Stop the timer; with ``final``, take one last snapshot (clean shutdown)."""
        self._stop.set()
        if self._scheduler.is_alive():
            self._scheduler.join()
        if final:
            with contextlib.suppress(Exception):
                self.take()
        self._executor.shutdown(wait=True)
        self._writer.close()

    def counters(self) -> dict[str, float]:
        """Snapshots taken and failed; once one was written, its figures too (age in
        seconds, size in bytes, pause in ms, write in s)."""
        out: dict[str, float] = {"snapshots_taken": self.taken, "snapshots_failed": self.failed}
        last = self.last
        if last is not None:
            out.update(snapshot_last_seq=last.seq, snapshot_last_age_s=time.time() - last.created,
                       snapshot_last_bytes=last.bytes, snapshot_last_pause_ms=last.pause_seconds * 1e3,
                       snapshot_last_write_s=last.write_seconds)
        return out
