"""Growable tables with free lists: the dynamic structures behind the graph.

Each table (vector rows, nodes, upper-level rows, items) is a set of arrays of one
capacity plus a ``SlotPool``: freed slots are reused first, capacity grows
geometrically, and a freed slot waits in limbo until no running search can read it.

Growing does not copy: every array is a prefix view of an anonymous mapping reserved
far larger than needed (``reserve_rows``; pages exist only once written), so growing
publishes a new ``GraphTables`` of longer views over the same memory — no writer stall
(copying 150k x 128 rows stopped the writer for 100-480 ms) and no double memory peak.
Only a reservation that runs out is copied into a larger one. A search holding the
previous ``GraphTables`` keeps reading shorter views of the same rows: kernels ignore
links to nodes past a view's end, and each published ``GraphTables`` has its own
entry points, all inside its views.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

import numpy as np

from rtindex.kernels.idmap import EMPTY, idmap_get, idmap_put, idmap_rehash, idmap_remove
from rtindex.kernels.layout import GraphTables

GROWTH = 1.5
RESERVE_FACTOR = 64  # a reservation holds this many times the rows asked for ...
RESERVE_MAX_BYTES = 16 << 30  # ... but at most this much address space per array

# where exported copies go: (name, shape, dtype) -> an empty array (e.g. in shared memory)
Allocate = Callable[[str, tuple, np.dtype], np.ndarray]


def copy_out(name: str, src: np.ndarray, allocate: Allocate | None) -> np.ndarray:
    """A copy of ``src``, in memory from ``allocate`` if given."""
    if allocate is None:
        return src.copy()
    out = allocate(name, src.shape, src.dtype)
    np.copyto(out, src)
    return out


class SlotPool:
    """Slot allocator of one table: LIFO free list, high-water mark, epoch limbo."""

    def __init__(self) -> None:
        self.high_water = 0
        self._free = np.empty(64, np.int32)
        self._n_free = 0
        self._limbo: list[tuple[int, np.ndarray]] = []

    @property
    def free_count(self) -> int:
        return self._n_free

    @property
    def limbo_count(self) -> int:
        return sum(len(s) for _, s in self._limbo)

    @property
    def in_use(self) -> int:
        """Slots holding data, including retired ones that are not reusable yet."""
        return self.high_water - self._n_free

    def high_water_after(self, n: int) -> int:
        """High-water mark once ``n`` more slots are allocated."""
        return self.high_water + max(0, n - self._n_free)

    def allocate(self, n: int) -> np.ndarray:
        take = min(n, self._n_free)
        out = np.empty(n, np.int32)
        out[:take] = self._free[self._n_free - take : self._n_free][::-1]
        self._n_free -= take
        fresh = n - take
        out[take:] = np.arange(self.high_water, self.high_water + fresh, dtype=np.int32)
        self.high_water += fresh
        return out

    def retire(self, slots: np.ndarray, epoch: int) -> None:
        if len(slots):
            self._limbo.append((epoch, np.asarray(slots, np.int32).copy()))

    def reclaim(self, oldest_active_epoch: int) -> int:
        """Move limbo slots retired before ``oldest_active_epoch`` to the free list."""
        ready = [s for e, s in self._limbo if e < oldest_active_epoch]
        if not ready:
            return 0
        self._limbo = [(e, s) for e, s in self._limbo if e >= oldest_active_epoch]
        slots = np.concatenate(ready)
        need = self._n_free + len(slots)
        if need > len(self._free):
            grown = np.empty(max(need, 2 * len(self._free)), np.int32)
            grown[: self._n_free] = self._free[: self._n_free]
            self._free = grown
        self._free[self._n_free : need] = slots
        self._n_free = need
        return len(slots)

    def nbytes(self) -> int:
        return self._free.nbytes + sum(s.nbytes for _, s in self._limbo)

    def export(self) -> tuple[int, np.ndarray]:
        """(high-water mark, free slots): slots in limbo count as free, since a restored
        index has no running searches."""
        limbo = [s for _, s in self._limbo]
        return self.high_water, np.concatenate([self._free[: self._n_free], *limbo]).astype(np.int32)

    @classmethod
    def restore(cls, high_water: int, free: np.ndarray) -> SlotPool:
        pool = cls()
        pool.high_water = int(high_water)
        pool._free = np.array(free, np.int32) if len(free) else np.empty(64, np.int32)
        pool._n_free = len(free)
        return pool


def reserve_rows(rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Rows to reserve when ``rows`` are needed now."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(rows, min(RESERVE_FACTOR * rows, RESERVE_MAX_BYTES // row_bytes, 2**31 - 1))


def _reserve(rows: int, needed: int, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zero-filled array of ``rows`` rows in address space that costs memory only
    where it is written (anonymous mapping, MAP_NORESERVE; transparent huge pages
    asked for, as numpy does for large arrays). Where the mapping is refused (e.g.
    under an address-space limit): a plain array of just the ``needed`` rows."""
    per_row = int(np.prod(row_shape, dtype=np.int64))
    nbytes = rows * per_row * np.dtype(dtype).itemsize
    if nbytes == 0:  # e.g. no float16 copy
        return np.zeros((needed, *row_shape), dtype)
    try:
        area = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
    except (OSError, ValueError, OverflowError):
        return np.zeros((needed, *row_shape), dtype)
    if nbytes >= 4 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):
        area.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(area, dtype, count=rows * per_row).reshape(rows, *row_shape)


class _Reservations:
    """The reserved array behind each table array, by name."""

    def __init__(self) -> None:
        self._full: dict[str, np.ndarray] = {}

    def view(self, name: str, current: np.ndarray | None, capacity: int, row_shape: tuple[int, ...],
             dtype: np.dtype, fill: int | float) -> np.ndarray:
        """``capacity`` rows of ``name``: the rows of ``current`` (a previous view, or
        None), then ``fill``. Inside the reservation nothing is copied."""
        kept = 0 if current is None else current.shape[0]
        full = self._full.get(name)
        fresh = full is None or capacity > full.shape[0]
        if fresh:
            full = _reserve(reserve_rows(capacity, row_shape, dtype), capacity, row_shape, dtype)
            self._full[name] = full
        if kept and (fresh or not np.may_share_memory(current, full)):
            full[:kept] = current
        out = full[:capacity]
        if fill != 0 and capacity > kept:
            out[kept:] = fill
        return out


# which arrays belong to which table, and the value of an unused slot
_NODE_FIELDS = {
    "vectors": 0.0, "vectors16": 0, "node_vec": -1, "node_item": -1, "node_level": 0, "node_state": 0, "node_graph": 0,
    "node_next": -1, "node_upper": -1, "links0": 0,
}
_UPPER_FIELDS = {"upper_links": 0, "upper_next": -1}
_ITEM_FIELDS = {"item_ids": -1, "item_versions": 0, "item_vec": -1, "item_first_node": -1, "item_state": 0}


class GraphStore:
    """The tables of one index and their allocators."""

    def __init__(self, dim: int, M: int, initial_capacity: int, half_copy: bool = False) -> None:
        n = initial_capacity
        upper = max(16, n // M)
        self._reservations = _Reservations()
        layout = {  # name: (row shape, dtype)
            "vectors": ((dim,), np.float32), "vectors16": ((dim if half_copy else 0,), np.uint16),
            "node_vec": ((), np.int32), "node_item": ((), np.int32), "node_level": ((), np.int32),
            "node_state": ((), np.uint8), "node_graph": ((), np.int32), "node_next": ((), np.int32),
            "node_upper": ((), np.int32), "links0": ((1 + 2 * M,), np.int32),
            "upper_links": ((1 + M,), np.int32), "upper_next": ((), np.int32),
            "item_ids": ((), np.int64), "item_versions": ((), np.int64), "item_vec": ((), np.int32),
            "item_first_node": ((), np.int32), "item_state": ((), np.uint8),
        }
        arrays = {}
        for fields, rows in ((_NODE_FIELDS, n), (_UPPER_FIELDS, upper), (_ITEM_FIELDS, n)):
            for name, fill in fields.items():
                row_shape, dtype = layout[name]
                arrays[name] = self._reservations.view(name, None, rows, row_shape, np.dtype(dtype), fill)
        self.tables = GraphTables(**arrays, entry_node=np.full(1, -1, np.int32))
        self.node_slots = SlotPool()
        self.upper_slots = SlotPool()
        self.item_slots = SlotPool()

    @property
    def node_capacity(self) -> int:
        return self.tables.node_state.shape[0]

    def ensure_capacity(self, nodes: int, upper: int, items: int) -> None:
        """Grow tables so that slot indices below the given counts are valid."""
        t = self.tables
        changes: dict[str, np.ndarray] = {}
        for need, fields, current in (
            (nodes, _NODE_FIELDS, t.node_state.shape[0]),
            (upper, _UPPER_FIELDS, t.upper_next.shape[0]),
            (items, _ITEM_FIELDS, t.item_ids.shape[0]),
        ):
            if need <= current:
                continue
            capacity = max(need, int(current * GROWTH))
            for name, fill in fields.items():
                changes[name] = self._grown(name, getattr(t, name), capacity, fill)
        if changes:
            # searches holding the previous tables keep its entry points (inside its views)
            self.tables = t._replace(**changes, entry_node=t.entry_node.copy())

    def _grown(self, name: str, current: np.ndarray, capacity: int, fill: int | float) -> np.ndarray:
        return self._reservations.view(name, current, capacity, current.shape[1:], current.dtype, fill)

    def export_views(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The used part of every table (views; the float16 copy is left out: derived)
        and the free lists; the high-water marks. Copy them with writes excluded."""
        t = self.tables
        arrays: dict[str, np.ndarray] = {}
        marks: dict[str, int] = {}
        for pool_name, pool, fields in (("node", self.node_slots, _NODE_FIELDS),
                                        ("upper", self.upper_slots, _UPPER_FIELDS),
                                        ("item", self.item_slots, _ITEM_FIELDS)):
            high, arrays[f"free_{pool_name}"] = pool.export()
            marks[pool_name] = high
            for name in fields:
                if name != "vectors16":
                    arrays[name] = getattr(t, name)[:high]
        arrays["entry_node"] = t.entry_node
        return arrays, marks

    @classmethod
    def restore(cls, dim: int, M: int, half_copy: bool, arrays: dict[str, np.ndarray],
                marks: dict[str, int]) -> GraphStore:
        """The inverse of ``export``: tables sized to the high-water marks (they grow on
        the next insert), the float16 copy recomputed."""
        store = cls(dim, M, 1, half_copy)
        changes: dict[str, np.ndarray] = {}
        for pool_name, fields in (("node", _NODE_FIELDS), ("upper", _UPPER_FIELDS), ("item", _ITEM_FIELDS)):
            capacity = max(1, marks[pool_name])
            for name, fill in fields.items():
                if name == "vectors16":
                    continue
                saved = arrays[name]
                changes[name] = store._grown(name, saved.astype(getattr(store.tables, name).dtype, copy=False),
                                             capacity, fill)
        vectors = changes["vectors"]
        changes["vectors16"] = store._grown("vectors16", store.tables.vectors16[:0], vectors.shape[0], 0)
        if half_copy:
            changes["vectors16"][:] = vectors.astype(np.float16).view(np.uint16)
        changes["entry_node"] = arrays["entry_node"].astype(np.int32)
        store.tables = store.tables._replace(**changes)
        store.node_slots = SlotPool.restore(marks["node"], arrays["free_node"])
        store.upper_slots = SlotPool.restore(marks["upper"], arrays["free_upper"])
        store.item_slots = SlotPool.restore(marks["item"], arrays["free_item"])
        return store

    def reclaim(self, oldest_active_epoch: int) -> None:
        for pool in (self.node_slots, self.upper_slots, self.item_slots):
            pool.reclaim(oldest_active_epoch)

    def nbytes(self) -> int:
        pools = (self.node_slots, self.upper_slots, self.item_slots)
        return sum(a.nbytes for a in self.tables) + sum(p.nbytes() for p in pools)


class IdMap:
    """External id -> item slot (numba hash table; keeps load factor <= 1/2).

    The two arrays are replaced together, as one tuple, when the table grows: a reader
    that did not take the writer's lock (``Index.get``) always probes a key array and
    a value array of the same size, so it may read a stale or half-written entry (it
    checks for that itself) but never outside the arrays."""

    def __init__(self, capacity: int = 1024) -> None:
        size = 1 << max(4, int(np.ceil(np.log2(2 * capacity))))
        self._table = (np.full(size, EMPTY, np.int64), np.full(size, -1, np.int32))
        self.count = 0

    @property
    def keys(self) -> np.ndarray:
        return self._table[0]

    @property
    def vals(self) -> np.ndarray:
        return self._table[1]

    def get(self, ids: np.ndarray) -> np.ndarray:
        keys, vals = self._table
        out = np.empty(ids.shape[0], np.int32)
        idmap_get(keys, vals, ids, out)
        return out

    def put(self, ids: np.ndarray, slots: np.ndarray) -> None:
        keys, vals = self._table
        if 2 * (self.count + len(ids)) > keys.shape[0]:
            size = keys.shape[0]
            while 2 * (self.count + len(ids)) > size:
                size *= 2
            grown = (np.full(size, EMPTY, np.int64), np.full(size, -1, np.int32))
            idmap_rehash(keys, vals, *grown)
            self._table = grown
            keys, vals = grown
        self.count += idmap_put(keys, vals, ids, slots)

    def remove(self, ids: np.ndarray) -> None:
        self.count -= idmap_remove(*self._table, ids)

    def export_views(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_keys": self.keys, f"{prefix}_vals": self.vals,
                f"{prefix}_count": np.array([self.count], np.int64)}

    @classmethod
    def restore(cls, prefix: str, arrays: dict[str, np.ndarray]) -> IdMap:
        m = cls()
        m._table = (arrays[f"{prefix}_keys"].astype(np.int64), arrays[f"{prefix}_vals"].astype(np.int32))
        m.count = int(arrays[f"{prefix}_count"][0])
        return m

    def nbytes(self) -> int:
        return self.keys.nbytes + self.vals.nbytes


class Graveyard:
    """Versions of deleted ids, so a replayed older upsert cannot bring a deleted item
    back (a delete and an older upsert of one id may be applied in either order when a
    stream is replayed). Bounded: past ``capacity`` the oldest entries are forgotten
    (ring buffer; the arrays grow geometrically up to ``capacity``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._map = IdMap(min(capacity, 1024))  # id -> ring slot
        size = max(1, min(capacity, 1024))
        self._ids = np.full(size, -1, np.int64)
        self._versions = np.zeros(size, np.int64)
        self._next = 0  # ring slot written next
        self.count = 0

    def versions_of(self, ids: np.ndarray) -> np.ndarray:
        """Recorded delete version of each id, or int64 min where none."""
        slots = self._map.get(ids)
        out = np.full(len(ids), np.iinfo(np.int64).min, np.int64)
        out[slots >= 0] = self._versions[slots[slots >= 0]]
        return out

    def record(self, ids: np.ndarray, versions: np.ndarray) -> None:
        if self.capacity == 0 or len(ids) == 0:
            return
        ids, versions = ids[-self.capacity :], versions[-self.capacity :]
        slots = self._map.get(ids)
        known = slots >= 0
        self._versions[slots[known]] = np.maximum(self._versions[slots[known]], versions[known])
        new_ids, new_versions = ids[~known], versions[~known]
        if len(new_ids) == 0:
            return
        self._grow_for(len(new_ids))
        ring = len(self._ids)
        positions = (self._next + np.arange(len(new_ids))) % ring
        evicted = self._ids[positions]
        self._map.remove(evicted[evicted >= 0])
        self.count -= int((evicted >= 0).sum())
        self._ids[positions] = new_ids
        self._versions[positions] = new_versions
        self._map.put(new_ids, positions.astype(np.int32))
        self.count += len(new_ids)
        self._next = int((self._next + len(new_ids)) % ring)

    def forget(self, ids: np.ndarray) -> None:
        slots = self._map.get(ids)
        hit = slots >= 0
        if hit.any():
            self._ids[slots[hit]] = -1
            self._map.remove(ids[hit])
            self.count -= int(hit.sum())

    def _grow_for(self, n: int) -> None:
        ring = len(self._ids)
        if self.count + n <= ring or ring >= self.capacity:
            return
        size = min(self.capacity, max(2 * ring, self.count + n))
        order = (self._next + np.arange(ring)) % ring  # oldest first
        live = order[self._ids[order] >= 0]
        ids = np.full(size, -1, np.int64)
        versions = np.zeros(size, np.int64)
        ids[: len(live)] = self._ids[live]
        versions[: len(live)] = self._versions[live]
        self._ids, self._versions, self._next = ids, versions, len(live)
        self._map.put(ids[: len(live)], np.arange(len(live), dtype=np.int32))

    def nbytes(self) -> int:
        return self._ids.nbytes + self._versions.nbytes + self._map.nbytes()

    def export_views(self) -> dict[str, np.ndarray]:
        return {"graveyard_ids": self._ids, "graveyard_versions": self._versions,
                "graveyard_ring": np.array([self._next, self.count], np.int64),
                **self._map.export_views("graveyard_map")}

    @classmethod
    def restore(cls, capacity: int, arrays: dict[str, np.ndarray]) -> Graveyard:
        g = cls(capacity)
        g._ids, g._versions = arrays["graveyard_ids"].astype(np.int64), arrays["graveyard_versions"].astype(np.int64)
        g._next, g.count = (int(v) for v in arrays["graveyard_ring"])
        g._map = IdMap.restore("graveyard_map", arrays)
        return g
