"""Worker threads and per-worker scratch buffers.

Kernels are compiled with ``nogil=True``; a batch is cut into chunks that run on a
thread pool. This (rather than numba's parallel threading layers) keeps concurrent
callers safe: a search thread and the writer may both run kernels at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numba
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
    """Reusable scratch sets; a caller takes one per running chunk and gives it back.

    Each set holds a visited array as long as the node table, so idle sets are few
    (``max_idle``) and those left too small by a grown table are dropped.
    """

    def __init__(self, max_degree0: int, max_idle: int) -> None:
        self._lock = threading.Lock()
        self._idle: list[Scratch] = []
        self._block = max_degree0
        self._max_idle = max_idle
        self._capacity = 0

    def acquire(self, node_capacity: int, beam: int, results: int = 0) -> Scratch:
        # pool = candidate pool of a repair: a node's row plus the rows of its neighbors
        pool = max(beam, results, self._block * (self._block + 1))
        with self._lock:
            if node_capacity > self._capacity:  # the table grew: older sets are too small
                self._capacity = node_capacity
                self._idle = [s for s in self._idle if s.visited.shape[0] >= node_capacity]
            for i, s in enumerate(self._idle):
                # every condition is checked: a search still reading older, smaller
                # tables returns smaller sets, and a kernel must never get one
                if s.visited.shape[0] >= node_capacity and s.res_key.shape[0] >= beam and s.pool_node.shape[0] >= pool:
                    return self._idle.pop(i)
        return _new_scratch(node_capacity, beam, pool, self._block)

    def release(self, scratch: Scratch) -> None:
        with self._lock:
            if scratch.visited.shape[0] < self._capacity:
                return  # sized for tables that have grown since: let it go
            self._idle.append(scratch)
            if len(self._idle) > self._max_idle:
                self._idle.pop(0)

    def nbytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for s in self._idle for a in s)


_executors: dict[int, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def shared_executor(threads: int) -> ThreadPoolExecutor:
    """One pool per thread count for the whole process: indexes share their workers
    instead of each starting its own threads."""
    with _executors_lock:
        pool = _executors.get(threads)
        if pool is None:
            pool = _executors[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"rtindex-{threads}")
        return pool


class Workers:
    """Runs ``task(start, stop, scratch)`` over chunks of a range on a thread pool."""

    def __init__(self, threads: int, scratch: ScratchPool) -> None:
        self.threads = max(1, threads)
        self.scratch = scratch
        self._pool = shared_executor(self.threads) if self.threads > 1 else None

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
        # every chunk ends before an error of one leaves: the caller's reader epoch (and
        # the slots it protects) must outlive all the chunks that read the tables
        wait(futures)
        return [f.result() for f in futures]

    def run_shared(self, n: int, task: Callable[[Scratch], object], node_capacity: int, beam: int,
                   results: int = 0, min_share: int = 1) -> list[object]:
        """Run ``task(scratch)`` on up to one thread per worker (fewer when ``n`` items
        make fewer than ``min_share`` each); the tasks split the items among themselves
        (a shared counter in the kernel), so a thread that is ahead takes more."""
        if n == 0:
            return []
        tasks = max(1, min(self.threads, n // max(1, min_share)))
        return self.run(tasks, lambda _lo, _hi, scratch: task(scratch), node_capacity, beam, results,
                        chunks_per_thread=1)

    def close(self) -> None:
        """Forget the pool (it is shared and lives as long as the process)."""
        self._pool = None


class BoundKernel:
    """Calls a numba kernel without the dispatcher's per-call type resolution, which
    costs several µs on namedtuple-of-arrays arguments (a third of a single-query
    search's overhead). The overload is looked up once, from the types of the first
    call; callers must keep argument types fixed (ours are: dtypes and layouts of the
    tables never change). Falls back to the dispatcher if no exact overload exists."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher
        self._entry: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        entry = self._entry
        if entry is not None:
            return entry(*args)
        result = self._dispatcher(*args)
        types = tuple(numba.typeof(a) for a in args)
        overload = self._dispatcher.overloads.get(types)
        if overload is not None:
            self._entry = overload.entry_point
        return result
