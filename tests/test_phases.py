"""Each small phase of the write path on its own: slot pools, reader epochs, the graveyard,
the item table and the delete phases (tombstone, entry points, consolidation), so that a
change to one is caught where it happens rather than through recall of a whole index."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rtindex import Index
from rtindex.core.config import IndexConfig
from rtindex.core.engine import Engine
from rtindex.core.epochs import ReaderEpochs
from rtindex.core.gpu.dirty import SETS, SYNCED
from rtindex.core.gpu.mirror import MIRRORED
from rtindex.core.repair import consolidate, consolidation_due, fix_entry_points, tombstone_nodes_of
from rtindex.core.storage import COLUMNS, GraphStore, Graveyard, SlotPool
from rtindex.kernels.layout import FREE, ITEM_DELETED, ITEM_FREE, ITEM_LIVE, LIVE, TOMBSTONE, GraphTables

NO_VERSION = np.iinfo(np.int64).min


# ------------------------------------------------------------------ slot pools
def test_a_slot_pool_hands_out_the_last_freed_slot_first() -> None:
    pool = SlotPool()
    np.testing.assert_array_equal(pool.allocate(5), [0, 1, 2, 3, 4])
    pool.retire(np.array([1, 3]), epoch=1)
    assert pool.reclaim(oldest_active_epoch=2) == 2
    assert (pool.free_count, pool.in_use) == (2, 3)
    # LIFO: the slot freed last is the warmest in cache; then fresh slots past the mark
    np.testing.assert_array_equal(pool.allocate(3), [3, 1, 5])
    assert (pool.high_water, pool.free_count) == (6, 0)


def test_a_retired_slot_waits_in_limbo_until_every_reader_of_its_epoch_left() -> None:
    pool = SlotPool()
    pool.allocate(4)
    pool.retire(np.array([0, 2]), epoch=3)
    assert pool.reclaim(oldest_active_epoch=3) == 0  # a search that entered at epoch 3 may still read them
    assert (pool.limbo_count, pool.free_count, pool.in_use) == (2, 0, 4)
    np.testing.assert_array_equal(pool.allocate(1), [4])  # not a retired slot
    assert pool.reclaim(oldest_active_epoch=4) == 2
    assert (pool.limbo_count, pool.free_count) == (0, 2)


def test_a_slot_pool_exports_its_limbo_as_free_and_restores_to_the_same_allocations() -> None:
    pool = SlotPool()
    pool.allocate(6)
    pool.retire(np.array([4]), epoch=1)
    pool.reclaim(oldest_active_epoch=2)
    pool.retire(np.array([0, 2]), epoch=5)  # still in limbo: a restored index has no readers
    high, free = pool.export()
    assert high == 6
    assert sorted(free.tolist()) == [0, 2, 4]
    restored = SlotPool.restore(high, free)
    assert (restored.free_count, restored.limbo_count, restored.in_use) == (3, 0, 3)
    assert sorted(restored.allocate(3).tolist()) == [0, 2, 4]
    np.testing.assert_array_equal(restored.allocate(1), [6])


# ------------------------------------------------------------------ reader epochs
def test_slots_retired_while_a_search_reads_become_reusable_only_after_it_leaves() -> None:
    epochs = ReaderEpochs()
    with epochs.reading() as entered:
        retired_at = epochs.advance()
        assert retired_at == entered
        assert not retired_at < epochs.oldest_active()  # the reader may still hold them
        assert epochs.active_readers == 1
    assert retired_at < epochs.oldest_active()
    assert epochs.active_readers == 0


def test_the_oldest_reader_holds_back_reuse_while_newer_ones_come_and_go() -> None:
    epochs = ReaderEpochs()
    old = epochs.reading()
    first = old.__enter__()
    stamp = epochs.advance()
    with epochs.reading() as newer:
        assert newer > first
        assert epochs.oldest_active() == first
    assert epochs.oldest_active() == first and not stamp < epochs.oldest_active()
    old.__exit__(None, None, None)
    assert stamp < epochs.oldest_active()


def test_reader_epochs_count_readers_from_many_threads() -> None:
    epochs = ReaderEpochs()
    inside = threading.Barrier(5)
    leave = threading.Event()

    def read() -> None:
        with epochs.reading():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait()  # all four readers are inside
    assert epochs.active_readers == 4
    leave.set()
    for t in threads:
        t.join()
    assert epochs.active_readers == 0


# ------------------------------------------------------------------ graveyard
def test_the_graveyard_keeps_the_highest_delete_version_of_an_id() -> None:
    g = Graveyard(capacity=10)
    g.record(np.array([7, 8]), np.array([5, 3]))
    g.record(np.array([7, 8]), np.array([2, 9]))
    np.testing.assert_array_equal(g.versions_of(np.array([7, 8, 9])), [5, 9, NO_VERSION])
    assert g.count == 2


def test_the_graveyard_forgets_its_oldest_entries_past_its_capacity() -> None:
    g = Graveyard(capacity=3)
    for i in range(5):
        g.record(np.array([100 + i]), np.array([i + 1]))
    assert g.count == 3
    np.testing.assert_array_equal(g.versions_of(np.arange(100, 105)), [NO_VERSION, NO_VERSION, 3, 4, 5])


def test_the_graveyard_grows_to_its_capacity_without_losing_entries() -> None:
    g = Graveyard(capacity=5000)
    ids = np.arange(3000, dtype=np.int64)
    for lo in range(0, 3000, 700):  # several growths of the ring
        g.record(ids[lo : lo + 700], ids[lo : lo + 700] + 1)
    assert g.count == 3000
    np.testing.assert_array_equal(g.versions_of(ids), ids + 1)


def test_a_forgotten_id_has_no_delete_version_and_frees_its_place() -> None:
    g = Graveyard(capacity=2)
    g.record(np.array([1, 2]), np.array([4, 4]))
    g.forget(np.array([1, 99]))
    assert g.count == 1
    g.record(np.array([3]), np.array([6]))  # takes the forgotten place: 2 stays
    np.testing.assert_array_equal(g.versions_of(np.array([1, 2, 3])), [NO_VERSION, 4, 6])
    assert g.count == 2


def test_a_graveyard_of_capacity_zero_remembers_nothing() -> None:
    g = Graveyard(capacity=0)
    g.record(np.array([1]), np.array([4]))
    assert g.count == 0 and g.versions_of(np.array([1]))[0] == NO_VERSION
    index = Index(dim=4, deleted_versions_kept=0)  # the index option that leads here
    index.delete([1], versions=[4])
    assert index.upsert([1], np.ones((1, 4), np.float32), versions=[2]).inserted == 1


def test_a_restored_graveyard_answers_and_evicts_like_the_original() -> None:
    g = Graveyard(capacity=4)
    g.record(np.arange(3, dtype=np.int64), np.arange(3, dtype=np.int64) * 10)
    g.record(np.arange(3, 6, dtype=np.int64), np.arange(3, 6, dtype=np.int64) * 10)  # wraps the ring
    restored = Graveyard.restore(4, {name: a.copy() for name, a in g.export_views().items()})
    for graveyard in (g, restored):
        graveyard.record(np.array([50]), np.array([7]))  # evicts the oldest kept entry in both
    ids = np.array([0, 1, 2, 3, 4, 5, 50])
    np.testing.assert_array_equal(restored.versions_of(ids), g.versions_of(ids))
    np.testing.assert_array_equal(g.versions_of(ids), [NO_VERSION] * 3 + [30, 40, 50, 7])
    assert restored.count == g.count == 4


# ------------------------------------------------------------------ item table
def _store(capacity: int = 8, graveyard: int = 10) -> GraphStore:
    return GraphStore(dim=4, M=4, initial_capacity=capacity, deleted_versions_kept=graveyard)


def _add_items(store: GraphStore, ids: list[int], versions: list[int] | None = None,
               versioned: bool = False) -> np.ndarray:
    """New items whose vector row and first node are their slot, row values = the id."""
    items = store.items
    slots = items.allocate(len(ids))
    store.node_slots.allocate(len(ids))
    store.ensure_capacity(store.node_slots.high_water, 0, items.slots.high_water)
    store.tables.vectors[slots] = np.array(ids, np.float32)[:, None]
    ids_array = np.array(ids, np.int64)
    items.add(slots, ids_array, np.array(versions or [0] * len(ids), np.int64), slots, slots)
    items.publish(ids_array, slots, versioned=versioned)
    return slots


def test_added_items_are_found_by_id_only_once_published() -> None:
    store = _store()
    items = store.items
    slots = items.allocate(2)
    store.ensure_capacity(2, 0, 2)
    items.add(slots, np.array([10, 11]), np.array([3, 4]), slots, slots)
    assert items.count == 0 and (items.slots_of(np.array([10, 11])) == -1).all()
    items.publish(np.array([10, 11]), slots, versioned=False)
    np.testing.assert_array_equal(items.slots_of(np.array([11, 10, 12])), [slots[1], slots[0], -1])
    assert items.count == 2
    assert (store.tables.item_state[slots] == ITEM_LIVE).all()


def test_items_read_their_current_row_and_version_after_a_refresh() -> None:
    store = _store()
    slots = _add_items(store, [10, 11], versions=[1, 1])
    store.tables.vectors[7] = 99.0
    old_first = store.items.repoint(slots[1:], np.array([7], np.int32), np.array([7], np.int32), np.array([2]))
    np.testing.assert_array_equal(old_first, slots[1:])
    found, vectors, versions = store.items.read(np.array([10, 11, 12]))
    np.testing.assert_array_equal(found, [True, True, False])
    np.testing.assert_array_equal(vectors[:2, 0], [10.0, 99.0])
    assert np.isnan(vectors[2]).all()
    np.testing.assert_array_equal(versions, [1, 2, -1])
    np.testing.assert_array_equal(store.items.first_nodes(slots), [slots[0], 7])


def test_stored_versions_fall_back_to_the_delete_version_of_unknown_ids() -> None:
    store = _store()
    items = store.items
    slots = _add_items(store, [10, 11], versions=[4, 5], versioned=True)
    ids = np.array([10, 11, 12, 13])
    np.testing.assert_array_equal(items.stored_versions(ids, items.slots_of(ids)), [4, 5, NO_VERSION, NO_VERSION])
    # a versioned delete of a known id and of one never seen (a replay may bring the delete first)
    items.mark_deleted(np.array([11, 12]), np.array([slots[1], -1], np.int32), np.array([8, 9]))
    assert items.count == 1
    np.testing.assert_array_equal(items.slots_of(ids), [slots[0], -1, -1, -1])
    np.testing.assert_array_equal(items.stored_versions(ids, items.slots_of(ids)), [4, 8, 9, NO_VERSION])
    assert store.tables.item_state[slots[1]] == ITEM_DELETED and store.tables.item_versions[slots[1]] == 8


def test_an_unversioned_delete_leaves_no_graveyard_entry() -> None:
    store = _store()
    slots = _add_items(store, [10])
    store.items.mark_deleted(np.array([10]), slots, None)
    assert store.items.count == 0 and store.items.graveyard.count == 0
    assert store.tables.item_state[slots[0]] == ITEM_DELETED


def test_a_versioned_insert_ends_the_graveyard_entry_of_its_id_and_an_unversioned_one_does_not() -> None:
    store = _store()
    store.items.mark_deleted(np.array([10, 11]), np.array([-1, -1], np.int32), np.array([5, 5]))
    _add_items(store, [10], versions=[6], versioned=True)
    _add_items(store, [11])
    np.testing.assert_array_equal(store.items.graveyard.versions_of(np.array([10, 11])), [NO_VERSION, 5])


def test_only_deleted_items_are_freed_after_consolidation() -> None:
    store = _store()
    slots = _add_items(store, [10, 11, 12])
    store.items.mark_deleted(np.array([10, 12]), slots[[0, 2]], None)
    # the freed nodes' owners: a deleted item owning two nodes, and a refreshed live item
    freed = store.items.free_deleted(np.array([slots[0], slots[0], slots[1], slots[2]]))
    np.testing.assert_array_equal(freed, np.sort(slots[[0, 2]]))
    np.testing.assert_array_equal(store.tables.item_state[slots], [ITEM_FREE, ITEM_LIVE, ITEM_FREE])
    store.items.retire(freed, epoch=1)
    store.reclaim(oldest_active_epoch=2)
    assert sorted(store.items.allocate(2).tolist()) == sorted(slots[[0, 2]].tolist())


def test_items_survive_table_growth() -> None:
    store = _store(capacity=4)
    _add_items(store, [1, 2, 3])
    _add_items(store, list(range(100, 140)))  # grows the item and node tables ~10x
    assert store.tables.item_ids.shape[0] >= 43
    found, vectors, _ = store.items.read(np.array([1, 3, 139]))
    assert found.all()
    np.testing.assert_array_equal(vectors[:, 0], [1, 3, 139])


def test_a_restored_store_has_the_same_items_free_slots_and_graveyard() -> None:
    store = _store()
    slots = _add_items(store, [10, 11, 12], versions=[1, 2, 3], versioned=True)
    store.items.mark_deleted(np.array([11, 50]), np.array([slots[1], -1], np.int32), np.array([7, 8]))
    store.items.retire(store.items.free_deleted(slots[[1]]), epoch=1)  # in limbo at export
    views, marks = store.export_views()
    restored = GraphStore.restore(4, 4, False, 10, {name: v.copy() for name, v in views.items()}, marks)
    ids = np.array([10, 11, 12, 50, 99])
    for copy in (store, restored):
        copy.reclaim(oldest_active_epoch=2)
    for a, b in zip(store.items.read(ids), restored.items.read(ids), strict=True):
        np.testing.assert_array_equal(a, b)
    for copy in (store, restored):
        versions = copy.items.stored_versions(ids, copy.items.slots_of(ids))
        np.testing.assert_array_equal(versions, [1, 7, 3, 8, NO_VERSION])
    assert restored.items.count == 2 and restored.items.graveyard.count == 2
    np.testing.assert_array_equal(restored.items.allocate(2), store.items.allocate(2))


# ------------------------------------------------------------------ the schema
def test_the_column_schema_covers_every_table_array_and_unused_slots_point_nowhere() -> None:
    assert list(COLUMNS) == [f for f in GraphTables._fields if f != "entry_node"]
    store = _store(capacity=4)
    store.ensure_capacity(40, 40, 40)  # grown rows are filled too
    t = store.tables
    for name, column in COLUMNS.items():
        array = getattr(t, name)
        assert array.dtype == np.dtype(column.dtype), name
        assert (array == column.fill).all(), f"{name}: an unused slot must hold {column.fill}"
    for name in ("node_vec", "node_item", "node_next", "node_upper", "upper_next", "item_ids", "item_vec",
                 "item_first_node", "item_first_cnode"):
        assert (getattr(t, name) == -1).all(), f"{name}: -1 is 'none'"
    assert (t.node_state == FREE).all() and (t.item_state == ITEM_FREE).all()
    assert (t.links0[:, 0] == 0).all() and (t.upper_links[:, 0] == 0).all()  # degree 0


def test_snapshots_keep_the_array_names_they_have_always_had() -> None:
    """Saved snapshots are loaded by these names: renaming one breaks every old snapshot."""
    views, marks = _store().export_views()
    assert set(marks) == {"node", "upper", "item"}
    assert set(views) == {
        "vectors", "node_vec", "node_item", "node_level", "node_state", "node_graph", "node_next", "node_direct",
        "node_upper", "links0", "upper_links", "upper_next", "item_ids", "item_versions", "item_vec",
        "item_first_node", "item_first_cnode", "item_state", "entry_node", "free_node", "free_upper", "free_item", "idmap_keys", "idmap_vals",
        "idmap_count", "graveyard_ids", "graveyard_versions", "graveyard_ring", "graveyard_map_keys",
        "graveyard_map_vals", "graveyard_map_count",
    }


def test_the_gpu_mirror_and_dirty_sets_follow_the_schema() -> None:
    assert set(MIRRORED) == {"vectors", "vectors16", "links0", "node_state", "node_level", "node_upper", "node_item",
                             "upper_links", "upper_next", "item_ids"}
    assert set(SETS) == {"node", "links0", "state", "upper", "item"}
    assert SYNCED["state"] == ("node_state",) and SYNCED["item"] == ("item_ids",)
    assert set(SYNCED["node"]) == {name for name, c in MIRRORED.items() if c.table == "node"}


# ------------------------------------------------------------------ delete phases
def _built(n: int = 400, **options: object) -> tuple[Index, Engine, np.ndarray]:
    """An index of ``n`` items that never consolidates by itself, and its engine: the
    delete phases take the engine (the index's internals) as their input."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    index = Index(dim=8, metric="l2", M=6, ef_construction=32, seed=1, device="cpu",
                  repair_min_tombstones=10**9, **options)
    index.upsert(np.arange(n), x)
    return index, index._engine, x


def _item_nodes(engine: Engine, ids: np.ndarray) -> np.ndarray:
    return engine.store.items.first_nodes(engine.store.items.slots_of(np.asarray(ids, np.int64)))


def test_tombstoning_covers_every_node_of_an_item_chain_and_counts_once() -> None:
    _, engine, _ = _built()
    first = _item_nodes(engine, np.array([3, 4]))
    t = engine.store.tables
    t.node_next[first[0]] = 200  # as with categories: item 3 owns a second node
    live_before = engine.live_nodes
    assert tombstone_nodes_of(engine, first) == 3
    assert tombstone_nodes_of(engine, first) == 0  # already tombstoned: not counted again
    assert (t.node_state[[first[0], first[1], 200]] == TOMBSTONE).all()
    assert (engine.live_nodes, engine.tombstones) == (live_before - 3, 3)


def test_entry_points_move_off_a_tombstoned_node_to_the_highest_live_one() -> None:
    _, engine, _ = _built()
    t = engine.store.tables
    entry = int(t.entry_node[0])
    tombstone_nodes_of(engine, np.array([entry], np.int32))
    fix_entry_points(engine)
    new_entry = int(t.entry_node[0])
    assert new_entry != entry and t.node_state[new_entry] == LIVE
    live = t.node_state[: engine.store.node_slots.high_water] == LIVE
    assert t.node_level[new_entry] == t.node_level[: len(live)][live].max()


@pytest.mark.parametrize(("tombstones", "live", "due"), [(0, 100, False), (9, 100, False), (10, 100, True),
                                                         (10, 1000, False), (20, 1000, True)])
def test_consolidation_is_due_past_a_fraction_of_live_nodes_and_a_minimum(tombstones: int, live: int,
                                                                           due: bool) -> None:
    engine = Engine.create(IndexConfig(dim=4, repair_fraction=0.02, repair_min_tombstones=10))
    engine.tombstones, engine.live_nodes = tombstones, live
    assert consolidation_due(engine) is due


def _links_to(t: GraphTables, sources: np.ndarray, targets: np.ndarray) -> int:
    """How many level-0 links from ``sources`` point into ``targets``."""
    rows = t.links0[sources]
    present = np.arange(rows.shape[1] - 1)[None, :] < rows[:, :1]
    return int(np.isin(rows[:, 1:][present], targets).sum())


def test_consolidation_unlinks_and_frees_the_tombstones_and_reuses_their_slots_after_readers_leave() -> None:
    index, engine, x = _built()
    doomed = np.arange(0, 400, 4)
    dead = _item_nodes(engine, doomed)
    index.delete(doomed)
    t = engine.store.tables
    live = np.flatnonzero(t.node_state[: engine.store.node_slots.high_water] == LIVE)
    assert _links_to(t, live, dead) > 0  # the state the repair exists for

    reader = engine.epochs.reading()
    reader.__enter__()  # a search that started before the consolidation
    try:
        assert consolidate(engine) == len(dead)
        assert _links_to(t, live, dead) == 0
        assert (t.node_state[dead] == FREE).all() and engine.tombstones == 0
        stats = index.stats()
        assert (stats["node_slots_waiting"], stats["item_slots_waiting"]) == (len(dead), len(dead))
        high_water = engine.store.node_slots.high_water
        index.upsert(np.arange(1000, 1010), x[:10])  # must not land on a slot the reader may hold
        assert engine.store.node_slots.high_water == high_water + 10
    finally:
        reader.__exit__(None, None, None)
    index.upsert(np.arange(2000, 2050), x[:50])  # the reader left: the freed slots come back
    assert engine.store.node_slots.high_water == high_water + 10
    reused = _item_nodes(engine, np.arange(2000, 2050))
    assert np.isin(reused, dead).all()
    res = index.search(x, k=5, ef=32)
    assert not np.isin(res.ids, doomed).any()
