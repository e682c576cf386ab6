"""``rtindex serve`` as a real process: it starts, serves, and on SIGTERM lets the
in-flight call finish, then exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
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
