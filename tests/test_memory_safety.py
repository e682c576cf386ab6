"""Regressions for two out-of-bounds writes found by running the suite with
NUMBA_BOUNDSCHECK=1 (both corrupted the heap silently before)."""

from __future__ import annotations

import numpy as np

from rtindex import Index
from rtindex.core.runtime import ScratchPool


def test_a_hub_drawing_thousands_of_reverse_links_in_one_sub_batch_is_handled() -> None:
    rng = np.random.default_rng(0)
    index = Index(dim=8, metric="l2", M=4, ef_construction=32, insert_batch_fraction=1.0, max_insert_batch=100_000)
    spread = rng.standard_normal((200, 8)).astype(np.float32) * 10
    index.upsert(np.arange(200), spread)
    # 3000 new points packed around one existing node: all of them select it, so its
    # reverse-link group is far larger than a row plus a repair pool
    crowd = spread[0] + rng.standard_normal((3000, 8)).astype(np.float32) * 0.01
    index.upsert(np.arange(200, 3200), crowd)
    # one sub-batch this large cannot link its members to each other (the default
    # insert_batch_fraction keeps sub-batches small for that reason): the point here is
    # that nothing is written out of bounds and searches still land in the crowd
    res = index.search(crowd[:100], k=1, ef=64)
    assert np.mean(res.ids[:, 0] >= 200) >= 0.9
    t = index.graph
    stats = index.stats()
    n = stats["node_slots_in_use"] + stats["node_slots_free"]  # every slot ever handed out
    degrees = t.links0[:n, 0]
    assert (degrees <= t.links0.shape[1] - 1).all()
    entries = np.concatenate([t.links0[u, 1 : 1 + degrees[u]] for u in range(n)])
    assert entries.min() >= 0 and entries.max() < n


def test_scratch_sets_sized_for_smaller_tables_are_never_handed_out() -> None:
    pool = ScratchPool(max_degree0=8, max_idle=8)
    big = pool.acquire(node_capacity=1000, beam=16)
    small = pool.acquire(node_capacity=10, beam=16)  # a search still reading old tables
    pool.release(small)
    pool.release(big)
    for _ in range(3):
        s = pool.acquire(node_capacity=1000, beam=16)
        assert s.visited.shape[0] >= 1000
        pool.release(s)


def test_a_search_on_tables_published_before_growth_reads_only_inside_them() -> None:
    """Growth republishes longer views of the same memory, so rows a search already
    holds gain links to nodes past its views' end: they must be skipped, never read
    (the bounds-checked CI pass raises on any read past a view)."""
    rng = np.random.default_rng(3)
    index = Index(dim=16, metric="l2", M=8, ef_construction=64, initial_capacity=256)
    first = rng.standard_normal((200, 16)).astype(np.float32)
    index.upsert(np.arange(200), first)
    engine = index._engine
    stale = engine.store.tables  # what a search that started now would hold
    crowd = first[:50].repeat(40, axis=0) + 0.01 * rng.standard_normal((2000, 16)).astype(np.float32)
    index.upsert(np.arange(200, 2200), crowd)  # grows the tables ~10x, links old rows to new nodes
    current = engine.store.tables
    assert current.node_state.shape[0] > 4 * stale.node_state.shape[0]
    old_rows = stale.links0[:200]
    assert (old_rows[:, 1:] >= stale.node_state.shape[0]).any(), "no old row links past the old view"
    engine.store.tables = stale
    try:
        res = index.search(crowd[:100], k=5, ef=64)
    finally:
        engine.store.tables = current
    # only nodes inside the old views (ids were given in slot order, nothing deleted)
    assert ((res.ids >= 0) & (res.ids < stale.node_state.shape[0])).all()


def test_relinking_live_nodes_adds_no_self_links_or_duplicate_neighbors() -> None:
    from rtindex.core.insert import relink_nodes

    rng = np.random.default_rng(4)
    index = Index(dim=16, metric="ip", M=8, ef_construction=64)
    index.upsert(np.arange(3000), rng.standard_normal((3000, 16)).astype(np.float32))
    engine = index._engine
    relink_nodes(engine, np.arange(0, 3000, 3, dtype=np.int32))  # as consolidation does for isolated nodes
    t = engine.store.tables
    for u in range(3000):
        row = t.links0[u, 1 : 1 + t.links0[u, 0]]
        assert u not in row, f"node {u} links to itself"
        assert len(set(row.tolist())) == len(row), f"node {u} has a neighbor twice: {row}"


def test_tables_still_grow_where_address_space_cannot_be_reserved(monkeypatch) -> None:
    import mmap

    refused = []

    def refuse(*args, **kwargs):
        refused.append(args)
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)  # as under `ulimit -v`
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    index = Index(dim=16, metric="l2", M=8, ef_construction=64, initial_capacity=64)
    for lo in range(0, 3000, 500):  # several growths, each a copy now
        index.upsert(np.arange(lo, lo + 500), x[lo : lo + 500])
    assert refused  # every table took the fallback
    np.testing.assert_array_equal(index.get(np.arange(3000)).vectors, x)
    assert (index.search(x[:50], k=1).ids[:, 0] == np.arange(50)).mean() >= 0.98
