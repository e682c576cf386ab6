"""Which rows the writer changed since the last GPU sync.

The write paths report what they touch (under the write lock) through the ``Engine``
hooks (``note_nodes``, ``note_links``, ``note_chain_states``, ``note_items``); the
mirror takes the sets after each applied batch and moves exactly those rows. Cost on
the write path is O(rows touched): index arrays are appended to lists, deduplicated only
at sync time.

Consolidation (delete repair) rewrites rows from inside compiled kernels that report
only counts, so around it the tracker compares the mirrored adjacency and node states
before and after (``compare``): O(table) but once per consolidation, which itself scans
every row.

Sets (what a dirty entry means for the device; which arrays each one covers is the
``synced_by`` of the columns in ``rtindex.core.storage.COLUMNS``, see ``SYNCED``):
  node    a whole node record: vector rows, links0 row, state, level, upper head, item
  links0  a level-0 adjacency row
  state   a node state byte
  upper   an upper-level row (upper_links and upper_next)
  item    an item's external id
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from rtindex.core.storage import COLUMNS
from rtindex.kernels.layout import GraphTables


def _synced_arrays() -> dict[str, tuple[str, ...]]:
    """Dirty set -> the mirrored arrays whose rows it covers, from the storage schema."""
    out: dict[str, list[str]] = {}
    for name, column in COLUMNS.items():
        for dirty_set in column.synced_by:
            out.setdefault(dirty_set, []).append(name)
    return {dirty_set: tuple(names) for dirty_set, names in out.items()}


SYNCED = _synced_arrays()
SETS = tuple(SYNCED)


class DirtyRows:
    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in SETS}

    def add(self, name: str, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64).ravel()
        if len(rows):
            self._parts[name].append(rows[rows >= 0])

    def nodes(self, tables: GraphTables, nodes: np.ndarray) -> None:
        """Whole node records plus every upper-level row they own."""
        self.add("node", nodes)
        self.add("upper", upper_chain_rows(tables, nodes))

    def links(self, tables: GraphTables, nodes: np.ndarray, levels: np.ndarray | None = None) -> None:
        """Adjacency rows of ``nodes``: on every level they have (levels=None), or on
        levels[i] for nodes[i]. A node with a changed upper row has its whole (short)
        upper chain sent."""
        nodes = np.asarray(nodes, np.int64)
        if levels is None:
            self.add("links0", nodes)
            self.add("upper", upper_chain_rows(tables, nodes))
            return
        levels = np.asarray(levels)
        self.add("links0", nodes[levels == 0])
        self.add("upper", upper_chain_rows(tables, np.unique(nodes[levels > 0])))

    def chain_states(self, tables: GraphTables, first_nodes: np.ndarray) -> None:
        """States of every node on the item chains starting at ``first_nodes`` (what
        tombstoning changes)."""
        node = np.asarray(first_nodes, np.int64)
        node = node[node >= 0]
        for _ in range(tables.node_next.shape[0]):  # bounded: a chain cannot be longer
            if not len(node):
                break
            self.add("state", node)
            node = tables.node_next[node].astype(np.int64)
            node = node[node >= 0]

    @contextmanager
    def compare(self, get_tables: object, node_high_water: int, upper_high_water: int) -> Iterator[None]:
        """Mark the level-0 rows, states and upper rows that differ after the block
        (``get_tables()`` is called before and after: tables may be republished)."""
        t = get_tables()  # type: ignore[operator]
        before = (t.links0[:node_high_water].copy(), t.node_state[:node_high_water].copy(),
                  t.upper_links[:upper_high_water].copy())
        yield
        t = get_tables()  # type: ignore[operator]
        links0, state, upper = before
        self.add("links0", np.flatnonzero((t.links0[: len(links0)] != links0).any(axis=1)))
        self.add("state", np.flatnonzero(t.node_state[: len(state)] != state))
        self.add("upper", np.flatnonzero((t.upper_links[: len(upper)] != upper).any(axis=1)))

    def take(self) -> dict[str, np.ndarray]:
        """The sets collected since the last call (sorted, unique int64), and reset."""
        out = {}
        for name, parts in self._parts.items():
            out[name] = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
            parts.clear()
        return out

    def pending(self) -> int:
        return sum(len(p) for parts in self._parts.values() for p in parts)


def upper_chain_rows(tables: GraphTables, nodes: np.ndarray) -> np.ndarray:
    """Every upper-level row owned by ``nodes`` (walking node_upper / upper_next)."""
    nodes = np.asarray(nodes, np.int64)
    if not len(nodes):
        return np.empty(0, np.int64)
    row = tables.node_upper[nodes].astype(np.int64)
    row = row[row >= 0]
    out = []
    for _ in range(64):  # levels are capped at 32
        if not len(row):
            break
        out.append(row)
        row = tables.upper_next[row].astype(np.int64)
        row = row[row >= 0]
    return np.concatenate(out) if out else np.empty(0, np.int64)
