"""Recall of a freshly built index against the datasets' exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from rtindex import Index, datasets


def _build(ds: datasets.Dataset, **params: object) -> Index:
    index = Index(dim=ds.base.shape[1], metric=ds.metric, **params)
    index.upsert(np.arange(len(ds.base)), ds.base)
    return index


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_sift5k_l2_recall_at_10_reaches_099_at_ef64(sift5k: datasets.Dataset, precision: str) -> None:
    # sift5k's queries are far from its base (nearest distances bunch together), the
    # hardest of the small sets: it needs the denser graph of M=32
    index = _build(sift5k, M=32, ef_construction=400, traversal_precision=precision)
    res = index.search(sift5k.queries, k=10, ef=64)
    assert datasets.recall_at_k(res.ids, sift5k.ground_truth, 10) >= 0.99


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_glove25_cosine_recall_at_10_reaches_099_at_ef64(glove25: datasets.Dataset, precision: str) -> None:
    index = _build(glove25, M=16, ef_construction=200, traversal_precision=precision)
    res = index.search(glove25.queries, k=10, ef=64)
    assert datasets.recall_at_k(res.ids, glove25.ground_truth, 10) >= 0.99


def test_search_scores_are_the_metric_and_sorted_best_first(sift5k: datasets.Dataset) -> None:
    index = _build(sift5k, M=16, ef_construction=100)
    res = index.search(sift5k.queries[:20], k=10, ef=64)
    expected = -((sift5k.queries[:20, None, :] - sift5k.base[res.ids]) ** 2).sum(-1)
    np.testing.assert_allclose(res.scores, expected, rtol=1e-4)
    assert np.all(np.diff(res.scores, axis=1) <= 0)
    assert np.all(res.hops > 0) and np.all(res.evaluations >= res.hops)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_every_metric_matches_brute_force_on_clustered_data(metric: str, clustered_64: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    base = clustered_64[:5000] * rng.uniform(0.5, 2.0, (5000, 1)).astype(np.float32)  # unequal norms
    queries = clustered_64[-200:]
    index = Index(dim=64, metric=metric, M=16, ef_construction=200)
    index.upsert(np.arange(5000) * 3 + 11, base)  # ids are not row numbers
    res = index.search(queries, k=10, ef=128)
    truth = datasets.exact_knn(base, queries, 10, metric, base_ids=np.arange(5000) * 3 + 11)
    assert datasets.recall_at_k(res.ids, truth, 10) >= 0.98


def test_float16_traversal_finds_what_float32_finds_with_exact_scores(sift5k: datasets.Dataset) -> None:
    results = {}
    for precision in ("float16", "float32"):
        index = _build(sift5k, M=16, ef_construction=200, traversal_precision=precision)
        results[precision] = index.search(sift5k.queries, k=10, ef=64)
    half, full = results["float16"], results["float32"]
    assert abs(datasets.recall_at_k(half.ids, sift5k.ground_truth, 10)
               - datasets.recall_at_k(full.ids, sift5k.ground_truth, 10)) <= 0.01
    exact = -((sift5k.queries[:, None, :] - sift5k.base[half.ids]) ** 2).sum(-1)
    np.testing.assert_allclose(half.scores, exact, rtol=1e-4)  # rescored in float32


def test_float16_traversal_refuses_values_beyond_its_range() -> None:
    index = Index(dim=4, traversal_precision="float16")
    with pytest.raises(ValueError, match="beyond float16 range"):
        index.upsert([1], np.array([[1e6, 0, 0, 0]], np.float32))
    assert len(index) == 0
