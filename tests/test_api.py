"""The in-process API contract: shapes, padding, growth, versions, stats."""

from __future__ import annotations

import numpy as np
import pytest

from rtindex import Index


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_capacity_grows_without_a_size_given_up_front() -> None:
    index = Index(dim=16, metric="l2", initial_capacity=8)
    x = _vectors(3000)
    for lo in range(0, 3000, 500):
        index.upsert(np.arange(lo, lo + 500), x[lo : lo + 500])
    assert len(index) == 3000
    stats = index.stats()
    assert stats["node_capacity"] >= 3000 and stats["nodes_live"] == 3000
    res = index.search(x[:50], k=1, ef=32)
    assert np.mean(res.ids[:, 0] == np.arange(50)) >= 0.98


def test_search_on_an_empty_index_returns_padding() -> None:
    index = Index(dim=4)
    res = index.search(np.ones((3, 4), np.float32), k=5)
    assert res.ids.shape == (3, 5) and np.all(res.ids == -1) and np.all(np.isneginf(res.scores))


def test_k_above_the_live_count_pads_with_minus_one() -> None:
    index = Index(dim=16, metric="l2")
    index.upsert([5, 6, 7], _vectors(3))
    res = index.search(_vectors(2, seed=1), k=10)
    assert sorted(res.ids[0, :3].tolist()) == [5, 6, 7]
    assert np.all(res.ids[:, 3:] == -1) and np.all(np.isneginf(res.scores[:, 3:]))


def test_upsert_of_an_existing_id_replaces_its_embedding() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(500)
    index.upsert(np.arange(500), x)
    moved = -x[0]
    result = index.upsert([0], moved[None])
    assert (result.inserted, result.refreshed) == (0, 1)
    assert len(index) == 500
    np.testing.assert_array_equal(index.get([0]).vectors[0], moved)
    assert index.search(moved[None], k=1).ids[0, 0] == 0
    assert 0 not in index.search(x[0][None], k=5, ef=64).ids[0]


def test_versions_make_replays_harmless() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(4)
    index.upsert([1, 2], x[:2], versions=[5, 5])
    stale = index.upsert([1, 2], x[2:4], versions=[5, 4])
    assert (stale.inserted, stale.refreshed, stale.skipped_stale) == (0, 0, 2)
    np.testing.assert_array_equal(index.get([1, 2]).vectors, x[:2])
    assert index.delete([1], versions=[3]).skipped_stale == 1
    assert 1 in index
    assert index.delete([1], versions=[6]).deleted == 1
    assert 1 not in index and index.get([2]).versions[0] == 5


def test_delete_reports_unknown_ids_and_deletes_the_rest() -> None:
    index = Index(dim=16)
    index.upsert([1, 2, 3], _vectors(3))
    result = index.delete([2, 99, 100])
    assert result.deleted == 1
    assert sorted(result.unknown_ids.tolist()) == [99, 100]
    assert len(index) == 2 and 2 not in index


def test_a_deleted_id_can_be_inserted_again() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(200)
    index.upsert(np.arange(200), x)
    index.delete([7])
    index.consolidate()
    index.upsert([7], x[7][None])
    assert index.search(x[7][None], k=1).ids[0, 0] == 7
    assert len(index) == 200


def test_deleting_everything_leaves_a_usable_empty_index() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(300)
    index.upsert(np.arange(300), x)
    index.delete(np.arange(300))
    assert len(index) == 0
    assert np.all(index.search(x[:3], k=2).ids == -1)
    index.upsert([1000], x[:1])
    assert index.search(x[:1], k=1).ids[0, 0] == 1000


def test_per_level_beam_widths_are_accepted_and_keep_recall() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(2000)
    index.upsert(np.arange(2000), x)
    res = index.search(x[:100], k=1, ef=32, level_ef=[8, 4])
    assert np.mean(res.ids[:, 0] == np.arange(100)) >= 0.98


def test_same_inputs_and_seed_give_the_same_results() -> None:
    x = _vectors(3000)
    runs = []
    for _ in range(2):
        index = Index(dim=16, metric="ip", seed=3)
        index.upsert(np.arange(3000), x)
        index.delete(np.arange(0, 3000, 7))
        runs.append(index.search(x[:100], k=10, ef=32).ids)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_stats_report_the_tables() -> None:
    index = Index(dim=16)
    index.upsert(np.arange(100), _vectors(100))
    index.delete(np.arange(10))
    stats = index.stats()
    for key in ("items", "nodes_live", "nodes_tombstoned", "node_slots_free", "memory_bytes", "entry_level"):
        assert key in stats
    assert stats["items"] == 90 and stats["memory_bytes"] > 100 * 16 * 4


def test_unknown_options_are_rejected_with_the_valid_ones_listed() -> None:
    with pytest.raises(ValueError, match="unknown Index option"):
        Index(dim=8, ef_constrution=10)
    with pytest.raises(ValueError, match="metric must be one of"):
        Index(dim=8, metric="hamming")


def test_equal_scores_are_ordered_by_id() -> None:
    index = Index(dim=16, metric="l2")
    v = _vectors(1)
    index.upsert([9, 3, 7, 1, 5], np.repeat(v, 5, axis=0))
    res = index.search(v, k=5, ef=16)
    assert res.ids[0].tolist() == [1, 3, 5, 7, 9]


def test_a_replayed_older_upsert_does_not_bring_a_deleted_item_back() -> None:
    index = Index(dim=16, metric="l2")
    x = _vectors(3)
    index.upsert([1], x[:1], versions=[5])
    index.delete([1], versions=[6])
    assert index.upsert([1], x[1:2], versions=[5]).skipped_stale == 1  # replayed
    assert 1 not in index
    index.delete([2], versions=[9])  # the delete of an id arrives before its upsert
    assert index.upsert([2], x[2:3], versions=[8]).skipped_stale == 1
    assert index.upsert([2], x[2:3], versions=[10]).inserted == 1  # a newer one applies
    assert index.upsert([1], x[1:2], versions=[7]).inserted == 1
    assert sorted(index.search(x, k=3).ids[0].tolist()) == [-1, 1, 2]


def test_the_memory_of_deleted_versions_is_bounded() -> None:
    index = Index(dim=16, metric="l2", deleted_versions_kept=100)
    x = _vectors(1000)
    index.upsert(np.arange(1000), x, versions=np.ones(1000, np.int64))
    for lo in range(0, 1000, 50):
        index.delete(np.arange(lo, lo + 50), versions=np.full(50, 2))
    assert index.stats()["deleted_versions_kept"] == 100
    assert index.upsert([999], x[:1], versions=[1]).skipped_stale == 1  # recent: remembered
    assert index.upsert([0], x[:1], versions=[1]).inserted == 1  # oldest: forgotten
