"""Categories over gRPC (issue 18): Upsert with categories, the taxonomy calls
(SetCategoryParents, CategoryParents), Search with categories and quotas, through the
IndexClient and the raw stub, against a real server on 127.0.0.1 and sift5k vectors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest

from rtindex import datasets
from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.client import IndexClient, InvalidArgument
from rtindex.core.scorers import MetricScorer
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

DIM = 128
N = 2000  # items: sift5k's first rows
MAX_QUERIES, MAX_K = 200, 50

# taxonomy: roots 1, 2; middles 10, 11 (under 1) and 12, 13 (under 2); leaves 100..111,
# three per middle; tiny leaf 900 under 10 with five members
MIDDLES = np.array([10, 11, 12, 13])
LEAVES = np.arange(100, 112)
EDGES = (np.concatenate([MIDDLES, LEAVES, [900]]),
         np.concatenate([[1, 1, 2, 2], MIDDLES[(LEAVES - 100) // 3], [10]]))
TINY_MEMBERS = 5


def _assign(base: np.ndarray, seed: int = 1) -> list[list[int]]:
    """Per item: the leaf of its nearest sampled centre, sometimes a random second leaf;
    every tenth item no category at all; five items also in the tiny leaf."""
    rng = np.random.default_rng(seed)
    centres = base[rng.choice(len(base), len(LEAVES), replace=False)]
    near = LEAVES[((base[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)]
    cats: list[list[int]] = []
    for i in range(len(base)):
        extra = [int(rng.choice(LEAVES))] if rng.random() < 0.3 else []
        cats.append([] if i % 10 == 9 else sorted({int(near[i]), *extra}))
    for i in rng.choice(np.flatnonzero([bool(c) for c in cats]), TINY_MEMBERS, replace=False):
        cats[i].append(900)
    return cats


def _closure(cats: list[int], parent: dict[int, int]) -> set[int]:
    out: set[int] = set()
    for c in cats:
        while c is not None and c not in out:
            out.add(c)
            c = parent.get(c)
    return out


def _members(ids: np.ndarray, cats: list[list[int]], category: int, edges: tuple[np.ndarray, np.ndarray] = EDGES
             ) -> np.ndarray:
    parent = dict(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    return np.array([i for i, c in zip(ids.tolist(), cats, strict=True) if category in _closure(c, parent)], np.int64)


def _start(**overrides: object) -> IndexServer:
    config = dict(port=0, dim=DIM, metric="l2", max_queries=MAX_QUERIES, max_k=MAX_K, log_level="warning")
    config.update(overrides)
    srv = IndexServer(ServerConfig(**config))  # type: ignore[arg-type]
    srv.start()
    srv.mark_ready()
    return srv


@pytest.fixture(scope="module")
def loaded(sift5k: datasets.Dataset) -> Iterator[tuple[IndexServer, IndexClient, np.ndarray, np.ndarray, list]]:
    """A server holding N sift5k rows with categories, loaded over gRPC in batches
    (categories first seen in later batches too), taxonomy set before the items."""
    base = sift5k.base[:N]
    ids = np.arange(N, dtype=np.int64) * 3 + 7
    cats = _assign(base)
    srv = _start()
    with IndexClient(f"127.0.0.1:{srv.port}", timeout=60) as client:
        assert client.set_category_parents(*EDGES) == 0  # no items yet
        for lo in range(0, N, 500):
            assert client.upsert(ids[lo:lo + 500], base[lo:lo + 500], categories=cats[lo:lo + 500]).inserted == 500
        yield srv, client, base, ids, cats
    srv.stop(grace=1)


def _raw(server: IndexServer) -> index_pb2_grpc.IndexServiceStub:
    return index_pb2_grpc.IndexServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


SEARCHED = [1, 2, 10, 13, 100, 108, 111, 900, 777]  # roots, middles, leaves, the tiny leaf, a category never seen
QUOTAS = [10, 5, 10, 7, 10, 3, 10, 10, 4]


def test_search_by_category_gives_per_category_quotas_padding_and_only_members(loaded, sift5k) -> None:  # type: ignore[no-untyped-def]
    srv, client, base, ids, cats = loaded
    queries = sift5k.queries[:20]
    res = client.search(queries, k=QUOTAS, ef=64, categories=SEARCHED)
    assert res.ids.shape == res.scores.shape == (20, len(SEARCHED), max(QUOTAS))
    assert res.ids.dtype == np.int64 and res.scores.dtype == np.float32
    assert res.hops.shape == res.evaluations.shape == (20,)
    # the same request in-process gives the same answer
    direct = srv.index.search(queries, k=QUOTAS, ef=64, categories=SEARCHED)
    np.testing.assert_array_equal(res.ids, direct.ids)
    np.testing.assert_array_equal(res.scores, direct.scores)
    for j, (category, quota) in enumerate(zip(SEARCHED, QUOTAS, strict=True)):
        members = _members(ids, cats, category)
        found, scores = res.ids[:, j], res.scores[:, j]
        assert (found[:, quota:] == -1).all() and np.isneginf(scores[:, quota:]).all(), "beyond the quota: padding"
        assert np.isin(found[found >= 0], members).all(), f"category {category} lists a non-member"
        assert ((found >= 0) == np.isfinite(scores)).all()
        for row, row_scores in zip(found, scores, strict=True):
            live = row[row >= 0]
            assert len(np.unique(live)) == len(live) == min(quota, len(members))  # full rows, padding at the end
            assert (np.diff(row_scores[: len(live)]) <= 0).all()  # best first
        if category == 900:  # fewer members than the quota: all of them
            assert len(members) == TINY_MEMBERS
            assert (np.sort(found[:, :TINY_MEMBERS], axis=1) == np.sort(members)).all()
        if category == 777:
            assert len(members) == 0 and (found == -1).all()
    # a category with at most max(ef, category_exact_limit) members is searched exhaustively: exact
    exact = 0
    for j, category in enumerate(SEARCHED):
        members = _members(ids, cats, category)
        if QUOTAS[j] <= len(members) <= max(64, srv.index.config.category_exact_limit):
            rows = base[np.searchsorted(ids, members)]
            truth = members[datasets.exact_knn(rows, queries, QUOTAS[j], "l2")]
            np.testing.assert_array_equal(res.ids[:, j, : QUOTAS[j]], truth)
            exact += 1
    assert exact >= 1


def test_k_is_every_categorys_quota_and_a_plain_search_keeps_its_shape(loaded, sift5k) -> None:  # type: ignore[no-untyped-def]
    srv, client, *_ = loaded
    queries = sift5k.queries[:6]
    res = client.search(queries, k=7, categories=[10, 101])
    assert res.ids.shape == (6, 2, 7)
    np.testing.assert_array_equal(res.ids, srv.index.search(queries, k=7, categories=[10, 101]).ids)
    plain = client.search(queries, k=7)
    assert plain.ids.shape == (6, 7)
    np.testing.assert_array_equal(plain.ids, srv.index.search(queries, k=7).ids)
    # on the wire: num_categories and k (the largest quota) give the shape
    q = np.ascontiguousarray(queries, "<f4").tobytes()
    r = _raw(srv).Search(index_pb2.SearchRequest(queries=q, dim=DIM, categories=[10, 101, 2], category_k=[3, 9, 1]))
    assert (r.num_queries, r.num_categories, r.k) == (6, 3, 9)
    assert len(r.ids) == 6 * 3 * 9 * 8 and len(r.scores) == 6 * 3 * 9 * 4
    r = _raw(srv).Search(index_pb2.SearchRequest(queries=q, dim=DIM, categories=[10], category_k=[4], k=4))
    assert (r.num_categories, r.k) == (1, 4)  # k may repeat the largest quota
    r = _raw(srv).Search(index_pb2.SearchRequest(queries=q, dim=DIM, k=5))
    assert (r.num_queries, r.num_categories, r.k) == (6, 0, 5) and len(r.ids) == 6 * 5 * 8


def test_stats_report_the_category_counters(loaded) -> None:  # type: ignore[no-untyped-def]
    srv, client, *_ = loaded
    stats = client.stats()
    direct = srv.index.stats()
    for key in ("categories", "category_nodes_live", "category_nodes_tombstoned", "category_node_slots_in_use",
                "category_node_capacity", "category_memory_bytes"):
        assert key in stats, key
    assert stats["categories"] == direct["categories"] == 2 + len(MIDDLES) + len(LEAVES) + 1
    assert stats["category_nodes_live"] == direct["category_nodes_live"] > N


def _fingerprint(srv: IndexServer, client: IndexClient, queries: np.ndarray) -> tuple:
    stats = client.stats()
    res = client.search(queries, k=5, categories=SEARCHED)
    children, parents = client.category_parents()
    keys = ("items", "categories", "category_nodes_live", "category_nodes_tombstoned", "inserted", "refreshed")
    return tuple(stats[k] for k in keys), res.ids.tobytes(), children.tobytes(), parents.tobytes()


def _search(**fields: object) -> index_pb2.SearchRequest:
    fields.setdefault("queries", np.zeros((1, DIM), "<f4").tobytes())
    return index_pb2.SearchRequest(dim=DIM, **fields)  # type: ignore[arg-type]


def _upsert(n: int, categories: list[list[int]]) -> index_pb2.UpsertRequest:
    return index_pb2.UpsertRequest(ids=list(range(10**6, 10**6 + n)), embeddings=np.ones((n, DIM), "<f4").tobytes(),
                                   dim=DIM, categories=[index_pb2.CategoryList(ids=c) for c in categories])


BAD = [
    ("cycle", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[1], parents=[100]), "cycle"),
    ("own parent", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[5], parents=[5]), "own parent"),
    ("negative child", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[-4], parents=[1]),
     "negative"),
    ("negative parent", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[4], parents=[-3]),
     "-1: no parent"),
    ("two parents", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[50, 50], parents=[1, 2]),
     "one parent"),
    ("edge counts", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(children=[50, 51], parents=[1]),
     "one parent per child"),
    ("too deep", "SetCategoryParents", index_pb2.SetCategoryParentsRequest(
        children=list(range(5001, 5040)), parents=list(range(5000, 5039))), "levels"),
    ("too many categories", "Search", _search(k=1, categories=list(range(1025))), "limit is 1024"),
    ("negative category", "Search", _search(k=3, categories=[1, -2]), "negative"),
    ("quota count", "Search", _search(categories=[1, 2, 3], category_k=[1, 2]), "2 entries in category_k for 3"),
    ("quotas alone", "Search", _search(category_k=[3]), "without categories"),
    ("k against quotas", "Search", _search(k=5, categories=[1, 2], category_k=[3, 4]), "largest category_k is 4"),
    ("quota above max_k", "Search", _search(categories=[1], category_k=[MAX_K + 1]), f"1..{MAX_K}"),
    ("zero quota", "Search", _search(categories=[1, 2], category_k=[0, 3]), f"1..{MAX_K}"),
    ("ef below a quota", "Search", _search(categories=[1, 2], category_k=[3, 20], ef=10), "smaller than k"),
    ("response too large", "Search", _search(queries=np.ones((MAX_QUERIES, DIM), "<f4").tobytes(), k=MAX_K,
                                             categories=[1, 2]), "split the queries or the categories"),
    ("category lists count", "Upsert", _upsert(2, [[1]]), "1 category lists for 2 items"),
    ("negative item category", "Upsert", _upsert(2, [[1], [-3]]), "negative category id"),
    ("too many item categories", "Upsert", _upsert(1, [list(range(65))]), "limit is 64"),
]


@pytest.mark.parametrize(("case", "method", "request_", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_category_requests_get_invalid_argument_and_change_nothing(
    loaded, sift5k, case: str, method: str, request_: object, message: str  # type: ignore[no-untyped-def]
) -> None:
    srv, client, *_ = loaded
    queries = sift5k.queries[:3]
    before = _fingerprint(srv, client, queries)
    with pytest.raises(grpc.RpcError) as err:
        getattr(_raw(srv), method)(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert message in err.value.details()
    assert _fingerprint(srv, client, queries) == before


def test_client_raises_what_the_wire_cannot_carry_and_the_servers_refusals(loaded) -> None:  # type: ignore[no-untyped-def]
    _, client, base, *_ = loaded
    with pytest.raises(ValueError, match="needs categories"):
        client.search(base[:1], k=[3, 4])
    with pytest.raises(ValueError, match="categories is empty"):
        client.search(base[:1], k=3, categories=[])
    with pytest.raises(ValueError, match="list of integers"):
        client.upsert([1], base[:1], categories=[[1.5]])
    with pytest.raises(InvalidArgument, match="one list per item"):
        client.upsert([10**7, 10**7 + 1], base[:2], categories=[[1]])
    with pytest.raises(InvalidArgument, match="cycle"):
        client.set_category_parents([2], [12])


class _FeatureScorer(MetricScorer):
    """A custom scorer as the server holds a neural one: queries arrive as named features."""

    feature_spec: ClassVar[dict[str, None]] = {"q": None}

    def prepare(self, queries: Any) -> np.ndarray:
        return super().prepare(queries["q"])


def test_a_custom_scorer_with_categories_answers_as_the_index_does(loaded, sift5k) -> None:  # type: ignore[no-untyped-def]
    """Either the index's answer or, while the index does not support it, its refusal as
    INVALID_ARGUMENT with the index's message."""
    srv, client, *_ = loaded
    scorer = _FeatureScorer("l2", DIM)
    features = {"q": sift5k.queries[:4]}
    srv.servicer.scorer = scorer
    try:
        try:
            expected = srv.index.search(features, k=[5, 3], categories=[10, 101], scorer=scorer)
        except ValueError as exc:
            with pytest.raises(InvalidArgument, match=re.escape(str(exc))):
                client.search(features=features, k=[5, 3], categories=[10, 101])
        else:
            res = client.search(features=features, k=[5, 3], categories=[10, 101])
            np.testing.assert_array_equal(res.ids, expected.ids)
            np.testing.assert_array_equal(res.scores, expected.scores)
    finally:
        srv.servicer.scorer = None


@pytest.fixture
def small(sift5k: datasets.Dataset) -> Iterator[tuple[IndexServer, IndexClient, np.ndarray]]:
    srv = _start()
    with IndexClient(f"127.0.0.1:{srv.port}", timeout=60) as client:
        yield srv, client, sift5k.base[:200]
    srv.stop(grace=1)


def _listed(client: IndexClient, category: int, queries: np.ndarray) -> set[int]:
    """Every member of a category with at most MAX_K members (the quota covers them all)."""
    res = client.search(queries, k=MAX_K, categories=[category])
    sets = [set(row[row >= 0].tolist()) for row in res.ids[:, 0]]
    assert all(s == sets[0] for s in sets)  # exhaustive: every query lists the same members
    return sets[0]


def test_an_applied_upsert_replaces_the_items_categories(small) -> None:  # type: ignore[no-untyped-def]
    _, client, base = small
    q = base[:3] + 1
    ids = np.arange(40)
    client.upsert(ids, base[:40], versions=np.ones(40), categories=[[5]] * 40)
    assert _listed(client, 5, q) == set(range(40))
    # ten move to category 6, embeddings unchanged
    moved = client.upsert(ids[:10], base[:10], versions=np.full(10, 2), categories=[[6]] * 10)
    assert moved.refreshed == 10
    assert _listed(client, 5, q) == set(range(10, 40)) and _listed(client, 6, q) == set(range(10))
    # a refresh without categories takes the items out of every category
    client.upsert(ids[:5], base[:5], versions=np.full(5, 3))
    assert _listed(client, 6, q) == set(range(5, 10))
    # a stale upsert is skipped, categories included
    assert client.upsert(ids[5:10], base[5:10], versions=np.ones(5), categories=[[7]] * 5).skipped_stale == 5
    assert _listed(client, 6, q) == set(range(5, 10)) and _listed(client, 7, q) == set()
    # an item in two categories is listed under both, and under their common ancestor once
    client.upsert([100], base[100:101], categories=[[5, 6]])
    client.set_category_parents([5, 6], [1, 1])
    assert 100 in _listed(client, 5, q) and 100 in _listed(client, 6, q)
    assert _listed(client, 1, q) == set(range(5, 40)) | {100}


def test_set_category_parents_moves_members_and_round_trips(small) -> None:  # type: ignore[no-untyped-def]
    srv, client, base = small
    q = base[:3] + 1
    client.upsert(np.arange(60), base[:60], categories=[[20 + i % 3] for i in range(60)])  # 20 items per leaf
    assert client.set_category_parents([20, 21, 22], [2, 2, 3]) == 60  # every member gains an ancestor
    children, parents = client.category_parents()
    assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {20: 2, 21: 2, 22: 3}
    np.testing.assert_array_equal(children, srv.index.category_parents()[0])
    assert _listed(client, 2, q) == set(range(0, 60, 3)) | set(range(1, 60, 3))
    assert _listed(client, 3, q) == set(range(2, 60, 3))
    # move leaf 21 under 3, make 22 a root; then the whole forest again
    assert client.set_category_parents([21, 22], [3, -1]) == 40
    assert _listed(client, 2, q) == set(range(0, 60, 3))
    assert _listed(client, 3, q) == set(range(1, 60, 3))
    children, parents = client.category_parents()
    assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {20: 2, 21: 3}
    assert client.set_category_parents([], []) == 0  # an empty change is allowed and moves nothing
    res = client.search(q, k=[20, 20, 20], categories=[2, 3, 22])
    np.testing.assert_array_equal(res.ids, srv.index.search(q, k=[20, 20, 20], categories=[2, 3, 22]).ids)
    for j, members in enumerate((range(0, 60, 3), range(1, 60, 3), range(2, 60, 3))):
        assert {int(i) for i in res.ids[:, j].ravel()} == set(members)


def test_concurrent_upserts_with_and_without_categories_keep_each_items_own(small) -> None:  # type: ignore[no-untyped-def]
    """The writer merges queued upserts into one batch; each keeps its own categories."""
    srv, client, base = small
    q = base[:3] + 1

    def write(t: int) -> None:
        ids = np.arange(t * 20, t * 20 + 20)
        with IndexClient(f"127.0.0.1:{srv.port}", timeout=60) as own:
            own.upsert(ids, base[ids], categories=None if t % 2 else [[30 + t]] * 20)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert client.stats()["items"] == 160
    for t in range(8):
        assert _listed(client, 30 + t, q) == (set() if t % 2 else set(range(t * 20, t * 20 + 20)))
