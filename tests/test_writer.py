"""The single writer's freshness policy: a live stream's batch that would miss its
freshness budget is linked with a narrower beam; writes without a deadline (gRPC,
catch-up) always get the full ef_construction."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rtindex import Index, datasets
from rtindex.core.writer import Writer

DIM = 32


@pytest.fixture()
def index() -> Index:
    index = Index(dim=DIM, metric="ip", M=8, ef_construction=100, threads=2)
    data = datasets.clustered(3000, DIM, seed=1)
    index.upsert(np.arange(3000), data)
    return index


def _rows(n: int, seed: int) -> np.ndarray:
    return datasets.clustered(n, DIM, seed=seed)


def _upsert(writer: Writer, first: int, n: int, since: float | None) -> None:
    ids = np.arange(first, first + n)
    result = writer.upsert(ids, _rows(n, first), None, since).result(30)
    assert result.inserted == n


def test_a_late_stream_batch_is_linked_with_a_narrower_beam(index: Index) -> None:
    writer = Writer(index, freshness_budget_s=0.02, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 200, since=None)  # no deadline: full beam (and the cost is learnt)
        assert writer.stats.reduced_ef_batches == 0 and index.stats()["nodes_reduced_ef"] == 0
        _upsert(writer, 20_000, 200, since=time.time() - 1.0)  # produced 1 s ago: already late
        assert writer.stats.reduced_ef_batches == 1
        assert index.stats()["nodes_reduced_ef"] == 200
        # what was linked with the narrow beam is searchable like the rest
        found = index.search(_rows(200, 20_000), k=10, ef=64).ids
        assert np.mean([20_000 + i in row for i, row in enumerate(found)]) >= 0.97
    finally:
        writer.close()


def test_a_fresh_small_batch_keeps_the_full_beam(index: Index) -> None:
    writer = Writer(index, freshness_budget_s=5.0, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 100, since=None)
        _upsert(writer, 20_000, 10, since=time.time())
        assert writer.stats.reduced_ef_batches == 0
    finally:
        writer.close()


@pytest.mark.parametrize(("budget", "min_items", "since_s_ago"), [
    (0.0, 1000, 10.0),  # budget 0: the policy is off
    (0.02, 100_000, 10.0),  # the graph is not established yet
    (0.02, 1000, None),  # no deadline (gRPC write, catch-up)
])
def test_the_full_beam_is_kept(index: Index, budget: float, min_items: int, since_s_ago: float | None) -> None:
    writer = Writer(index, freshness_budget_s=budget, ef_construction_min=16, reduced_ef_min_items=min_items)
    try:
        _upsert(writer, 10_000, 100, since=None)
        _upsert(writer, 20_000, 100, since=None if since_s_ago is None else time.time() - since_s_ago)
        assert writer.stats.reduced_ef_batches == 0 and index.stats()["nodes_reduced_ef"] == 0
    finally:
        writer.close()


def test_streaming_with_a_narrow_beam_keeps_recall_on_glove() -> None:
    ds = datasets.load("glove25")
    base, queries = ds.base, ds.queries
    truth = datasets.exact_knn(base, queries, 10, "cosine")
    recalls = {}
    for beam in (200, 64):
        index = Index(dim=base.shape[1], metric="cosine", M=16, ef_construction=200, threads=2)
        index.upsert(np.arange(3000), base[:3000])
        for lo in range(3000, len(base), 250):
            hi = min(len(base), lo + 250)
            index.upsert(np.arange(lo, hi), base[lo:hi], ef_construction=beam)
        recalls[beam] = datasets.recall_at_k(index.search(queries, k=10, ef=64).ids, truth, 10)
        assert index.stats()["nodes_reduced_ef"] == (0 if beam == 200 else len(base) - 3000)
    assert recalls[64] >= recalls[200] - 0.01, recalls


def test_a_tiny_late_batch_keeps_the_full_beam(index: Index) -> None:
    """Its delay is transit, not the writer: a narrower beam would gain nothing."""
    writer = Writer(index, freshness_budget_s=0.02, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 200, since=None)
        _upsert(writer, 20_000, 2, since=time.time() - 1.0)
        assert writer.stats.reduced_ef_batches == 0
    finally:
        writer.close()
