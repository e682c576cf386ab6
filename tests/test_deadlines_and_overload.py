"""Deadlines as the server sees them, and the in-flight limit (README: Status codes).

A client timeout alone only shows the client's own expiry; these tests hold the single
writer (or the search) busy on an Event inside an in-process server, so what is checked
is what the server does when the deadline passes while the call waits on its side."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

from rtindex import Index
from rtindex.client import DeadlineExceeded, IndexClient, Overloaded
from rtindex.core.deadlines import SearchDeadlineExceeded
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

DIM = 8
WAIT = 20.0  # seconds any condition below may take before the test fails


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


class _Gate:
    """Wraps a method so every call announces itself, then blocks until ``open()``."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self.method = method
        self.released = threading.Event()
        self.inside = 0
        self.returned = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.inside += 1
        self.released.wait(WAIT)
        result = self.method(*args, **kwargs)
        with self._lock:
            self.returned += 1
        return result

    def open(self) -> None:
        self.released.set()


def _start(**settings: Any) -> IndexServer:
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", log_level="warning", **settings))
    server.start()
    server.mark_ready()
    return server


@pytest.fixture
def server() -> Iterator[IndexServer]:
    srv = _start()
    yield srv
    srv.stop(grace=1)


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_write_whose_deadline_passes_while_queued_is_answered_deadline_exceeded_by_the_server(
        server: IndexServer) -> None:
    gate = _Gate(server.index.upsert_prepared)
    server.index.upsert_prepared = gate  # type: ignore[method-assign]  # what the writer calls
    target = f"127.0.0.1:{server.port}"
    with IndexClient(target, timeout=WAIT) as client:
        busy, busy_outcome = _in_thread(lambda: client.upsert([1], _vectors(1), versions=[1]))
        try:
            wait_until(lambda: gate.inside == 1, WAIT, "the writer to take the first write")
            with pytest.raises(DeadlineExceeded):
                client.upsert([2], _vectors(1, seed=2), versions=[5], timeout=2.0)
            # the server gave up on the call at its deadline (its RPC thread is free again)
            # while the writer is still held: not only the client stopped waiting
            wait_until(lambda: client.stats().get("server_rpc_Upsert_rejected") == 1, WAIT,
                       "the server to answer the queued write DEADLINE_EXCEEDED")
            assert gate.returned == 0 and 2 not in server.index
        finally:
            gate.open()
            busy.join(WAIT)
        assert busy_outcome["result"].inserted == 1
        # README / client: a write whose deadline passed may still be applied, and
        # retrying it with the same versions is harmless
        wait_until(lambda: client.get([2]).found[0], WAIT, "the queued write to be applied")
        assert client.get([2]).versions.tolist() == [5]
        retry = client.upsert([2], _vectors(1, seed=2), versions=[5])
        assert retry.skipped_stale == 1 and retry.inserted == retry.refreshed == 0


def test_a_search_whose_deadline_passes_mid_batch_is_abandoned_by_the_server(server: IndexServer) -> None:
    server.index.upsert(np.arange(500), _vectors(500))
    deadline_seen = threading.Event()
    finished = threading.Event()
    searched: list[int] = []  # queries of each index call that ran to the end
    original = server.index.search

    def search_past_the_deadline(queries: Any, *args: Any, **kwargs: Any) -> Any:
        deadline_seen.wait(WAIT)  # the batch's deadline passes while the server works on it
        try:
            result = original(queries, *args, **kwargs)
            searched.append(len(queries))
            return result
        finally:
            finished.set()

    server.index.search = search_past_the_deadline  # type: ignore[method-assign]
    with IndexClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
        with pytest.raises(DeadlineExceeded):
            client.search(_vectors(200, seed=1), k=10, timeout=2.0)
        deadline_seen.set()
        assert finished.wait(WAIT)
    assert sum(searched) < 200, "the whole batch was searched although its deadline had passed"


def test_calls_beyond_the_in_flight_limit_get_resource_exhausted() -> None:
    server = _start(max_concurrent_rpcs=2, grpc_threads=4)
    server.index.upsert(np.arange(100), _vectors(100))
    gate = _Gate(server.index.search)
    server.index.search = gate  # type: ignore[method-assign]
    queries = _vectors(2, seed=1)
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
            held = [_in_thread(lambda: client.search(queries, k=5)) for _ in range(2)]
            try:
                wait_until(lambda: gate.inside == 2, WAIT, "two searches in flight")
                with pytest.raises(Overloaded) as refused:
                    client.search(queries, k=5)
                assert refused.value.code.name == "RESOURCE_EXHAUSTED"
            finally:
                gate.open()
                for thread, _ in held:
                    thread.join(WAIT)
            for _, outcome in held:
                assert outcome["result"].ids.shape == (2, 5)  # the calls in flight were served
            assert client.search(queries, k=5).ids.shape == (2, 5)  # and below the limit, calls go through again
    finally:
        gate.open()
        server.stop(grace=1)


@pytest.mark.parametrize("execution", ["per_query", "lockstep"])
def test_index_search_abandons_a_batch_whose_deadline_passed(execution: str) -> None:
    index = Index(dim=DIM, metric="l2", seed=0)
    index.upsert(np.arange(500), _vectors(500))
    queries = _vectors(64, seed=2)
    with pytest.raises(SearchDeadlineExceeded, match="deadline passed"):
        index.search(queries, k=5, execution=execution, deadline=time.monotonic())
    ahead = index.search(queries, k=5, execution=execution, deadline=time.monotonic() + 60)
    np.testing.assert_array_equal(ahead.ids, index.search(queries, k=5, execution=execution).ids)
