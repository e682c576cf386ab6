"""``rtindex serve`` as a real process: it starts, serves, and on SIGTERM lets the
in-flight call finish, then exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess, clean_env

from rtindex.client import IndexClient, IndexClientError


def test_sigterm_drains_the_call_in_flight_then_exits_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--dim", "32", "--threads", "1", "--max-k", "1000")
    proc, port = server.proc, server.port
    try:
        rng = np.random.default_rng(0)
        with IndexClient(f"127.0.0.1:{port}", timeout=60) as client:
            client.wait_until_serving(timeout=30)
            client.upsert(np.arange(4000), rng.standard_normal((4000, 32)).astype(np.float32))
            outcome: dict[str, object] = {}

            def long_search() -> None:
                try:
                    t0 = time.monotonic()
                    res = client.search(rng.standard_normal((2000, 32)).astype(np.float32), k=500, ef=3000)
                    outcome["ids"] = res.ids
                    outcome["seconds"] = time.monotonic() - t0
                except IndexClientError as exc:
                    outcome["error"] = exc

            caller = threading.Thread(target=long_search)
            caller.start()
            time.sleep(0.3)  # the search is running
            proc.send_signal(signal.SIGTERM)
            caller.join(60)
            assert "error" not in outcome, outcome.get("error")
            assert outcome["ids"].shape == (2000, 500)  # type: ignore[union-attr]
            assert outcome["seconds"] > 0.3  # it really was in flight when SIGTERM came  # type: ignore[operator]
        assert proc.wait(timeout=60) == 0
        with pytest.raises(IndexClientError), IndexClient(f"127.0.0.1:{port}", timeout=2) as late:
            late.stats()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_without_a_dimension_says_how_to_set_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "rtindex", "serve", "--port", "0"], capture_output=True,
                          text=True, timeout=60, env=clean_env())
    assert proc.returncode == 2
    assert "--dim" in proc.stderr and "RTINDEX_DIM" in proc.stderr


def test_serving_means_the_kernels_are_compiled(tmp_path: Path) -> None:
    """A fresh install (empty numba cache): health turns SERVING only once every kernel a
    request can reach is compiled, so the first calls after it are as fast as later ones
    (with --warm-up off the first upsert here took 29 s)."""
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    server = ServerProcess(tmp_path / "server.log", "--dim", "32", "--threads", "1", env={"NUMBA_CACHE_DIR": str(cache)})
    try:
        rng = np.random.default_rng(1)
        with IndexClient(server.target, timeout=30) as client:
            assert not any(e.get("msg") == "serving" for e in server.events())  # still compiling
            client.wait_until_serving(timeout=280)
            steps = [e for e in server.events() if e.get("msg") == "kernels ready"]
            assert steps and steps[-1]["done"] == steps[-1]["of"]  # progress lines, every step done

            def timed(call: Callable[[], object]) -> float:
                t0 = time.perf_counter()
                call()
                return time.perf_counter() - t0

            first: list[float] = []
            later: list[list[float]] = []
            for round_ in range(12):
                lo = 100 * round_
                calls = [
                    lambda lo=lo: client.upsert(np.arange(lo, lo + 100), rng.standard_normal((100, 32)).astype(np.float32),
                                                categories=[[lo % 7]] * 100),
                    lambda: client.search(rng.standard_normal((5, 32)).astype(np.float32), k=10),
                    lambda: client.search(rng.standard_normal((1, 32)).astype(np.float32), k=5, categories=[1, 2]),
                    lambda lo=lo: client.delete(np.arange(lo, lo + 40)),
                ]
                times = [timed(c) for c in calls]
                if round_ == 0:
                    first = times
                else:
                    later.append(times)
            typical = np.median(np.array(later), axis=0)
            # a kernel compiled on first use would take seconds here
            for call, (t_first, t_typical) in enumerate(zip(first, typical, strict=True)):
                assert t_first < max(0.5, 10 * t_typical), (call, t_first, t_typical)
    finally:
        server.kill()
