"""Python garbage-collector pauses, for ``Stats``: a full (generation 2) collection
stops every Python thread of the server, so its length bounds the tail latency of
writes and RPCs alike."""

from __future__ import annotations

import gc
import time


class GcPauses:
    """Counts collections and their pauses per generation, via ``gc.callbacks``."""

    def __init__(self) -> None:
        self._started = 0.0
        self.collections = [0, 0, 0]
        self.pause_seconds = [0.0, 0.0, 0.0]
        self.max_pause_seconds = [0.0, 0.0, 0.0]

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self._started
        self.collections[generation] += 1
        self.pause_seconds[generation] += pause
        self.max_pause_seconds[generation] = max(self.max_pause_seconds[generation], pause)

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in range(3):
            out[f"python_gc{g}_collections"] = self.collections[g]
            out[f"python_gc{g}_pause_max_ms"] = self.max_pause_seconds[g] * 1e3
            out[f"python_gc{g}_pause_total_ms"] = self.pause_seconds[g] * 1e3
        return out
