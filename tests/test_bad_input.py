"""Bad input gets a ValueError that says what was wrong, and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from rtindex import Index
from rtindex.core import validation

DIM = 8


@pytest.fixture
def index() -> Index:
    idx = Index(dim=DIM, metric="l2")
    idx.upsert(np.arange(100), np.random.default_rng(0).standard_normal((100, DIM)).astype(np.float32))
    return idx


def _fingerprint(index: Index) -> tuple:
    q = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    res = index.search(q, k=10, ef=32)
    stats = index.stats()
    return len(index), res.ids.tobytes(), stats["nodes_live"], stats["node_slots_in_use"], stats["inserted"]


def _good(n: int = 2) -> np.ndarray:
    return np.ones((n, DIM), np.float32)


def _nan_row() -> np.ndarray:
    x = _good(3)
    x[1, 2] = np.nan
    return x


def _inf_row() -> np.ndarray:
    x = _good(3)
    x[2, 0] = np.inf
    return x


UPSERTS = [
    ("wrong dimension", lambda: ([200, 201], np.ones((2, DIM + 1), np.float32)), "dim=9, the index has dimension 8"),
    ("NaN in a vector", lambda: ([200, 201, 202], _nan_row()), r"rows \[1\]: embedding contains NaN"),
    ("infinity in a vector", lambda: ([200, 201, 202], _inf_row()), r"rows \[2\]: embedding contains NaN or infinity"),
    ("float64 beyond float32", lambda: ([200], np.full((1, DIM), 1e300)), "beyond float32"),
    ("NaN id", lambda: (np.array([200.0, np.nan]), _good()), "NaN or infinity"),
    ("fractional id", lambda: (np.array([200.5, 201.0]), _good()), "whole numbers"),
    ("negative id", lambda: ([200, -5], _good()), "must be >= 0"),
    ("duplicate ids", lambda: ([200, 200], _good()), r"duplicate ids in one batch \[200\]"),
    ("empty batch", lambda: (np.array([], np.int64), np.empty((0, DIM), np.float32)), "empty batch"),
    ("count mismatch", lambda: ([200, 201, 202], _good()), "3 ids but 2 embeddings"),
    ("3-D vectors", lambda: ([200], np.ones((1, 1, DIM), np.float32)), "2-D array"),
    ("string ids", lambda: (["a", "b"], _good()), "must be integers"),
    ("string vectors", lambda: ([200], np.array([["x"] * DIM])), "must be numeric"),
]


@pytest.mark.parametrize(("case", "make", "message"), UPSERTS, ids=[c[0] for c in UPSERTS])
def test_bad_upsert_is_rejected_and_changes_nothing(index: Index, case: str, make, message: str) -> None:
    before = _fingerprint(index)
    ids, vectors = make()
    with pytest.raises(ValueError, match=message):
        index.upsert(ids, vectors)
    assert _fingerprint(index) == before


@pytest.mark.parametrize("beam", [0, -3, 10_000, 2.5, "64", True])
def test_bad_insert_beam_is_rejected_and_changes_nothing(index: Index, beam: object) -> None:
    before = _fingerprint(index)
    with pytest.raises(ValueError, match=r"ef_construction must be an integer in \[1, "):
        index.upsert([200, 201], _good(), ef_construction=beam)
    assert _fingerprint(index) == before


def test_bad_versions_are_rejected(index: Index) -> None:
    before = _fingerprint(index)
    with pytest.raises(ValueError, match="one per id"):
        index.upsert([200, 201], _good(), versions=[1])
    with pytest.raises(ValueError, match="one per id"):
        index.delete([1, 2], versions=[1.5, 2.5])
    assert _fingerprint(index) == before


def test_cosine_refuses_zero_vectors() -> None:
    idx = Index(dim=DIM, metric="cosine")
    with pytest.raises(ValueError, match="all zeros"):
        idx.upsert([1, 2], np.vstack([np.ones(DIM), np.zeros(DIM)]).astype(np.float32))
    assert len(idx) == 0
    with pytest.raises(ValueError, match="all zeros"):
        idx.search(np.zeros((1, DIM), np.float32), k=1)


DELETES = [
    ("empty batch", np.array([], np.int64), "empty batch"),
    ("duplicate ids", np.array([1, 1]), "duplicate ids"),
    ("negative id", np.array([-1]), "must be >= 0"),
    ("NaN id", np.array([np.nan]), "NaN"),
]


@pytest.mark.parametrize(("case", "ids", "message"), DELETES, ids=[c[0] for c in DELETES])
def test_bad_delete_is_rejected_and_changes_nothing(index: Index, case: str, ids: np.ndarray, message: str) -> None:
    before = _fingerprint(index)
    with pytest.raises(ValueError, match=message):
        index.delete(ids)
    assert _fingerprint(index) == before


SEARCHES = [
    ("wrong dimension", {"queries": np.ones((1, DIM - 1), np.float32)}, "dim=7, the index has dimension 8"),
    ("NaN query", {"queries": np.full((1, DIM), np.nan, np.float32)}, "NaN"),
    ("empty batch", {"queries": np.empty((0, DIM), np.float32)}, "empty batch"),
    ("k zero", {"k": 0}, "k must be a positive integer"),
    ("k negative", {"k": -3}, "k must be a positive integer"),
    ("k not an integer", {"k": 2.5}, "k must be a positive integer"),
    ("ef below k", {"k": 10, "ef": 5}, "ef=5 is smaller than k=10"),
    ("ef zero", {"ef": 0}, "ef must be a positive integer"),
    ("bad level width", {"level_ef": [4, 0]}, r"level_ef\[1\]"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), SEARCHES, ids=[c[0] for c in SEARCHES])
def test_bad_search_is_rejected(index: Index, case: str, kwargs: dict, message: str) -> None:
    args = {"queries": np.ones((2, DIM), np.float32), "k": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        index.search(**args)


def test_a_batch_with_one_bad_row_applies_none_of_it(index: Index) -> None:
    before = _fingerprint(index)
    x = np.ones((50, DIM), np.float32)
    x[49, 0] = np.nan
    with pytest.raises(ValueError):
        index.upsert(np.arange(1000, 1050), x)
    assert _fingerprint(index) == before
    assert 1000 not in index


# ------------------------------------------------------------------ one set of row rules, two edges
def _rows_of_every_kind() -> np.ndarray:
    rows = np.ones((7, DIM), np.float32)
    rows[1, 3] = np.nan
    rows[2, 0] = -np.inf
    rows[3] = 0.0
    rows[4, 5] = 1e5  # beyond float16
    rows[5] = 1e-30  # tiny: its float32 squares underflow
    rows[6] = 1e30  # huge: its float32 squares overflow
    return rows


@pytest.mark.parametrize(("metric", "precision"), [("ip", "float32"), ("l2", "float16"), ("cosine", "float32"),
                                                   ("cosine", "float16")])
def test_the_stream_refuses_the_rows_a_batch_upsert_refuses_for_the_same_reasons(metric: str, precision: str) -> None:
    rows = _rows_of_every_kind()
    streamed = validation.row_problems(rows, metric, precision == "float16")  # what the Kafka consumer dead-letters
    idx = Index(dim=DIM, metric=metric, traversal_precision=precision)
    refused = {}
    for i, row in enumerate(rows):
        try:
            idx.upsert([i], row[None])
        except ValueError as exc:
            refused[i] = str(exc)
    assert set(refused) == set(streamed)
    for i, reason in streamed.items():
        assert refused[i] == f"upsert: rows [0]: {reason}"
    assert {1, 2} <= set(refused)
    assert (3 in refused) == (metric == "cosine")
    assert (4 in refused) == (metric != "cosine" and precision == "float16")  # cosine rows are stored unit-norm


def test_cosine_stores_tiny_and_huge_rows_unit_norm() -> None:
    idx = Index(dim=DIM, metric="cosine", traversal_precision="float32")
    rows = _rows_of_every_kind()[[0, 5, 6]]
    idx.upsert([10, 11, 12], rows)
    stored = idx.get([10, 11, 12]).vectors
    np.testing.assert_allclose(np.linalg.norm(stored.astype(np.float64), axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(stored, np.full_like(stored, DIM**-0.5), rtol=1e-6)
    assert idx.search(rows[2], k=1).ids[0, 0] in (10, 11, 12)  # a huge query is normalised too


def test_a_grpc_write_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtindex.client import IndexClient, InvalidArgument
    from rtindex.service.server import IndexServer
    from rtindex.service.settings import ServerConfig

    calls: list[str] = []
    for name in ("as_ids", "as_matrix", "as_versions", "check_rows"):
        original = getattr(validation, name)
        monkeypatch.setattr(validation, name, lambda *a, _f=original, _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    # warm-up off: its own upserts would count here
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="cosine", log_level="warning", warm_up="off"))
    server.start()
    server.mark_ready()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            assert client.upsert([1, 2], _good(), versions=[1, 1]).inserted == 2
            assert sorted(calls) == ["as_ids", "as_matrix", "as_versions", "check_rows"]
            with pytest.raises(InvalidArgument, match=r"upsert: rows \[1\]: embedding is all zeros"):
                client.upsert([3, 4], np.vstack([np.ones(DIM), np.zeros(DIM)]))
    finally:
        server.stop(grace=1)


def test_a_feature_tensor_whose_shape_overflows_int64_is_refused_with_its_size() -> None:
    from rtindex.api import tensors
    from rtindex.api.v1 import index_pb2

    huge = index_pb2.Tensor(dtype="float32", shape=[65536] * 4, data=b"")  # 2**64 elements: np.prod wraps to 0
    with pytest.raises(ValueError, match=r"feature 'q': shape \[65536, 65536, 65536, 65536\] x float32 needs"):
        tensors.decode(huge, "q")
