"""Recall and invariants under endless churn (deletes, inserts, refreshes)."""

from __future__ import annotations

import numpy as np

from rtindex import Index, datasets

DIM = 64
LIVE = 10_000
ROUNDS = 10
PARAMS = dict(metric="ip", M=12, ef_construction=100, seed=1)
K, EF = 10, 24  # a beam small enough that recall is not saturated


def _recall(index: Index, live_ids: np.ndarray, vectors_by_id: dict[int, np.ndarray], queries: np.ndarray) -> float:
    base = np.stack([vectors_by_id[i] for i in live_ids])
    truth = datasets.exact_knn(base, queries, K, "ip", base_ids=live_ids)
    return datasets.recall_at_k(index.search(queries, k=K, ef=EF).ids, truth, K)


def _assert_clean_results(ids: np.ndarray, dead: np.ndarray) -> None:
    assert not np.isin(ids, dead).any(), "a deleted id was returned"
    for row in ids:
        found = row[row >= 0]
        assert len(np.unique(found)) == len(found), f"duplicate ids in a result row: {row}"


def test_recall_and_invariants_hold_through_ten_rounds_of_churn() -> None:
    rng = np.random.default_rng(11)
    pool = datasets.clustered(LIVE + ROUNDS * 1500 + 500, DIM, clusters=60, seed=5)
    queries = pool[-500:]
    vectors_by_id: dict[int, np.ndarray] = {}
    next_row = 0

    def take(n: int) -> np.ndarray:
        nonlocal next_row
        rows = pool[next_row : next_row + n]
        next_row += n
        return rows

    index = Index(dim=DIM, **PARAMS)
    live = np.arange(LIVE, dtype=np.int64)
    x = take(LIVE)
    index.upsert(live, x)
    vectors_by_id.update(zip(live.tolist(), x, strict=True))
    next_id = LIVE
    dead = np.empty(0, np.int64)
    capacities = []
    for _ in range(ROUNDS):
        doomed = rng.choice(live, LIVE // 10, replace=False)
        assert index.delete(doomed).deleted == len(doomed)
        live = np.setdiff1d(live, doomed)
        dead = np.concatenate([dead, doomed])
        _assert_clean_results(index.search(queries[:100], k=K, ef=EF).ids, dead)

        new_ids = np.arange(next_id, next_id + LIVE // 10, dtype=np.int64)
        next_id += len(new_ids)
        x = take(len(new_ids))
        assert index.upsert(new_ids, x).inserted == len(new_ids)
        vectors_by_id.update(zip(new_ids.tolist(), x, strict=True))
        live = np.concatenate([live, new_ids])

        refreshed = rng.choice(live, LIVE * 4 // 100, replace=False)
        x = take(len(refreshed))
        assert index.upsert(refreshed, x).refreshed == len(refreshed)
        vectors_by_id.update(zip(refreshed.tolist(), x, strict=True))

        assert len(index) == len(live) == LIVE
        _assert_clean_results(index.search(queries, k=K, ef=EF).ids, dead)
        stats = index.stats()
        assert stats["node_slots_in_use"] <= 1.25 * LIVE, stats
        assert stats["item_slots_in_use"] <= 1.25 * LIVE, stats
        capacities.append(stats["node_capacity"])

    assert capacities[-1] == capacities[1], f"capacity kept growing under churn: {capacities}"
    stored = index.get(live)
    assert stored.found.all()
    np.testing.assert_array_equal(stored.vectors, np.stack([vectors_by_id[i] for i in live]))

    churned = _recall(index, live, vectors_by_id, queries)
    fresh = Index(dim=DIM, **PARAMS)
    fresh.upsert(live, np.stack([vectors_by_id[i] for i in live]))
    rebuilt = _recall(fresh, live, vectors_by_id, queries)
    assert churned >= rebuilt - 0.005, f"recall after churn {churned:.4f} vs fresh build {rebuilt:.4f}"
