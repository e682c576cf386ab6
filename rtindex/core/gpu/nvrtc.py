"""CUDA C sources of the GPU backend and an NVRTC compile check that needs no GPU.

``kernels/*.cu`` hold the device code; at run time they are loaded with
``cupy.RawModule`` (rtindex/core/gpu/search.py). CI has no GPU, and CuPy's own compile path
looks up the device, so ``compile_source`` calls NVRTC through CuPy's low-level bindings
(NVRTC 12 from the ``nvidia-cuda-nvrtc-cu12`` wheel, installed by the ``gpu`` extra) and
returns the CUBIN for a given architecture, or raises with NVRTC's log.
"""

from __future__ import annotations

from pathlib import Path

import rtindex.kernels

# the CUDA C sources sit beside the numba kernels (installed as rtindex.kernels)
KERNEL_DIR = Path(rtindex.kernels.__file__).resolve().parent
# the options the runtime loader uses too (RawModule adds the architecture itself)
OPTIONS = ("-std=c++17",)


def kernel_sources() -> list[Path]:
    """Every CUDA C source of the project (kernels/*.cu), sorted."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def read_source(name: str) -> str:
    return (KERNEL_DIR / name).read_text()


def compile_source(path: Path, arch: str) -> bytes:
    """CUBIN of one .cu file for ``arch`` (e.g. "sm_80"). Raises RuntimeError with the
    compiler log on errors. Needs ``cupy`` and NVRTC, not a GPU."""
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(path.read_text(), path.name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, [f"-arch={arch}", *OPTIONS])
        except nvrtc.NVRTCError as exc:
            raise RuntimeError(f"{path.name} ({arch}): {exc}\n{nvrtc.getProgramLog(program)}") from None
        log = nvrtc.getProgramLog(program).strip()
        if "warning" in log:
            raise RuntimeError(f"{path.name} ({arch}) compiled with warnings:\n{log}")
        return nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
