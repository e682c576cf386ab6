"""The gRPC server over a real channel on 127.0.0.1 (no mocks of grpc)."""

from __future__ import annotations

import gc
import threading

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from waiting import wait_until

from rtindex import Index
from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.client import DeadlineExceeded, IndexClient, InvalidArgument, Overloaded, Unavailable
from rtindex.service.server import SERVICE_NAME, IndexServer
from rtindex.service.settings import ServerConfig

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def server() -> IndexServer:
    srv = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", max_queries=500, max_k=100, max_write_ids=2000,
                                   log_level="warning"))
    srv.start()
    srv.mark_ready()
    yield srv
    srv.stop(grace=1)


@pytest.fixture
def client(server: IndexServer) -> IndexClient:
    with IndexClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        yield c


def _fingerprint(client: IndexClient) -> tuple:
    stats = client.stats()
    probe = client.search(_vectors(3, seed=9), k=5)
    return stats["items"], stats["nodes_live"], probe.ids.tobytes()


def test_every_rpc_round_trips(server: IndexServer, client: IndexClient) -> None:
    x = _vectors(300)
    assert client.upsert(np.arange(300), x).inserted == 300
    res = client.search(x[:20], k=5, ef=32, level_ef=[2])
    assert res.ids.shape == (20, 5) and res.scores.dtype == np.float32
    assert np.mean(res.ids[:, 0] == np.arange(20)) >= 0.95
    np.testing.assert_array_equal(res.ids, server.index.search(x[:20], k=5, ef=32, level_ef=[2]).ids)
    assert (res.hops > 0).all() and (res.evaluations >= res.hops).all()

    moved = -x[7]
    assert client.upsert([7], moved[None], versions=[3]).refreshed == 1
    assert client.upsert([7], x[7][None], versions=[2]).skipped_stale == 1
    got = client.get([7, 999])
    assert got.found.tolist() == [True, False]
    np.testing.assert_array_equal(got.vectors[0], moved)
    assert got.versions.tolist() == [3, -1] and np.isnan(got.vectors[1]).all()

    deleted = client.delete([1, 2, 5000])
    assert deleted.deleted == 2 and deleted.unknown_ids.tolist() == [5000]
    assert not np.isin(client.search(x[:5], k=10).ids, [1, 2]).any()

    stats = client.stats()
    assert stats["items"] == 298 and stats["dim"] == DIM and stats["metric"] == "l2"
    assert stats["server_rpc_Upsert_ok"] >= 3 and stats["write_batches"] >= 1
    gc.collect()  # a full collection is timed and counted
    stats = client.stats()
    assert stats["python_gc2_collections"] >= 1 and stats["python_gc2_pause_max_ms"] > 0


def test_health_goes_serving_and_reflection_lists_the_service() -> None:
    srv = IndexServer(ServerConfig(port=0, dim=DIM, log_level="warning"))
    port = srv.start()
    try:
        with IndexClient(f"127.0.0.1:{port}") as c:
            assert c.health() == "NOT_SERVING"
            srv.mark_ready()
            c.wait_until_serving(timeout=120)  # after the kernel warm-up
            assert c.health(SERVICE_NAME) == "SERVING"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for s in next(answers).list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    finally:
        srv.stop(grace=1)


def _raw(server: IndexServer) -> index_pb2_grpc.IndexServiceStub:
    return index_pb2_grpc.IndexServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


BAD_REQUESTS = [
    ("search wrong dim", "Search", index_pb2.SearchRequest(queries=np.ones(15, "<f4").tobytes(), dim=15, k=3), "dim=15"),
    ("search ragged bytes", "Search", index_pb2.SearchRequest(queries=b"\0" * 70, dim=DIM, k=3), "whole number"),
    ("search empty", "Search", index_pb2.SearchRequest(queries=b"", dim=DIM, k=3), "empty batch"),
    ("search NaN", "Search", index_pb2.SearchRequest(queries=np.full(DIM, np.nan, "<f4").tobytes(), dim=DIM, k=3), "NaN"),
    ("search k zero", "Search", index_pb2.SearchRequest(queries=np.ones(DIM, "<f4").tobytes(), dim=DIM, k=0), "k must be in 1..100"),
    ("search k above max", "Search", index_pb2.SearchRequest(queries=np.ones(DIM, "<f4").tobytes(), dim=DIM, k=101), "1..100"),
    ("search ef below k", "Search", index_pb2.SearchRequest(queries=np.ones(DIM, "<f4").tobytes(), dim=DIM, k=10, ef=5), "smaller than k"),
    ("search too many queries", "Search", index_pb2.SearchRequest(queries=np.ones((501, DIM), "<f4").tobytes(), dim=DIM, k=3), "limit is 500"),
    ("upsert wrong dim", "Upsert", index_pb2.UpsertRequest(ids=[1], embeddings=np.ones(8, "<f4").tobytes(), dim=8), "dimension 16"),
    ("upsert count mismatch", "Upsert", index_pb2.UpsertRequest(ids=[1, 2], embeddings=np.ones(DIM, "<f4").tobytes(), dim=DIM), "2 ids but 1 embeddings"),
    ("upsert Inf", "Upsert", index_pb2.UpsertRequest(ids=[1], embeddings=np.full(DIM, np.inf, "<f4").tobytes(), dim=DIM), "infinity"),
    ("upsert negative id", "Upsert", index_pb2.UpsertRequest(ids=[-4], embeddings=np.ones(DIM, "<f4").tobytes(), dim=DIM), ">= 0"),
    ("upsert duplicate ids", "Upsert", index_pb2.UpsertRequest(ids=[3, 3], embeddings=np.ones(2 * DIM, "<f4").tobytes(), dim=DIM), "duplicate"),
    ("upsert versions count", "Upsert", index_pb2.UpsertRequest(ids=[1], embeddings=np.ones(DIM, "<f4").tobytes(), dim=DIM, versions=[1, 2]), "one per id"),
    ("upsert too many ids", "Upsert", index_pb2.UpsertRequest(ids=list(range(2001)), embeddings=np.ones((2001, DIM), "<f4").tobytes(), dim=DIM), "limit is 2000"),
    ("delete empty", "Delete", index_pb2.DeleteRequest(ids=[]), "empty batch"),
    ("delete negative", "Delete", index_pb2.DeleteRequest(ids=[-1]), ">= 0"),
    ("get empty", "Get", index_pb2.GetRequest(ids=[]), "empty batch"),
    ("search features without a scorer", "Search", index_pb2.SearchRequest(
        k=3, features={"user": index_pb2.Tensor(dtype="int64", shape=[1], data=np.ones(1, "<i8").tobytes())}),
     "scores with the index metric"),
]


@pytest.mark.parametrize(("case", "method", "request_", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_invalid_argument_and_change_nothing(
    server: IndexServer, client: IndexClient, case: str, method: str, request_: object, message: str
) -> None:
    client.upsert(np.arange(50), _vectors(50))
    before = _fingerprint(client)
    with pytest.raises(grpc.RpcError) as err:
        getattr(_raw(server), method)(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert _fingerprint(client) == before  # nothing changed, and the server still answers


def test_client_raises_errors_that_say_what_was_wrong(client: IndexClient) -> None:
    with pytest.raises(InvalidArgument, match="dimension 16") as err:
        client.upsert([1], np.ones((1, 4)))
    assert isinstance(err.value, ValueError)
    with pytest.raises(Unavailable):
        IndexClient("127.0.0.1:1", timeout=1).stats()


def test_deadlines_are_honored(server: IndexServer, client: IndexClient) -> None:
    client.upsert(np.arange(2000), _vectors(2000))
    with pytest.raises(DeadlineExceeded):
        client.search(_vectors(500, seed=3), k=100, ef=2000, timeout=0.001)
    assert client.stats()["items"] == 2000  # the server is fine afterwards


def test_full_write_queue_answers_resource_exhausted() -> None:
    srv = IndexServer(ServerConfig(port=0, dim=DIM, write_queue=1, log_level="warning"))
    srv.start()
    srv.mark_ready()
    gate = threading.Event()
    original = srv.index.upsert_prepared  # what the writer calls

    def slow_upsert(*args: object, **kwargs: object) -> object:
        gate.wait(10)
        return original(*args, **kwargs)

    srv.index.upsert_prepared = slow_upsert  # type: ignore[method-assign]
    results: list[object] = []
    try:
        with IndexClient(f"127.0.0.1:{srv.port}", timeout=10) as c:
            workers = [threading.Thread(target=lambda i=i: results.append(_try_upsert(c, i))) for i in range(4)]
            for w in workers:
                w.start()
            # the writer holds one write, the queue one more: with the writer held, a refusal must come
            wait_until(lambda: any(isinstance(r, Overloaded) for r in results), 30, "a write refused as overloaded")
            gate.set()
            for w in workers:
                w.join()
        assert any(isinstance(r, Overloaded) for r in results), results
        assert any(r == "ok" for r in results), results
    finally:
        gate.set()
        srv.stop(grace=1)


def _try_upsert(c: IndexClient, i: int) -> object:
    try:
        c.upsert([i], _vectors(1, seed=i))
        return "ok"
    except Overloaded as exc:
        return exc


def test_concurrent_clients_see_no_errors_and_no_deleted_ids(server: IndexServer) -> None:
    pool = _vectors(40_000, seed=5)
    target = f"127.0.0.1:{server.port}"
    with IndexClient(target) as c:
        c.upsert(np.arange(1500), pool[:1500])
        c.upsert(np.arange(1500, 3000), pool[1500:3000])
    deleted: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    counts = [0]

    def writer(w: int) -> None:
        rng = np.random.default_rng(w)
        next_id = 100_000 * (w + 1)
        try:
            with IndexClient(target) as c:
                while not stop.is_set():
                    new = np.arange(next_id, next_id + 20)
                    c.upsert(new, pool[rng.integers(0, len(pool), 20)])
                    doomed = new[:10]
                    c.delete(doomed)
                    with lock:
                        deleted.extend(doomed.tolist())
                    next_id += 20
        except BaseException as exc:
            errors.append(exc)

    def reader(r: int) -> None:
        rng = np.random.default_rng(100 + r)
        try:
            with IndexClient(target) as c:
                while not stop.is_set():
                    with lock:
                        gone = np.array(deleted, np.int64)
                    ids = c.search(pool[rng.integers(0, len(pool), 8)], k=10).ids
                    assert not np.isin(ids, gone).any(), "a deleted id came back"
                    counts[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: bool(errors) or (counts[0] > 20 and len(deleted) > 100), 60,
                   "20 searches and 100 deletes running side by side")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[0]
    assert counts[0] > 20 and len(deleted) > 100


def test_a_server_can_wrap_an_existing_index() -> None:
    index = Index(dim=DIM, metric="ip")
    index.upsert(np.arange(10), _vectors(10))
    srv = IndexServer(ServerConfig(port=0, dim=DIM, log_level="warning"), index=index)
    srv.start()
    srv.mark_ready()
    try:
        with IndexClient(f"127.0.0.1:{srv.port}") as c:
            assert c.stats()["items"] == 10
    finally:
        srv.stop(grace=1)


def test_calls_without_a_deadline_work(server: IndexServer) -> None:
    # grpcurl and many clients send no deadline at all
    stub = _raw(server)
    response = stub.Upsert(index_pb2.UpsertRequest(ids=[1, 2], embeddings=np.ones(2 * DIM, "<f4").tobytes(), dim=DIM))
    assert response.inserted == 2
    assert stub.Delete(index_pb2.DeleteRequest(ids=[2, 9])).deleted == 1
    assert stub.Search(index_pb2.SearchRequest(queries=np.ones(DIM, "<f4").tobytes(), dim=DIM, k=1)).num_queries == 1


def test_a_scorer_spec_that_is_not_a_savedmodel_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match="savedmodel:PATH"):
        IndexServer(ServerConfig(port=0, dim=DIM, scorer="onnx:/tmp/model"))


def test_feature_tensors_round_trip_and_bad_ones_are_explained() -> None:
    from rtindex.api import tensors

    features = {"user": np.arange(6, dtype=np.int64).reshape(3, 2), "age": np.array([0.5, 1, 2], np.float32)}
    back = tensors.decode_all(tensors.encode_all(features))
    for name, value in features.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype
    with pytest.raises(ValueError, match="needs 24 bytes"):
        tensors.decode(index_pb2.Tensor(dtype="int64", shape=[3], data=b"\0" * 8), "user")
    with pytest.raises(ValueError, match="not one of"):
        tensors.decode(index_pb2.Tensor(dtype="complex64", shape=[1], data=b"\0" * 8), "user")
