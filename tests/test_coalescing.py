"""Request coalescing (``--coalesce on``): concurrent Search calls merged into one index
call get exactly the answers they would get alone, and one caller's bad input is its
own error."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rtindex.client import IndexClient, IndexClientError
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

DIM = 16


def test_merged_searches_answer_each_caller_as_alone_and_keep_bad_input_to_its_sender() -> None:
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((2000, DIM)).astype(np.float32)
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", log_level="warning", warm_up="off",
                                      coalesce="on", coalesce_wait_ms=5, grpc_threads=32))
    server.start()
    server.mark_ready()
    queries = rng.standard_normal((400, DIM)).astype(np.float32)
    expected = server.index.search(queries, k=10, ef=64)
    got: dict[int, np.ndarray] = {}
    errors: list[str] = []
    try:
        with IndexClient(f"127.0.0.1:{server.port}") as client:
            client.upsert(np.arange(len(rows)), rows)
            expected = server.index.search(queries, k=10, ef=64)

            def caller(t: int) -> None:
                with IndexClient(f"127.0.0.1:{server.port}") as own:
                    for i in range(t, len(queries), 16):
                        got[i] = own.search(queries[i : i + 1], k=10, ef=64).ids[0]
                        if i % 50 == 0:  # a bad query among good ones: refused alone
                            try:
                                own.search(np.full((1, DIM), np.nan, np.float32), k=10, ef=64)
                            except IndexClientError as exc:
                                errors.append(str(exc))

            threads = [threading.Thread(target=caller, args=(t,)) for t in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
    finally:
        server.stop(grace=1)
    assert len(got) == len(queries)
    np.testing.assert_array_equal(np.stack([got[i] for i in range(len(queries))]), expected.ids)
    assert len(errors) == len(range(0, len(queries), 50)) and all("INVALID_ARGUMENT" in e for e in errors)
    stats = server.servicer.coalescer.stats  # type: ignore[union-attr]
    assert stats.calls >= len(queries) and stats.batches < stats.calls  # some calls did share an index call


@pytest.mark.parametrize("k", [3, [2, 4]])
def test_merged_category_searches_keep_their_quotas(k: object) -> None:
    rng = np.random.default_rng(6)
    rows = rng.standard_normal((300, DIM)).astype(np.float32)
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", log_level="warning", warm_up="off",
                                      coalesce="on"))
    server.start()
    server.mark_ready()
    try:
        with IndexClient(f"127.0.0.1:{server.port}") as client:
            client.upsert(np.arange(300), rows, categories=[[i % 2] for i in range(300)])
            cats = [0, 1] if isinstance(k, list) else [1]
            alone = server.index.search(rows[:5], k=k, ef=64, categories=cats)
            merged = [client.search(rows[i : i + 1], k=k, ef=64, categories=cats).ids[0] for i in range(5)]
            np.testing.assert_array_equal(np.stack(merged), alone.ids)
    finally:
        server.stop(grace=1)
