"""Epoch-based reclamation: a slot freed by the writer is reused only once every search
that might still read it has finished.

A search enters with the current epoch. The writer retires slots under the epoch
``advance()`` returns and bumps the counter; slots retired at epoch r are safe to reuse
once every active search entered after r.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class ReaderEpochs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = 1
        self._active: Counter[int] = Counter()

    @contextmanager
    def reading(self) -> Iterator[int]:
        with self._lock:
            epoch = self._epoch
            self._active[epoch] += 1
        try:
            yield epoch
        finally:
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
