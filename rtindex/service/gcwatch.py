"""Python garbage-collector pauses, for the metrics (``rtindex_python_gc_pause_seconds``,
``Stats``: ``python_gc2_pause_max_ms``...): a full (generation 2) collection stops every
Python thread of the server, so its length bounds the tail latency of writes and RPCs
alike."""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Sequence

# upper bounds of the pause histogram's buckets, seconds
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """Collections and their pauses per generation, via ``gc.callbacks``, kept as
    histogram buckets that the server's metrics read when collected.

    Plain lists, not prometheus_client metrics: a collection can start in any thread at
    any allocation, also inside a metric's update while that thread holds the metric's
    (non-reentrant) lock, and the callback taking that lock again would deadlock. The
    callback runs under the GIL and collections do not nest, so the lists need no lock;
    a reader may see a pause counted in its bucket before its seconds are added."""

    def __init__(self, buckets: Sequence[float] = PAUSE_BUCKETS) -> None:
        self.buckets = tuple(buckets)  # upper bounds, seconds; the last bucket holds longer pauses
        self._started = 0.0
        self.bucket_counts = [[0] * (len(self.buckets) + 1) for _ in range(3)]
        self.pause_seconds = [0.0, 0.0, 0.0]
        self.max_pause_seconds = [0.0, 0.0, 0.0]

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def collections(self, generation: int) -> int:
        """Collections of ``generation`` seen so far."""
        return sum(self.bucket_counts[generation])

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._started
        self.bucket_counts[generation][bisect.bisect_left(self.buckets, pause)] += 1  # bucket: pause <= bound
        self.pause_seconds[generation] += pause
        self.max_pause_seconds[generation] = max(self.max_pause_seconds[generation], pause)
