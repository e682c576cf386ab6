"""GPU backend: a device mirror of the index tables, kept current by dirty-row syncs, and
a batched beam search in CUDA C (kernels/*.cu, loaded with ``cupy.RawModule``).

Backend choice (``IndexConfig.device``): "cpu" never touches CuPy; "cuda" needs a
device and raises ``GpuUnavailable`` saying what to do otherwise; "auto" (default) uses
the GPU when CuPy is installed and finds a device, else the CPU, and logs which. The CPU
kernels stay the reference and the fallback: ``Index.search(..., execution="per_query")``
runs them on any index.

Importing this package does not import CuPy; ``attach`` does, when a GPU is used.

Status: the CUDA sources compile for sm_80 and sm_90 under NVRTC (tests/test_gpu.py,
in CI without a GPU). The kernels have not been run on a device in this repository
yet: tests marked ``gpu`` and bench/bench_gpu.py are the checks owed on a GPU machine.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from rtindex.core.gpu.dirty import DirtyRows

if TYPE_CHECKING:
    from rtindex.core.engine import Engine
    from rtindex.core.results import SearchResult

log = logging.getLogger("rtindex.gpu")


class GpuUnavailable(RuntimeError):
    """device="cuda" was asked for and no usable GPU was found."""


@functools.cache
def probe() -> tuple[int, str]:
    """(number of CUDA devices CuPy sees, why none if 0). Cached: asked once per process."""
    try:
        import cupy
    except ImportError:
        return 0, "CuPy is not installed (pip install 'rtindex[gpu]', i.e. cupy-cuda12x)"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, driver too old, no device: CuPy raises CUDARuntimeError
        return 0, f"CuPy found no usable CUDA device ({type(exc).__name__}: {exc})"
    return count, "" if count else "CuPy found no CUDA device"


def resolve_device(setting: str) -> str:
    """"cpu" or "cuda" for a device setting; "cuda" without a GPU raises GpuUnavailable."""
    if setting == "cpu":
        return "cpu"
    count, why = probe()
    if count:
        return "cuda"
    if setting == "cuda":
        raise GpuUnavailable(
            f"device='cuda' was requested but {why}. Install the GPU extra on a machine with an NVIDIA GPU "
            "and driver (pip install 'rtindex[gpu]'), or use device='auto' / 'cpu' (rtindex serve --device cpu)")
    return "cpu"


class GpuBackend:
    """The mirror and the searcher of one index. ``sync`` is called by the writer (under
    the index's write lock) after every applied batch; searches and syncs take turns
    on the mirror's stream (``_lock``), so a search reads one whole batch's state."""

    def __init__(self, engine: Engine) -> None:
        from rtindex.core.gpu.mirror import DeviceMirror
        from rtindex.core.gpu.search import GpuSearcher

        cfg = engine.config
        self.engine = engine
        self.dirty = DirtyRows()
        self.mirror = DeviceMirror(half=engine.search_mode.half)
        self.searcher = GpuSearcher(self.mirror, cfg.dim, engine.search_mode.metric, cfg.max_degree0)
        self._lock = threading.Lock()
        self.upload_all()

    def upload_all(self) -> None:
        with self._lock:
            self.dirty.take()
            self.mirror.upload_all(self.engine.store.tables)

    def sync(self) -> None:
        """Send the rows written since the last sync, and the entry points (a few
        bytes, changed by inserts and deletes without a mark)."""
        with self._lock:
            self.mirror.sync(self.engine.store.tables, self.dirty.take())

    def search(self, queries: np.ndarray, k: int, ef: int, level_widths: np.ndarray, beam: int,
               graph: int = 0) -> SearchResult:
        with self._lock:
            return self.searcher.search(queries, k, ef, level_widths, beam, graph)

    def candidate_rows(self, nodes: Any) -> Any:
        """Device rows of candidate nodes for a neural scorer (see GpuSearcher.candidate_rows)."""
        with self._lock:
            return self.searcher.candidate_rows(nodes)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = self.mirror.report()
            out["gpu_search_buffers_bytes"] = self.searcher.nbytes()
            out["gpu_memory_bytes"] = out["gpu_mirror_bytes"] + out["gpu_search_buffers_bytes"]
            out["gpu_search_launches"] = self.searcher.launches
            out["gpu_search_queries"] = self.searcher.queries
        return out


def attach(engine: Engine) -> GpuBackend | None:
    """Pick the backend for ``engine.config.device``; with the GPU, build the mirror
    and wire the write-path hooks (engine.dirty) and the search route (engine.gpu)."""
    setting = engine.config.device
    device = resolve_device(setting)
    if device == "cpu":
        if setting == "auto":
            log.info("search backend: cpu", extra={"device": "cpu", "reason": probe()[1]})
        return None
    backend = GpuBackend(engine)
    engine.dirty = backend.dirty
    engine.gpu = backend
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props.get("name"), bytes) else str(props.get("name"))
    log.info("search backend: cuda", extra={"device": "cuda", "gpu": name, "setting": setting})
    return backend
