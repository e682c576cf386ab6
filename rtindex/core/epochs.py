"""Epoch-based reclamation: a slot freed by the writer is reused only once every search
that might still read it has finished.

A search enters with the current epoch. The writer retires slots under the epoch
``advance()`` returns and bumps the counter; slots retired at epoch r are safe to reuse
once every active search entered after r.
"""

from __future__ import annotations

import threading
from collections import Counter


class ReaderEpochs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = 1
        self._active: Counter[int] = Counter()

    def reading(self) -> _Reading:
        """Context manager marking one search: ``with epochs.reading(): ...``."""
        return _Reading(self)

    def _enter(self) -> int:
        with self._lock:
            epoch = self._epoch
            self._active[epoch] += 1
            return epoch

    def _exit(self, epoch: int) -> None:
        with self._lock:
            self._active[epoch] -= 1
            if self._active[epoch] == 0:
                del self._active[epoch]

    def advance(self) -> int:
        """Close the current epoch; returns it (the retire stamp for freed slots)."""
        with self._lock:
            epoch = self._epoch
            self._epoch += 1
            return epoch

    def oldest_active(self) -> int:
        """Slots retired at an epoch strictly below this are safe to reuse."""
        with self._lock:
            return min(self._active) if self._active else self._epoch

    @property
    def active_readers(self) -> int:
        with self._lock:
            return sum(self._active.values())


class _Reading:
    """A plain class rather than @contextmanager: it sits on every search call."""

    __slots__ = ("_epoch", "_epochs")

    def __init__(self, epochs: ReaderEpochs) -> None:
        self._epochs = epochs
        self._epoch = 0

    def __enter__(self) -> int:
        self._epoch = self._epochs._enter()
        return self._epoch

    def __exit__(self, *exc: object) -> None:
        self._epochs._exit(self._epoch)
