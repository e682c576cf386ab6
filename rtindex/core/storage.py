"""Growable tables with free lists: the dynamic structures behind the graph.

Each table (vector rows, nodes, upper-level rows, items) is a set of arrays of one
capacity plus a ``SlotPool``: freed slots are reused first, capacity grows
geometrically, and a freed slot waits in limbo until no running search can read it.

Growing does not copy: every array is a prefix view of an anonymous mapping reserved
far larger than needed (``reserve_rows``; pages exist only once written), so growing
publishes a new ``GraphTables`` of longer views over the same memory — no writer stall
(copying a large table stopped the writer; README has the figure) and no double memory peak.
Only a reservation that runs out is copied into a larger one. A search holding the
previous ``GraphTables`` keeps reading shorter views of the same rows: kernels ignore
links to nodes past a view's end, and each published ``GraphTables`` has its own
entry points, all inside its views.

``COLUMNS`` is the one schema of those arrays (table, row shape, dtype, fill value,
saved or derived, GPU mirroring): creation, growth, export and restore here, and the GPU
mirror and its dirty-row sets, all derive from it. ``ItemTable`` owns the item lifecycle
(id map, item columns, item slots, graveyard), as Qdrant's id tracker does.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rtindex.kernels.idmap import EMPTY, idmap_get, idmap_put, idmap_rehash, idmap_remove
from rtindex.kernels.layout import ITEM_DELETED, ITEM_FREE, ITEM_LIVE, LIVE, GraphTables

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


class Column(NamedTuple):
    """One array of ``GraphTables``: what storage creates, grows, exports and restores,
    and what the GPU mirror copies (``rtindex.core.gpu``)."""

    table: str  # "node", "upper" or "item": the table whose slots number its rows
    dtype: type
    fill: int | float  # value of an unused slot
    width: str = ""  # "" for one value per row, else a row width of ``row_shape``
    saved: bool = True  # False: derived from other columns, recomputed on restore
    # dirty-row sets (rtindex.core.gpu.dirty) whose rows a GPU sync sends for this array;
    # () = not mirrored (no GPU kernel reads it)
    synced_by: tuple[str, ...] = ()


TABLES = ("node", "upper", "item")

# the one schema of the tables, in GraphTables order (entry_node, one row per subgraph,
# is not a slot table)
COLUMNS: dict[str, Column] = {
    "vectors": Column("node", np.float32, 0.0, "dim", synced_by=("node",)),
    "vectors16": Column("node", np.uint16, 0, "dim16", saved=False, synced_by=("node",)),
    "node_vec": Column("node", np.int32, -1),
    "node_item": Column("node", np.int32, -1, synced_by=("node",)),
    "node_level": Column("node", np.int32, 0, synced_by=("node",)),
    "node_state": Column("node", np.uint8, 0, synced_by=("node", "state")),
    "node_graph": Column("node", np.int32, 0),
    "node_next": Column("node", np.int32, -1),
    "node_direct": Column("node", np.uint8, 0),
    "node_upper": Column("node", np.int32, -1, synced_by=("node",)),
    "links0": Column("node", np.int32, 0, "links0", synced_by=("node", "links0")),
    "upper_links": Column("upper", np.int32, 0, "upper_links", synced_by=("upper",)),
    "upper_next": Column("upper", np.int32, -1, synced_by=("upper",)),
    "item_ids": Column("item", np.int64, -1, synced_by=("item",)),
    "item_versions": Column("item", np.int64, 0),
    "item_vec": Column("item", np.int32, -1),
    "item_first_node": Column("item", np.int32, -1),
    "item_first_cnode": Column("item", np.int32, -1),
    "item_state": Column("item", np.uint8, 0),
}


_TABLE_COLUMNS = {table: tuple(name for name, c in COLUMNS.items() if c.table == table) for table in TABLES}

# the columns a store of category nodes reads from the global store instead of owning
# them: the embedding rows (a category node reads the row of its item's global node)
# and the items
SHARED_WITH_GLOBAL = ("vectors", "vectors16", *_TABLE_COLUMNS["item"])


def columns_of(table: str) -> tuple[str, ...]:
    """Names of the columns of ``table`` ("node", "upper" or "item"), in schema order."""
    return _TABLE_COLUMNS[table]


def row_shape(column: Column, dim: int, M: int, half_copy: bool) -> tuple[int, ...]:
    """Shape of one row of ``column`` in an index of these dimensions."""
    widths = {"": (), "dim": (dim,), "dim16": (dim if half_copy else 0,), "links0": (1 + 2 * M,),
              "upper_links": (1 + M,)}
    return widths[column.width]


def table_capacity(tables: GraphTables, table: str) -> int:
    """Rows allocated for ``table`` in ``tables`` (every column of a table has as many)."""
    return getattr(tables, columns_of(table)[0]).shape[0]


class GraphStore:
    """The tables of one index and their allocators: node and upper-level slots here,
    items (ids, versions, their slots and the graveyard) in ``items``.

    With ``rows_from`` (the global store), a store of category nodes: it owns node and
    upper-level columns only (its own degree ``M``) and its ``tables`` read the
    embedding rows and the item columns of ``rows_from`` (``SHARED_WITH_GLOBAL``): a
    category node's ``node_vec`` is the row of its item's global node, so rows are
    stored once however many categories an item is in."""

    def __init__(self, dim: int, M: int, initial_capacity: int, half_copy: bool = False,
                 deleted_versions_kept: int = 0, rows_from: GraphStore | None = None) -> None:
        n = initial_capacity
        rows = {"node": n, "upper": max(16, n // M), "item": n}
        self._rows_from = rows_from
        self._composed: tuple[GraphTables, GraphTables, GraphTables] | None = None
        self._owned = tuple(name for name in COLUMNS if rows_from is None or name not in SHARED_WITH_GLOBAL)
        self._reservations = _Reservations()
        arrays = {
            name: self._reservations.view(name, None, rows[column.table], row_shape(column, dim, M, half_copy),
                                          np.dtype(column.dtype), column.fill)
            for name, column in COLUMNS.items() if name in self._owned
        }
        if rows_from is not None:
            arrays.update({name: getattr(rows_from.tables, name) for name in SHARED_WITH_GLOBAL})
        self.tables = GraphTables(**arrays, entry_node=np.full(1, -1, np.int32))
        self.node_slots = SlotPool()
        self.upper_slots = SlotPool()
        self.items = (ItemTable(self, IdMap(initial_capacity), SlotPool(), Graveyard(deleted_versions_kept))
                      if rows_from is None else rows_from.items)

    @property
    def tables(self) -> GraphTables:
        """The current tables (a store of category nodes: with the global store's
        current rows and item columns)."""
        if self._rows_from is None:
            return self._tables
        own, shared = self._tables, self._rows_from.tables
        cached = self._composed
        if cached is None or cached[0] is not own or cached[1] is not shared:  # either side was republished
            composed = own._replace(**{name: getattr(shared, name) for name in SHARED_WITH_GLOBAL})
            cached = self._composed = (own, shared, composed)
        return cached[2]

    @tables.setter
    def tables(self, tables: GraphTables) -> None:
        self._tables = tables

    def _pools(self) -> dict[str, SlotPool]:
        pools = {"node": self.node_slots, "upper": self.upper_slots}
        if self._rows_from is None:
            pools["item"] = self.items.slots
        return pools

    @property
    def node_capacity(self) -> int:
        return self._tables.node_state.shape[0]

    def add_nodes(self, nodes: np.ndarray, rows: np.ndarray, items: np.ndarray, levels: np.ndarray,
                  upper_rows: np.ndarray) -> np.ndarray:
        """Initialise allocated node slots, not yet reachable: each node's own embedding
        row (float32 and, with traversal in float16, its float16 copy) from ``rows``
        (float32[n, dim]), its item, level and empty adjacency, and its ``levels[i]``
        upper-level rows taken in order from ``upper_rows`` (chained upwards). Returns the
        embedding row of each node (a new node owns the row of its own slot)."""
        t = self.tables
        t.vectors[nodes] = rows
        if t.vectors16.shape[1]:
            t.vectors16[nodes] = rows.astype(np.float16).view(np.uint16)
        self.init_nodes(nodes, nodes, items, np.zeros(len(nodes), np.int32), levels, upper_rows)
        return nodes

    def init_nodes(self, nodes: np.ndarray, vector_rows: np.ndarray, items: np.ndarray, graphs: np.ndarray,
                   levels: np.ndarray, upper_rows: np.ndarray, direct: np.ndarray | None = None) -> None:
        """Initialise allocated node slots (see ``add_nodes``) whose embedding rows are
        already stored: node i reads row ``vector_rows[i]``, belongs to item ``items[i]``
        and subgraph ``graphs[i]``; ``direct[i]``: the item was put in that category
        itself (not through a descendant). Not chained to other nodes (``node_next``)."""
        t = self.tables
        t.node_vec[nodes] = vector_rows
        t.node_item[nodes] = items
        t.node_level[nodes] = levels
        t.node_graph[nodes] = graphs
        t.node_next[nodes] = -1
        t.node_direct[nodes] = 0 if direct is None else direct
        t.links0[nodes, 0] = 0
        t.node_upper[nodes] = -1
        has_upper = levels > 0
        if has_upper.any():
            # a node of level L owns L consecutive entries of upper_rows, chained upwards
            first = np.cumsum(levels) - levels
            t.node_upper[nodes[has_upper]] = upper_rows[first[has_upper]]
            following = np.empty(len(upper_rows), np.int32)
            following[:-1] = upper_rows[1:]
            following[(first + levels - 1)[has_upper]] = -1
            t.upper_next[upper_rows] = following
            t.upper_links[upper_rows, 0] = 0
        t.node_state[nodes] = LIVE

    def ensure_capacity(self, nodes: int, upper: int, items: int) -> None:
        """Grow tables so that slot indices below the given counts are valid."""
        t = self._tables
        changes: dict[str, np.ndarray] = {}
        for table, need in zip(TABLES, (nodes, upper, items), strict=True):
            names = [name for name in columns_of(table) if name in self._owned]
            if not names:
                continue
            current = getattr(t, names[0]).shape[0]
            if need <= current:
                continue
            grown = max(need, int(current * GROWTH))
            for name in names:
                changes[name] = self._grown(name, getattr(t, name), grown, COLUMNS[name].fill)
        if changes:
            # searches holding the previous tables keep its entry points (inside its views)
            self.tables = t._replace(**changes, entry_node=t.entry_node.copy())

    def _grown(self, name: str, current: np.ndarray, capacity: int, fill: int | float) -> np.ndarray:
        return self._reservations.view(name, current, capacity, current.shape[1:], current.dtype, fill)

    def export_views(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The used part of every saved column, the free lists (``free_<table>``), the
        entry points, the id map and the graveyard (views; copy them with writes
        excluded); the high-water mark of each table."""
        t = self._tables
        arrays: dict[str, np.ndarray] = {}
        marks: dict[str, int] = {}
        for table, pool in self._pools().items():
            high, arrays[f"free_{table}"] = pool.export()
            marks[table] = high
            for name in columns_of(table):
                if COLUMNS[name].saved and name in self._owned:
                    arrays[name] = getattr(t, name)[:high]
        arrays["entry_node"] = t.entry_node
        if self._rows_from is None:
            arrays.update(self.items.export_views())
        return arrays, marks

    @classmethod
    def restore(cls, dim: int, M: int, half_copy: bool, deleted_versions_kept: int, arrays: dict[str, np.ndarray],
                marks: dict[str, int], rows_from: GraphStore | None = None) -> GraphStore:
        """The inverse of ``export_views``: tables sized to the high-water marks (they
        grow on the next insert), the derived columns (the float16 copy) recomputed.
        A column a snapshot of an older version lacks starts at its fill value."""
        store = cls(dim, M, 1, half_copy, deleted_versions_kept, rows_from)
        changes: dict[str, np.ndarray] = {}
        for name, column in COLUMNS.items():
            if column.saved and name in store._owned:
                empty = getattr(store._tables, name)
                rows = max(1, marks[column.table])
                if name in arrays:
                    saved = arrays[name].astype(empty.dtype, copy=False)
                    changes[name] = store._grown(name, saved, rows, column.fill)
                else:
                    changes[name] = store._grown(name, empty[:0], rows, column.fill)
        if rows_from is None:
            vectors = changes["vectors"]
            changes["vectors16"] = store._grown("vectors16", store._tables.vectors16[:0], vectors.shape[0], 0)
            if half_copy:
                changes["vectors16"][:] = vectors.astype(np.float16).view(np.uint16)
        changes["entry_node"] = arrays["entry_node"].astype(np.int32)
        store.tables = store._tables._replace(**changes)
        store.node_slots = SlotPool.restore(marks["node"], arrays["free_node"])
        store.upper_slots = SlotPool.restore(marks["upper"], arrays["free_upper"])
        if rows_from is None:
            store.items = ItemTable.restore(store, deleted_versions_kept, marks["item"], arrays)
        return store

    def ensure_graphs(self, n_graphs: int) -> None:
        """Room for the entry points of ``n_graphs`` subgraphs (new ones empty). The
        array is replaced, not grown in place: searches keep the one they read."""
        t = self._tables
        current = t.entry_node.shape[0]
        if n_graphs <= current:
            return
        grown = np.full(max(n_graphs, 2 * current), -1, np.int32)
        grown[:current] = t.entry_node
        self.tables = t._replace(entry_node=grown)

    def reclaim(self, oldest_active_epoch: int) -> None:
        for pool in self._pools().values():
            pool.reclaim(oldest_active_epoch)

    def used_nbytes(self) -> int:
        """Like ``nbytes``, counting only the rows below each table's high-water mark
        (what the stored data occupies, whatever capacity is reserved beyond it)."""
        t = self._tables
        marks = {table: pool.high_water for table, pool in self._pools().items()}
        if self._rows_from is not None:
            marks["item"] = 0
        own = 0
        for name in self._owned:
            array = getattr(t, name)
            own += array[: marks[COLUMNS[name].table]].nbytes
        own += t.entry_node.nbytes + self.node_slots.nbytes() + self.upper_slots.nbytes()
        return own + (self.items.nbytes() if self._rows_from is None else 0)

    def nbytes(self) -> int:
        """Tables, free lists, the id map and the graveyard (a store of category nodes:
        only what it owns)."""
        pools = (self.node_slots, self.upper_slots)
        t = self._tables
        own = sum(getattr(t, name).nbytes for name in self._owned) + t.entry_node.nbytes
        own += sum(p.nbytes() for p in pools)
        return own + (self.items.nbytes() if self._rows_from is None else 0)


class ItemTable:
    """The item lifecycle (Qdrant's id tracker): external id -> item slot (``IdMap``),
    the item columns of ``GraphTables`` (kernels and the GPU mirror read them there;
    only this class writes them), their ``SlotPool`` and the ``Graveyard`` of deleted
    versions. Item slots are int32 ``slots``; -1 means an unknown id.

    Lifecycle: ``allocate`` -> ``add`` (written, not yet found by id) -> ``publish``
    (found by id) -> ``repoint`` on each refresh -> ``mark_deleted`` (gone from the id
    map; the nodes still exist) -> ``free_deleted`` once consolidation freed its nodes
    -> ``retire`` (reused after the readers of that epoch left). The writer calls all of
    them under its lock; ``read`` and ``slots_of`` may run beside it."""

    def __init__(self, store: GraphStore, ids: IdMap, slots: SlotPool, graveyard: Graveyard) -> None:
        self._store = store  # its ``tables`` are republished when they grow
        self.ids = ids
        self.slots = slots
        self.graveyard = graveyard

    @property
    def count(self) -> int:
        """Live items (ids in the id map)."""
        return self.ids.count

    def slots_of(self, ids: np.ndarray) -> np.ndarray:
        """int32 item slot of each id, -1 for an unknown (or deleted) id."""
        return self.ids.get(ids)

    def stored_versions(self, ids: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """int64 version of each id: the stored one where slots >= 0, else the version
        it was deleted at (int64 min if the graveyard does not remember it)."""
        stored = self._store.tables.item_versions[np.maximum(slots, 0)]
        unknown = slots < 0
        if unknown.any():
            stored[unknown] = self.graveyard.versions_of(ids[unknown])
        return stored

    def versions_at(self, slots: np.ndarray) -> np.ndarray:
        """int64 stored version of each item slot (all >= 0)."""
        return self._store.tables.item_versions[slots]

    def first_nodes(self, slots: np.ndarray) -> np.ndarray:
        """Head of the node chain of each item."""
        return self._store.tables.item_first_node[slots]

    def allocate(self, n: int) -> np.ndarray:
        """``n`` free item slots (their rows exist once the store's capacity covers
        ``slots.high_water``)."""
        return self.slots.allocate(n)

    def add(self, slots: np.ndarray, ids: np.ndarray, versions: np.ndarray, vector_rows: np.ndarray,
            first_nodes: np.ndarray) -> None:
        """Write new live items into ``slots`` (not found by id until ``publish``)."""
        t = self._store.tables
        t.item_ids[slots] = ids
        t.item_versions[slots] = versions
        t.item_vec[slots] = vector_rows
        t.item_first_node[slots] = first_nodes
        t.item_first_cnode[slots] = -1
        t.item_state[slots] = ITEM_LIVE

    def publish(self, ids: np.ndarray, slots: np.ndarray, versioned: bool) -> None:
        """Make added items findable by id. A versioned insert also ends the graveyard
        entry of its id (it is newer than the delete)."""
        self.ids.put(ids, slots)
        if versioned:
            self.graveyard.forget(ids)

    def repoint(self, slots: np.ndarray, first_nodes: np.ndarray, vector_rows: np.ndarray,
                versions: np.ndarray) -> np.ndarray:
        """Point refreshed items at their new node chain, vector row and version;
        returns the old chain heads (to tombstone)."""
        t = self._store.tables
        old_first = t.item_first_node[slots]  # fancy indexing: a copy
        t.item_first_node[slots] = first_nodes
        t.item_vec[slots] = vector_rows
        t.item_versions[slots] = versions
        return old_first

    def first_category_nodes(self, slots: np.ndarray) -> np.ndarray:
        """Head of the chain of category nodes of each item (-1: in no category)."""
        return self._store.tables.item_first_cnode[slots]

    def repoint_categories(self, slots: np.ndarray, first_cnodes: np.ndarray) -> np.ndarray:
        """Point items at a new chain of category nodes (-1: none); returns the old
        heads (to tombstone)."""
        t = self._store.tables
        old_first = t.item_first_cnode[slots]
        t.item_first_cnode[slots] = first_cnodes
        return old_first

    def mark_deleted(self, ids: np.ndarray, slots: np.ndarray, versions: np.ndarray | None) -> None:
        """Delete ``ids`` (found at ``slots``): gone from the id map, state DELETED until
        ``free_deleted``. With ``versions`` (of newer deletes only), they are stored and
        remembered in the graveyard, of unknown ids (slot -1) too: in a replay the delete
        may come before an older upsert of the same id."""
        known = slots >= 0
        doomed = slots[known]
        t = self._store.tables
        t.item_state[doomed] = ITEM_DELETED
        if versions is not None:
            t.item_versions[doomed] = versions[known]
            self.graveyard.record(ids, versions)
        self.ids.remove(ids[known])

    def free_deleted(self, owners: np.ndarray) -> np.ndarray:
        """Mark FREE the deleted items among ``owners`` (the items of nodes that
        consolidation freed); returns their slots, to ``retire``."""
        t = self._store.tables
        items = np.unique(owners)
        items = items[t.item_state[items] == ITEM_DELETED]
        t.item_state[items] = ITEM_FREE
        return items

    def retire(self, slots: np.ndarray, epoch: int) -> None:
        self.slots.retire(slots, epoch)

    def read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found bool[n], vectors float32[n, dim] NaN where not found, versions int64[n]
        -1 where not found). Safe beside the writer only under its sequence lock: a
        read that overlapped a write may mix the two, or raise IndexError."""
        slots = self.ids.get(ids)
        found = slots >= 0
        hit = slots[found]
        t = self._store.tables
        vectors = np.full((len(ids), t.vectors.shape[1]), np.nan, np.float32)
        vectors[found] = t.vectors[t.item_vec[hit]]
        versions = np.full(len(ids), -1, np.int64)
        versions[found] = t.item_versions[hit]
        return found, vectors, versions

    def nbytes(self) -> int:
        """The id map, free list and graveyard (the columns are counted with the tables)."""
        return self.ids.nbytes() + self.slots.nbytes() + self.graveyard.nbytes()

    def export_views(self) -> dict[str, np.ndarray]:
        """The id map and the graveyard (the columns and free list go with the tables)."""
        return {**self.ids.export_views("idmap"), **self.graveyard.export_views()}

    @classmethod
    def restore(cls, store: GraphStore, deleted_versions_kept: int, high_water: int,
                arrays: dict[str, np.ndarray]) -> ItemTable:
        return cls(store, IdMap.restore("idmap", arrays), SlotPool.restore(high_water, arrays["free_item"]),
                   Graveyard.restore(deleted_versions_kept, arrays))


class IdMap:
    """External id -> item slot (numba hash table; keeps load factor <= 1/2).

    The two arrays are replaced together, as one tuple, when the table grows: a reader
    that did not take the writer's lock (``Index.get``) always probes a key array and
    a value array of the same size, so it may read a stale or half-written entry (it
    checks for that itself) but never outside the arrays."""

    def __init__(self, capacity: int = 1024) -> None:
        size = 1 << max(4, int(np.ceil(np.log2(2 * max(1, capacity)))))  # 0: a graveyard that keeps nothing
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
        out = np.full(len(ids), np.iinfo(np.int64).min, np.int64)
        if self.count == 0:  # unversioned writes never fill it: no lookup
            return out
        slots = self._map.get(ids)
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
