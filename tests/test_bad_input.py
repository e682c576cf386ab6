"""Bad input gets a ValueError that says what was wrong, and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from rtindex import Index

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
    ("wrong dimension", lambda: ([200, 201], np.ones((2, DIM + 1), np.float32)), "dimension 9"),
    ("NaN in a vector", lambda: ([200, 201, 202], _nan_row()), r"rows \[1\] contain NaN"),
    ("infinity in a vector", lambda: ([200, 201, 202], _inf_row()), r"rows \[2\] contain NaN or infinity"),
    ("float64 beyond float32", lambda: ([200], np.full((1, DIM), 1e300)), "beyond float32"),
    ("NaN id", lambda: (np.array([200.0, np.nan]), _good()), "NaN or infinity"),
    ("fractional id", lambda: (np.array([200.5, 201.0]), _good()), "whole numbers"),
    ("negative id", lambda: ([200, -5], _good()), "must be >= 0"),
    ("duplicate ids", lambda: ([200, 200], _good()), r"duplicate ids in one batch \[200\]"),
    ("empty batch", lambda: (np.array([], np.int64), np.empty((0, DIM), np.float32)), "empty batch"),
    ("count mismatch", lambda: ([200, 201, 202], _good()), "3 ids but 2 vectors"),
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
    ("wrong dimension", {"queries": np.ones((1, DIM - 1), np.float32)}, "dimension 7"),
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
