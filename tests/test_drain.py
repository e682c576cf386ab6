"""SIGTERM on a real ``rtindex serve`` process (README: Server, client, CLI): health turns
NOT_SERVING, the calls in flight finish, the writes queued behind the writer are applied
before the process exits 0, and with a data directory they survive the restart."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_process import ServerProcess
from waiting import wait_until

from rtindex.client import IndexClient

DIM = 8
WAIT = 60.0  # seconds any condition below may take before the test fails
GATED = str(Path(__file__).with_name("gated_serve.py"))


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _upsert_in_thread(client: IndexClient, ids: np.ndarray) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            vectors = np.random.default_rng(int(ids[0])).standard_normal((len(ids), DIM)).astype(np.float32)
            outcome["result"] = client.upsert(ids, vectors)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_sigterm_turns_not_serving_applies_the_queued_writes_and_exits_zero(tmp_path: Path) -> None:
    gate, data, log = tmp_path / "gate", tmp_path / "data", tmp_path / "server.log"
    gate.mkdir()
    flags = ("--data-dir", str(data), "--snapshot-interval-s", "0", "--grace-seconds", "30", "--threads", "1")
    server = ServerProcess(log, "--dim", str(DIM), *flags, launcher=(GATED, str(gate)))
    writes = [np.arange(w * 100, (w + 1) * 100) for w in range(4)]
    health_channel = grpc.insecure_channel(server.target)
    try:
        with IndexClient(server.target, timeout=WAIT) as client:
            client.wait_until_serving(WAIT)
            first = _upsert_in_thread(client, writes[0])
            wait_until(lambda: _lines(gate / "applying") == 1, WAIT, "the writer to hold the first write")
            queued = [_upsert_in_thread(client, ids) for ids in writes[1:]]
            wait_until(lambda: _lines(gate / "queued") == len(writes), WAIT, "three writes queued behind it")

            watch = health_pb2_grpc.HealthStub(health_channel).Watch(health_pb2.HealthCheckRequest(), timeout=WAIT)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            server.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()  # an open Watch is a call in flight too: it would hold the drain for the grace
            assert all(thread.is_alive() for thread, _ in [first, *queued])  # drained, not dropped

            (gate / "release").touch()
            for thread, outcome in [first, *queued]:
                thread.join(WAIT)
                assert outcome["result"].inserted == 100, outcome.get("error")
        assert server.proc.wait(WAIT) == 0
        stopped = [e for e in server.events() if e.get("msg") == "stopped"]
        assert stopped and stopped[0]["items"] == 400
    finally:
        health_channel.close()
        (gate / "release").touch()
        if server.proc.poll() is None:
            server.kill()

    restarted = ServerProcess(log, *flags)  # the final snapshot holds what the drain applied
    try:
        with IndexClient(restarted.target, timeout=WAIT) as client:
            client.wait_until_serving(WAIT)
            assert client.stats()["items"] == 400
            assert client.get(np.concatenate(writes)).found.all()
    finally:
        restarted.kill()
