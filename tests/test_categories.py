"""Categories: per-category recall against brute force (leaves, parents, tiny ones),
membership of every returned id, quotas, moves and deletes (also under concurrent
searches), taxonomy changes, snapshots and bad input."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rtindex import Index, datasets
from rtindex.core.categories import MAX_ITEM_CATEGORIES, MAX_SEARCH_CATEGORIES

K = 10

# taxonomy: roots 1..3, middles 10..21 (4 per root), leaves 100..135 (3 per middle),
# and tiny leaves 900..903 under middle 10 with a handful of members each
ROOTS = np.arange(1, 4)
MIDDLES = np.arange(10, 22)
LEAVES = np.arange(100, 136)
TINY = np.arange(900, 904)


def _edges() -> tuple[np.ndarray, np.ndarray]:
    children = np.concatenate([MIDDLES, LEAVES, TINY])
    parents = np.concatenate([ROOTS[(MIDDLES - 10) // 4], MIDDLES[(LEAVES - 100) // 3], np.full(len(TINY), 10)])
    return children, parents


def _parent_map() -> dict[int, int]:
    children, parents = _edges()
    return dict(zip(children.tolist(), parents.tolist(), strict=True))


def _closure(cats: list[int], parent: dict[int, int]) -> set[int]:
    out: set[int] = set()
    for c in cats:
        while c is not None and c not in out:
            out.add(c)
            c = parent.get(c)
    return out


def _assign(base: np.ndarray, seed: int) -> list[list[int]]:
    """Leaf categories per item: one that follows the data (nearest of 36 sampled
    centres), up to two random ones; a few items also in a tiny leaf."""
    rng = np.random.default_rng(seed)
    centres = base[rng.choice(len(base), len(LEAVES), replace=False)]
    d = ((base[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    near = LEAVES[d.argmin(1)]
    cats: list[list[int]] = []
    for i in range(len(base)):
        extra = rng.choice(LEAVES, rng.integers(0, 3), replace=False).tolist()
        cats.append(sorted({int(near[i]), *extra}))
    for j, tiny in enumerate(TINY):
        for i in rng.choice(len(base), 3 + 2 * j, replace=False):
            cats[i].append(int(tiny))
    return cats


def _members(ids: np.ndarray, cats: list[list[int]], category: int) -> np.ndarray:
    parent = _parent_map()
    return np.array([i for i, c in zip(ids.tolist(), cats, strict=True) if category in _closure(c, parent)], np.int64)


def _exact(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    if len(members) == 0:
        return np.full((len(queries), 0), -1, np.int64)
    rows = base[np.searchsorted(ids, members)]
    truth = datasets.exact_knn(rows, queries, min(k, len(members)), "l2")
    return members[truth]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f[f >= 0], t)) / max(1, t.shape[0]) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def built(sift5k: datasets.Dataset):  # type: ignore[no-untyped-def]
    base = sift5k.base
    ids = np.arange(len(base), dtype=np.int64) * 3 + 7
    cats = _assign(base, seed=1)
    idx = Index(dim=base.shape[1], metric="l2", M=16, ef_construction=200, seed=3)
    idx.set_category_parents(*_edges())
    for lo in range(0, len(base), 1000):  # several batches: categories grow across them
        idx.upsert(ids[lo : lo + 1000], base[lo : lo + 1000], categories=cats[lo : lo + 1000])
    return idx, base, ids, cats


SEARCHED = np.array([1, 2, 3, 10, 15, 21, 100, 117, 135, 900, 901, 902, 903], np.int64)


def _check_all(idx: Index, base: np.ndarray, ids: np.ndarray, cats: list[list[int]], queries: np.ndarray,
               ef: int = 64) -> dict[int, float]:
    res = idx.search(queries, k=K, ef=ef, categories=SEARCHED)
    assert res.ids.shape == (len(queries), len(SEARCHED), K)
    assert res.scores.shape == res.ids.shape
    recalls = {}
    for j, category in enumerate(SEARCHED.tolist()):
        members = _members(ids, cats, category)
        found = res.ids[:, j, :]
        returned = found[found >= 0]
        assert np.isin(returned, members).all(), f"category {category} lists non-members"
        for row in found:  # no id twice, padding only at the end
            live = row[row >= 0]
            assert len(np.unique(live)) == len(live)
            assert (row[len(live):] == -1).all()
        truth = _exact(base, ids, queries, members, K)
        recalls[category] = _recall(found, truth)
        if len(members) <= K:  # fewer members than the quota: all of them, then padding
            assert (np.sort(found, axis=1)[:, -len(members):] == np.sort(members)).all()
    return recalls


def test_per_category_recall_against_brute_force(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    idx, base, ids, cats = built
    recalls = _check_all(idx, base, ids, cats, sift5k.queries[:60])
    # tiny categories are searched exhaustively: exact
    for tiny in TINY.tolist():
        assert recalls[tiny] == 1.0, recalls
    assert np.mean(list(recalls.values())) >= 0.95, recalls
    assert min(recalls.values()) >= 0.9, recalls


def test_scores_best_first_and_exact(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    idx, base, ids, _ = built
    q = sift5k.queries[:5]
    res = idx.search(q, k=K, categories=[2, 117])
    for b in range(len(q)):
        for j in range(2):
            row, sc = res.ids[b, j], res.scores[b, j]
            assert (np.diff(sc[row >= 0]) <= 0).all()
            vec = base[np.searchsorted(ids, row[row >= 0])]
            np.testing.assert_allclose(sc[row >= 0], -((vec - q[b]) ** 2).sum(1), rtol=1e-4)


def test_quotas_padding_and_unknown_categories(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    idx, _, ids, cats = built
    q = sift5k.queries[:3]
    res = idx.search(q, k=[3, 20, 5, 4], ef=32, categories=[1, 117, 555_555, 900])
    assert res.ids.shape == (3, 4, 20)
    assert (res.ids[:, 0, 3:] == -1).all() and (res.ids[:, 0, :3] >= 0).all()
    assert (res.ids[:, 1, :20] >= 0).all()  # ef is raised to the quota of 20
    assert (res.ids[:, 2] == -1).all() and np.isneginf(res.scores[:, 2]).all()  # no such category
    tiny = _members(ids, cats, 900)
    assert len(tiny) == 3
    assert (np.sort(res.ids[:, 3, :3], axis=1) == np.sort(tiny)).all() and (res.ids[:, 3, 3:] == -1).all()
    # the global search is unchanged by categories
    plain = idx.search(q, k=K)
    assert plain.ids.shape == (3, K)


def test_categories_survive_a_snapshot(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    idx, _, _, _ = built
    q = sift5k.queries[:20]
    before = idx.search(q, k=K, categories=SEARCHED)
    restored = Index.from_state(idx.export_state())
    after = restored.search(q, k=K, categories=SEARCHED)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(np.sort(np.stack(idx.category_parents()), axis=1),
                                  np.sort(np.stack(restored.category_parents()), axis=1))
    assert restored.stats()["category_nodes_live"] == idx.stats()["category_nodes_live"]


def _small_index(sift5k: datasets.Dataset, n: int = 2000):  # type: ignore[no-untyped-def]
    base = sift5k.base[:n]
    ids = np.arange(n, dtype=np.int64)
    cats = _assign(base, seed=5)
    idx = Index(dim=base.shape[1], metric="l2", M=12, ef_construction=100, seed=1, repair_min_tombstones=64)
    idx.set_category_parents(*_edges())
    idx.upsert(ids, base, categories=cats)
    return idx, base, ids, cats


def test_churn_moves_and_deletes_keep_recall(sift5k: datasets.Dataset) -> None:
    """30% churn: deletes, re-inserts, items moved between categories. No deleted or
    moved-away item is listed, recall stays, memory stays bounded."""
    idx, base, ids, cats = _small_index(sift5k)
    rng = np.random.default_rng(9)
    alive = np.ones(len(ids), bool)
    capacity_before = None
    for round_ in range(6):
        n = len(ids) // 20  # 5% per round, three kinds
        dead = rng.choice(np.flatnonzero(alive), n, replace=False)
        idx.delete(ids[dead])
        alive[dead] = False
        back = rng.choice(np.flatnonzero(~alive), n // 2, replace=False)
        for i in back:
            cats[i] = [int(rng.choice(LEAVES))]
        idx.upsert(ids[back], base[back], categories=[cats[i] for i in back])
        alive[back] = True
        moved = rng.choice(np.flatnonzero(alive), n, replace=False)
        for i in moved:
            cats[i] = sorted({int(c) for c in rng.choice(LEAVES, 2, replace=False)})
        idx.upsert(ids[moved], base[moved] + 0.5, categories=[cats[i] for i in moved])
        base = base.copy()
        base[moved] += 0.5
        if round_ == 2:
            capacity_before = idx.stats()["category_node_capacity"]
    live_ids = ids[alive]
    live_cats = [cats[i] for i in np.flatnonzero(alive)]
    q = sift5k.queries[:40]
    res = idx.search(q, k=K, categories=SEARCHED)
    parent = _parent_map()
    recalls = []
    for j, category in enumerate(SEARCHED.tolist()):
        members = np.array([i for i, c in zip(live_ids.tolist(), live_cats, strict=True)
                            if category in _closure(c, parent)], np.int64)
        found = res.ids[:, j]
        assert np.isin(found[found >= 0], members).all(), f"category {category}: deleted or moved-away item listed"
        truth = _exact(base[alive], live_ids, q, members, K)
        recalls.append(_recall(found, truth))
    assert np.mean(recalls) >= 0.95, recalls
    # slots are reused: the category node table stops growing under churn
    assert idx.stats()["category_node_capacity"] <= 1.5 * capacity_before


def test_moving_a_category_moves_its_members(sift5k: datasets.Dataset) -> None:
    idx, _, ids, cats = _small_index(sift5k, 1500)
    q = sift5k.queries[:10]
    moved_members = _members(ids, cats, 21)  # middle 21 (under root 3) ...
    rebuilt = idx.set_category_parents([21], [1])  # ... moves under root 1
    assert rebuilt >= len(moved_members)
    res = idx.search(q, k=200, ef=200, categories=[1, 3, 21])
    parent = _parent_map()
    parent[21] = 1
    for j, category in enumerate([1, 3, 21]):
        members = np.array([i for i, c in zip(ids.tolist(), cats, strict=True) if category in _closure(c, parent)])
        found = res.ids[:, j]
        assert np.isin(found[found >= 0], members).all()
    in_root3 = res.ids[:, 1]
    only_via_21 = np.setdiff1d(moved_members, _members_with(ids, cats, parent, 3))
    assert not np.isin(in_root3, only_via_21).any()
    # a category made a root again
    idx.set_category_parents([21], [-1])
    children, _ = idx.category_parents()
    assert 21 not in children.tolist()


def _members_with(ids: np.ndarray, cats: list[list[int]], parent: dict[int, int], category: int) -> np.ndarray:
    return np.array([i for i, c in zip(ids.tolist(), cats, strict=True) if category in _closure(c, parent)], np.int64)


def test_searches_during_moves_and_deletes_never_list_gone_items(sift5k: datasets.Dataset) -> None:
    """A search that starts after a move (or delete) returned never lists the item
    under the category it left."""
    idx, base, ids, cats = _small_index(sift5k, 1500)
    source = 117
    in_source = _members(ids, cats, source)
    gone_at: dict[int, float] = {}
    errors: list[str] = []
    stop = threading.Event()

    def search() -> None:
        q = sift5k.queries[:4]
        while not stop.is_set():
            started = time.perf_counter()
            found = idx.search(q, k=50, ef=64, categories=[source]).ids.ravel()
            stale = [int(i) for i in found if i >= 0 and gone_at.get(int(i), np.inf) < started]
            if stale:
                errors.append(f"search started after {stale[:5]} left category {source} still lists them")

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for lo in range(0, len(in_source), 8):
            part = in_source[lo : lo + 8]
            if lo % 16 == 0:
                idx.delete(part)
            else:
                idx.upsert(part, base[part], categories=[[100]] * len(part))
            now = time.perf_counter()
            gone_at.update({int(i): now for i in part})
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    final = idx.search(sift5k.queries[:4], k=50, categories=[source]).ids
    assert not np.isin(final, in_source).any()


def test_bad_input_is_refused_and_changes_nothing(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    idx, base, ids, _ = built
    q = sift5k.queries[:5]
    before = idx.search(q, k=K, categories=SEARCHED)
    edges = idx.category_parents()
    stats = idx.stats()
    with pytest.raises(ValueError, match="cycle"):
        idx.set_category_parents([1], [100])  # root 1 under its own descendant
    with pytest.raises(ValueError, match="own parent"):
        idx.set_category_parents([5], [5])
    with pytest.raises(ValueError, match="negative"):
        idx.set_category_parents([-4], [1])
    with pytest.raises(ValueError, match="one parent"):
        idx.set_category_parents([50, 50], [1, 2])
    with pytest.raises(ValueError, match="one parent per child"):
        idx.set_category_parents([50, 51], [1])
    with pytest.raises(ValueError, match="limit"):
        idx.search(q, k=K, categories=np.arange(MAX_SEARCH_CATEGORIES + 1))
    with pytest.raises(ValueError, match="negative"):
        idx.search(q, k=K, categories=[1, -2])
    with pytest.raises(ValueError, match="one per category"):
        idx.search(q, k=[1, 2], categories=[1, 2, 3])
    with pytest.raises(ValueError, match="limit"):
        idx.upsert(ids[:1], base[:1], categories=[list(range(MAX_ITEM_CATEGORIES + 1))])
    with pytest.raises(ValueError, match="negative"):
        idx.upsert(ids[:2], base[:2], categories=[[1], [-3]])
    with pytest.raises(ValueError, match="one list per item"):
        idx.upsert(ids[:2], base[:2], categories=[[1]])
    after = idx.search(q, k=K, categories=SEARCHED)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(np.stack(edges), np.stack(idx.category_parents()))
    now = idx.stats()
    for key in ("items", "categories", "category_nodes_live", "inserted", "refreshed"):
        assert now[key] == stats[key], key


def test_a_deep_chain_is_refused(sift5k: datasets.Dataset) -> None:
    idx = Index(dim=4)
    chain = np.arange(1000, 1040)
    with pytest.raises(ValueError, match="levels"):
        idx.set_category_parents(chain[1:], chain[:-1])
    assert idx.stats()["categories"] == 0


class _CountingScorer:
    """The built-in L2 metric as a custom scorer that counts its calls and rows."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        return np.asarray(queries, np.float32)

    def score(self, state: np.ndarray, query_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows += len(rows)
        return -((state[query_index] - rows) ** 2).sum(1).astype(np.float32)


def test_lockstep_scorer_searches_all_categories_together(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    """With a scorer (a neural network's shape), the beams of every category of every
    query advance together: one scorer call per step for all of them, an item's row
    scored once per query, the same recall and membership as the per-query kernels."""
    idx, base, ids, cats = built
    q = sift5k.queries[:20]
    chosen = np.array([1, 10, 100, 117, 900], np.int64)
    together = _CountingScorer()
    res = idx.search(q, k=K, ef=64, categories=chosen, scorer=together)
    assert res.ids.shape == (len(q), len(chosen), K)
    one_by_one = _CountingScorer()
    for c in chosen.tolist():
        idx.search(q, k=K, ef=64, categories=[c], scorer=one_by_one)
    assert together.calls < one_by_one.calls / 2, (together.calls, one_by_one.calls)
    assert together.rows < one_by_one.rows  # rows met in several categories are scored once
    assert res.evaluations.sum() == together.rows
    for j, category in enumerate(chosen.tolist()):
        members = _members(ids, cats, category)
        found = res.ids[:, j]
        assert np.isin(found[found >= 0], members).all()
        recall = _recall(found, _exact(base, ids, q, members, K))
        assert recall >= (1.0 if category == 900 else 0.9), (category, recall)
    metric = idx.search(q, k=K, ef=64, categories=chosen, execution="lockstep")
    np.testing.assert_array_equal(metric.ids, res.ids)


def test_a_batch_equals_its_queries_one_by_one(built, sift5k: datasets.Dataset) -> None:  # type: ignore[no-untyped-def]
    """A batch is searched category by category (each subgraph for all its queries in
    turn): the same lists and the same work as each query on its own."""
    idx, _, _, _ = built
    q = sift5k.queries[:12]
    together = idx.search(q, k=K, ef=48, categories=SEARCHED)
    for b in range(len(q)):
        alone = idx.search(q[b : b + 1], k=K, ef=48, categories=SEARCHED)
        np.testing.assert_array_equal(alone.ids[0], together.ids[b])
        np.testing.assert_allclose(alone.scores[0], together.scores[b], rtol=1e-6)
        assert alone.evaluations[0] == together.evaluations[b] and alone.hops[0] == together.hops[b]


def test_a_category_given_directly_stays_when_a_descendant_moves_away() -> None:
    """An item put in a leaf and in that leaf's parent itself stays in the parent when
    the leaf moves elsewhere (only the membership implied by the leaf goes)."""
    idx = Index(dim=4, metric="l2")
    idx.set_category_parents([101], [11])
    x = np.eye(4, dtype=np.float32)
    idx.upsert([1, 2], x[:2], categories=[[101, 11], [101]])
    idx.set_category_parents([101], [12])
    res = idx.search(x[:1], k=5, categories=[11, 12, 101])
    assert sorted(res.ids[0, 0][res.ids[0, 0] >= 0].tolist()) == [1]  # 1 was put in 11 itself
    assert sorted(res.ids[0, 1][res.ids[0, 1] >= 0].tolist()) == [1, 2]
    assert sorted(res.ids[0, 2][res.ids[0, 2] >= 0].tolist()) == [1, 2]
