"""Delete path: tombstone at once, repair in batches, then free the slots.

``tombstone_nodes_of`` makes an item invisible before ``delete`` returns;
``fix_entry_points`` keeps every entry point live; ``consolidate`` repairs the
in-neighbors of all tombstoned nodes (FreshDiskANN), makes sure every live node is
still reachable, after which nothing reachable points at the tombstones, and retires
their slots to be reused once no search can still read them.
"""

from __future__ import annotations

import numpy as np

from rtindex.core.engine import Engine
from rtindex.core.insert import relink_nodes
from rtindex.kernels.layout import FREE, LIVE, TOMBSTONE, Scratch
from rtindex.kernels.repair import (
    adopt_orphans,
    collect_upper_rows,
    find_entry_points,
    isolated_nodes,
    repair_in_neighbors,
    tombstone_chains,
)


def tombstone_nodes_of(engine: Engine, first_nodes: np.ndarray) -> int:
    """Tombstone the node chains starting at ``first_nodes``; returns how many nodes."""
    count = int(tombstone_chains(engine.store.tables, np.ascontiguousarray(first_nodes, np.int32), engine.graph_live))
    engine.live_nodes -= count
    engine.tombstones += count
    return count


def fix_entry_points(engine: Engine) -> None:
    t = engine.store.tables
    entries = t.entry_node
    stale = (entries >= 0) & (t.node_state[np.maximum(entries, 0)] != LIVE)
    if stale.any():  # found apart, then written: searches never read a -1 in between
        found = entries.copy()
        find_entry_points(t, stale, engine.store.node_slots.high_water, found)
        entries[stale] = found[stale]


def consolidation_due(engine: Engine) -> bool:
    cfg = engine.config
    threshold = max(cfg.repair_min_tombstones, cfg.repair_fraction * engine.live_nodes)
    return engine.tombstones > 0 and engine.tombstones >= threshold


def _keep_everyone_reachable(engine: Engine) -> None:
    """After repair: nodes left without live neighbors are inserted afresh, nodes left
    without an in-edge are adopted by a neighbor."""
    t = engine.store.tables
    high_water = engine.store.node_slots.high_water
    alone = isolated_nodes(t, high_water)
    if len(alone):
        relink_nodes(engine, alone)
        engine.counters.relinked += len(alone)
    engine.counters.adopted += int(adopt_orphans(t, high_water, engine.params, 1))


def consolidate(engine: Engine, free_items: bool = True) -> int:
    """Repair every live row that points at a tombstone, then free the tombstones.
    Returns the number of nodes freed. ``free_items``: also free the slots of deleted
    items whose nodes these were (the global graph's consolidation does that)."""
    store = engine.store
    t = store.tables
    high_water = store.node_slots.high_water
    dead = np.flatnonzero(t.node_state[:high_water] == TOMBSTONE).astype(np.int32)
    if len(dead) == 0:
        return 0

    def repair_chunk(lo: int, hi: int, scratch: Scratch) -> int:
        return int(repair_in_neighbors(t, lo, hi, engine.params, scratch))

    repaired = engine.workers.run(high_water, repair_chunk, t.node_state.shape[0], 1, min_chunk=2048)
    engine.counters.repaired_rows += sum(int(r) for r in repaired)  # type: ignore[call-overload]
    engine.counters.consolidations += 1
    _keep_everyone_reachable(engine)

    upper_rows = collect_upper_rows(t, dead)
    owners = t.node_item[dead]
    t.node_state[dead] = FREE
    epoch = engine.epochs.advance()
    store.node_slots.retire(dead, epoch)
    store.upper_slots.retire(upper_rows, epoch)
    if free_items:
        items = store.items.free_deleted(owners)  # a refreshed item keeps its slot: only deleted ones go
        store.items.retire(items, epoch)
    store.reclaim(engine.epochs.oldest_active())
    engine.tombstones -= len(dead)
    return len(dead)
