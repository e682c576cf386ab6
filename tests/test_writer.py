"""The single writer's freshness policy: a live stream's batch that would miss its
freshness budget is linked with a narrower beam; writes without a deadline (gRPC,
catch-up) always get the full ef_construction.

What "late" and "slow" mean is set by the test, not by this machine's speed: the writer
module's clock is replaced by ``FakeClock``, which only moves when an upsert is applied,
by a fixed cost per id (``COST_PER_ID_S``, of the order of the README's measured cost)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rtindex import Index, datasets
from rtindex.core import writer as writer_module
from rtindex.core.writer import FIXED_COST_SHARE, Writer

DIM = 32
COST_PER_ID_S = 0.0005  # what one insert "takes" at the full beam: 200 ids = 100 ms, far over a 20 ms budget


class FakeClock:
    """Stands in for the ``time`` module inside rtindex.core.writer: ``time()`` (when a
    change was produced) and ``perf_counter()`` (how long an apply took) both read ``now``,
    which the patched ``Index.upsert_prepared`` advances by ``COST_PER_ID_S`` per id."""

    def __init__(self) -> None:
        self.now = 1.7e9  # a plausible wall-clock time: the writer clamps far-off producer times to now

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(writer_module, "time", fake)
    return fake


@pytest.fixture()
def index(clock: FakeClock) -> Index:
    index = Index(dim=DIM, metric="ip", M=8, ef_construction=100, threads=2)
    data = datasets.clustered(3000, DIM, seed=1)
    index.upsert(np.arange(3000), data)
    index.beams = []  # type: ignore[attr-defined]  # the ef_construction of each applied upsert, in order
    index.upsert_prepared = _costing(index, clock)  # type: ignore[method-assign]
    return index


def _costing(index: Index, clock: FakeClock) -> Callable[..., Any]:
    """Index.upsert_prepared that records its beam and advances the clock by the batch's cost."""
    original = index.upsert_prepared

    def upsert_prepared(ids: np.ndarray, *args: Any, ef_construction: int | None = None, **kwargs: Any) -> Any:
        index.beams.append(ef_construction)  # type: ignore[attr-defined]
        result = original(ids, *args, ef_construction=ef_construction, **kwargs)
        clock.now += COST_PER_ID_S * len(ids)
        return result

    return upsert_prepared


def _rows(n: int, seed: int) -> np.ndarray:
    return datasets.clustered(n, DIM, seed=seed)


def _upsert(writer: Writer, first: int, n: int, since: float | None) -> None:
    ids = np.arange(first, first + n)
    result = writer.upsert(ids, _rows(n, first), None, since).result(30)
    assert result.inserted == n


def test_a_late_stream_batch_is_linked_with_a_narrower_beam(index: Index, clock: FakeClock) -> None:
    writer = Writer(index, freshness_budget_s=0.02, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 200, since=None)  # no deadline: full beam (and the cost is learnt)
        assert writer.stats.reduced_ef_batches == 0 and index.stats()["nodes_reduced_ef"] == 0
        _upsert(writer, 20_000, 200, since=clock.time() - 1.0)  # produced 1 s ago: already late
        assert writer.stats.reduced_ef_batches == 1
        assert index.beams == [100, 16]  # type: ignore[attr-defined]  # no time left at all: the floor
        assert index.stats()["nodes_reduced_ef"] == 200
        # what was linked with the narrow beam is searchable like the rest
        found = index.search(_rows(200, 20_000), k=10, ef=64).ids
        assert np.mean([20_000 + i in row for i, row in enumerate(found)]) >= 0.97
    finally:
        writer.close()


def test_a_fresh_batch_that_fits_the_budget_keeps_the_full_beam(index: Index, clock: FakeClock) -> None:
    writer = Writer(index, freshness_budget_s=0.02, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 100, since=None)
        _upsert(writer, 20_000, 30, since=clock.time() - 0.004)  # 15 ms of work, 16 ms left: fits
        assert writer.stats.reduced_ef_batches == 0
        assert index.beams == [100, 100]  # type: ignore[attr-defined]
    finally:
        writer.close()


def test_a_batch_that_does_not_fit_gets_the_widest_beam_that_does(index: Index, clock: FakeClock) -> None:
    budget = 0.02
    writer = Writer(index, freshness_budget_s=budget, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 200, since=None)
        age = 0.01
        _upsert(writer, 20_000, 30, since=clock.time() - age)  # 15 ms of work at the full beam, 10 ms left
        beam = index.beams[-1]  # type: ignore[attr-defined]
        assert 16 < beam < 100 and writer.stats.reduced_ef_batches == 1

        def predicted_s(b: int) -> float:  # the writer's cost model: a fixed share, the rest grows with the beam
            return 30 * COST_PER_ID_S * (FIXED_COST_SHARE + (1 - FIXED_COST_SHARE) * b / 100)

        assert predicted_s(beam) <= budget - age < predicted_s(beam + 1)
    finally:
        writer.close()


@pytest.mark.parametrize(("budget", "min_items", "since_s_ago"), [
    (0.0, 1000, 10.0),  # budget 0: the policy is off
    (0.02, 100_000, 10.0),  # the graph is not established yet
    (0.02, 1000, None),  # no deadline (gRPC write, catch-up)
])
def test_the_full_beam_is_kept(index: Index, clock: FakeClock, budget: float, min_items: int,
                               since_s_ago: float | None) -> None:
    writer = Writer(index, freshness_budget_s=budget, ef_construction_min=16, reduced_ef_min_items=min_items)
    try:
        _upsert(writer, 10_000, 100, since=None)
        _upsert(writer, 20_000, 100, since=None if since_s_ago is None else clock.time() - since_s_ago)
        assert writer.stats.reduced_ef_batches == 0 and index.stats()["nodes_reduced_ef"] == 0
        assert index.beams == [100, 100]  # type: ignore[attr-defined]
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


def test_a_tiny_late_batch_keeps_the_full_beam(index: Index, clock: FakeClock) -> None:
    """Its delay is transit, not the writer: a narrower beam would gain nothing. Its
    work (2 ids, 1 ms) is under a quarter of the budget; that of 20 ids (10 ms) is not."""
    writer = Writer(index, freshness_budget_s=0.02, ef_construction_min=16, reduced_ef_min_items=1000)
    try:
        _upsert(writer, 10_000, 200, since=None)
        _upsert(writer, 20_000, 2, since=clock.time() - 1.0)
        assert writer.stats.reduced_ef_batches == 0
        _upsert(writer, 30_000, 20, since=clock.time() - 1.0)
        assert writer.stats.reduced_ef_batches == 1
    finally:
        writer.close()
