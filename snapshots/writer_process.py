"""Snapshots written by a helper process, so the server's searches never wait for disk.

Measured on the development VM: rocksdict's writes hold the GIL (a search thread saw
gaps of 18 ms p99, 47 ms max, while 4 MiB values were written; SST ingestion held it
for 0.4-1.3 s). So the server copies the index state, under the write lock, straight
into shared memory (the only pause, and only writes wait for it), and a separate
process — its own interpreter, its own GIL, nice 10 — writes the RocksDB snapshot from
there. The helper is started once, from the thread that creates it, and dies with the
server (PR_SET_PDEATHSIG), so a crashed server leaves no writer behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from rtindex.core.index import Index
from rtindex.core.results import IndexState
from rtindex.snapshots.store import Progress, SnapshotInfo, SnapshotStore

_done: Any = None  # bytes written so far, shared with the server (set in the helper)
_PR_SET_PDEATHSIG = 1


def _init_helper(done: Any) -> None:
    global _done
    _done = done
    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _write_in_helper(data_dir: str, keep: int, specs: dict[str, tuple[str, tuple, str]],
                     config: dict, meta: dict, extra: dict) -> SnapshotInfo:
    blocks = []
    arrays = {}
    for name, (block_name, shape, dtype) in specs.items():
        block = SharedMemory(block_name)  # the server unlinks it (the tracker is shared, see below)
        blocks.append(block)
        arrays[name] = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)

    def progress(done: int, total: int) -> None:
        _done.value = done
        if os.getppid() == 1:  # the server is gone: stop (it would be a stale writer)
            raise SystemExit(1)

    try:
        return SnapshotStore(data_dir, keep).write(IndexState(config, arrays, meta, extra), progress)
    finally:
        arrays.clear()
        for block in blocks:
            block.close()


def _nbytes(shape: tuple, dtype: np.dtype) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _prefaulted(size: int) -> SharedMemory:
    block = SharedMemory(create=True, size=max(1, size))
    np.ndarray((block.size,), np.uint8, buffer=block.buf)[::4096] = 0  # one write per page
    return block


class SnapshotWriterProcess:
    """Writes index snapshots from a helper process (one at a time)."""

    def __init__(self) -> None:
        # the helper must share the server's resource tracker (it is passed on at spawn
        # when running): then the helper's attaching registers nothing new, and the
        # tracker unlinks the blocks if the server is killed mid-snapshot
        resource_tracker.ensure_running()
        ctx = mp.get_context("spawn")
        self._done = ctx.Value("q", 0, lock=False)
        self._pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_helper, initargs=(self._done,))
        self._pool.submit(os.getpid).result()  # start the helper now, from this (long-lived) thread

    def write(self, store: SnapshotStore, index: Index, capture_with: Callable[[], dict[str, Any]] | None,
              progress: Progress | None = None) -> SnapshotInfo:
        # blocks made (and their pages touched) before the copy, sized from the plan with
        # headroom for writes that land before the lock is taken: the copy under the
        # lock then runs at memcpy speed instead of page-faulting
        blocks = {name: _prefaulted(_nbytes(shape, dtype) * 21 // 20 + 4096)
                  for name, (shape, dtype) in index.export_plan().items()}
        spare = list(blocks.values())
        specs: dict[str, tuple[str, tuple, str]] = {}

        def allocate(name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
            nbytes = _nbytes(shape, dtype)
            if name not in blocks or blocks[name].size < nbytes:  # grew past the headroom
                blocks[name] = SharedMemory(create=True, size=max(1, nbytes))
                spare.append(blocks[name])
            specs[name] = (blocks[name].name, tuple(shape), np.dtype(dtype).str)
            return np.ndarray(shape, dtype, buffer=blocks[name].buf)

        try:
            state = index.export_state(capture_with, allocate)
            total = sum(a.nbytes for a in state.arrays.values())
            state.arrays.clear()  # the helper reads the shared blocks
            self._done.value = 0
            future = self._pool.submit(_write_in_helper, str(store.data_dir), store.keep, specs, state.config,
                                       state.meta, state.extra)
            if progress is not None:
                finished = threading.Event()
                future.add_done_callback(lambda _: finished.set())
                while not finished.wait(0.2):
                    progress(int(self._done.value), total)
            info = future.result()
            if progress is not None:
                progress(total, total)
            return info
        finally:
            for block in spare:
                block.close()
                block.unlink()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
