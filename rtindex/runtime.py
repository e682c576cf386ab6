"""Worker threads and per-worker scratch buffers.

Kernels are compiled with ``nogil=True``; a batch is cut into chunks that run on a
thread pool. This (rather than numba's parallel threading layers) keeps concurrent
callers safe: a search thread and the writer may both run kernels at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rtindex.kernels.layout import Scratch


def _new_scratch(node_capacity: int, beam: int, pool: int, block: int) -> Scratch:
    cand = 2 * beam + 2 * block + 16
    return Scratch(
        visited=np.zeros(node_capacity, np.uint16),
        stamp=np.zeros(1, np.uint16),
        cand_key=np.empty(cand, np.float32),
        cand_val=np.empty(cand, np.int32),
        res_key=np.empty(beam, np.float32),
        res_val=np.empty(beam, np.int32),
        block=np.empty(block, np.int32),
        pool_node=np.empty(pool, np.int32),
        pool_score=np.empty(pool, np.float32),
        selected=np.empty(pool, np.int32),
    )


class ScratchPool:
    """Reusable scratch sets; a caller takes one per running chunk and gives it back."""

    def __init__(self, max_degree0: int) -> None:
        self._lock = threading.Lock()
        self._idle: list[Scratch] = []
        self._block = max_degree0

    def acquire(self, node_capacity: int, beam: int, results: int = 0) -> Scratch:
        # pool = candidate pool of a repair: a node's row plus the rows of its neighbors
        pool = max(beam, results, self._block * (self._block + 1))
        with self._lock:
            for i, s in enumerate(self._idle):
                if (
                    s.visited.shape[0] >= node_capacity
                    and s.res_key.shape[0] >= beam
                    and s.pool_node.shape[0] >= pool
                ):
                    return self._idle.pop(i)
            if len(self._idle) > 64:
                self._idle.pop(0)
        return _new_scratch(node_capacity, beam, pool, self._block)

    def release(self, scratch: Scratch) -> None:
        with self._lock:
            self._idle.append(scratch)

    def nbytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for s in self._idle for a in s)


class Workers:
    """Runs ``task(start, stop, scratch)`` over chunks of a range on a thread pool."""

    def __init__(self, threads: int, scratch: ScratchPool) -> None:
        self.threads = max(1, threads)
        self.scratch = scratch
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rtindex") if self.threads > 1 else None

    def run(
        self,
        n: int,
        task: Callable[[int, int, Scratch], object],
        node_capacity: int,
        beam: int,
        results: int = 0,
        min_chunk: int = 1,
        chunks_per_thread: int = 4,
    ) -> list[object]:
        """Split range(n) into chunks (at least ``min_chunk`` long); returns task results."""
        if n == 0:
            return []
        n_chunks = min(self.threads * chunks_per_thread, max(1, n // max(1, min_chunk)))

        def run_chunk(lo: int, hi: int) -> object:
            scratch = self.scratch.acquire(node_capacity, beam, results)
            try:
                return task(lo, hi, scratch)
            finally:
                self.scratch.release(scratch)

        if n_chunks == 1:
            return [run_chunk(0, n)]
        bounds = [n * i // n_chunks for i in range(n_chunks + 1)]
        if self._pool is None:
            return [run_chunk(bounds[i], bounds[i + 1]) for i in range(n_chunks)]
        futures = [self._pool.submit(run_chunk, bounds[i], bounds[i + 1]) for i in range(n_chunks)]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
