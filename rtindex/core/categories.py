"""Categories: a taxonomy forest and one isolated subgraph per category.

Model (Alibaba's multi-category, multi-level HNSW; ``DESIGN.md`` §3, §5): categories are
int64 ids forming a forest (``Taxonomy``); an item put in a category is also a member of
all its ancestors. Every category with members has its own subgraph in the store of
category nodes (``GraphStore`` with ``rows_from`` the global store): an item has one node
in each category it belongs to, and those nodes read the embedding row of the item's
global node, so rows are stored once. A search walks the subgraphs of the requested
categories, so every category fills its own quota; a category with no more live members
than the beam is searched exhaustively, hence exactly.

This module holds the bookkeeping in numpy: ``ItemCategories`` (the categories given per
item, as compressed rows), ``Taxonomy`` (category id -> subgraph number, parents, the
closure over ancestors) and ``memberships`` (which subgraphs an item gets a node in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rtindex.core.storage import IdMap

# limits (documented in README): categories given for one item, categories named in one
# search request, and levels of the taxonomy (a longer chain of parents is refused)
MAX_ITEM_CATEGORIES = 64
MAX_SEARCH_CATEGORIES = 1024
MAX_TAXONOMY_DEPTH = 32


def item_categories(values: np.ndarray, where: str) -> np.ndarray:
    """The distinct category ids of one item (sorted), checked: ids >= 0, at most
    ``MAX_ITEM_CATEGORIES``; ValueError saying what to fix (``where``: which item)."""
    values = np.unique(np.asarray(values).astype(np.int64))
    if values.size and values[0] < 0:
        raise ValueError(f"{where}: holds a negative category id (category id {values[0]} is negative); "
                         "category ids are >= 0")
    if values.size > MAX_ITEM_CATEGORIES:
        raise ValueError(f"{where}: the item is put in {values.size} categories; the limit is {MAX_ITEM_CATEGORIES} "
                         "(give its most specific categories: ancestors are implied)")
    return values


@dataclass(frozen=True)
class ItemCategories:
    """Categories of each item of a batch as compressed rows: item i has
    ``values[offsets[i]:offsets[i + 1]]`` (int64 category ids, distinct per item)."""

    offsets: np.ndarray  # int64[n + 1]
    values: np.ndarray  # int64[m]

    @classmethod
    def none(cls, n: int) -> ItemCategories:
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_lists(cls, lists: Sequence[object], what: str) -> ItemCategories:
        """From one sequence of category ids per item (None or [] for none). Raises
        ValueError saying which item is wrong: a negative or non-integer id, or more
        than ``MAX_ITEM_CATEGORIES``. Repeats within an item are dropped."""
        counts = np.zeros(len(lists), np.int64)
        parts = []
        for i, entry in enumerate(lists):
            values = np.zeros(0, np.int64) if entry is None else np.asarray(entry)
            if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
                raise ValueError(f"{what}: categories[{i}] must be a list of integer category ids, got {entry!r}")
            values = item_categories(values, f"{what}: categories[{i}]")
            counts[i] = values.size
            parts.append(values)
        offsets = np.zeros(len(lists) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, np.concatenate(parts) if parts else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, index: np.ndarray) -> ItemCategories:
        """The rows of items ``index`` (in that order)."""
        counts = self.counts[index]
        offsets = np.zeros(len(index) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        starts = np.repeat(self.offsets[:-1][index], counts)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
        return ItemCategories(offsets, self.values[starts + within])

    def lists(self) -> list[list[int]]:
        return [self.values[a:b].tolist() for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    @staticmethod
    def concat(parts: Sequence[ItemCategories]) -> ItemCategories:
        offsets = [np.zeros(1, np.int64)]
        base = 0
        for part in parts:
            offsets.append(part.offsets[1:] + base)
            base += int(part.offsets[-1])
        return ItemCategories(np.concatenate(offsets), np.concatenate([p.values for p in parts] or [np.zeros(0, np.int64)]))


class Taxonomy:
    """Category ids and the forest over them. Each category known to the index has a
    subgraph number (``graph_of``), given on first use and kept for good; ``parent``
    holds the parent's subgraph number (-1 for a root). A category that was never given
    a parent is a root."""

    def __init__(self) -> None:
        self._ids = IdMap(64)  # category id -> subgraph number
        self.category_ids = np.zeros(0, np.int64)  # subgraph number -> category id
        self.parent = np.zeros(0, np.int32)

    @property
    def count(self) -> int:
        return len(self.category_ids)

    def graph_of(self, categories: np.ndarray) -> np.ndarray:
        """Subgraph number of each category id, -1 for one the index has never seen."""
        return self._ids.get(np.ascontiguousarray(categories, np.int64))

    def ensure(self, categories: np.ndarray) -> np.ndarray:
        """Subgraph numbers of ``categories``, giving new ones to unseen ids (roots)."""
        graphs = self.graph_of(categories)
        unseen = np.unique(categories[graphs < 0])
        if len(unseen):
            first = self.count
            numbers = np.arange(first, first + len(unseen), dtype=np.int32)
            self._ids.put(unseen, numbers)
            self.category_ids = np.concatenate([self.category_ids, unseen])
            self.parent = np.concatenate([self.parent, np.full(len(unseen), -1, np.int32)])
            graphs = self.graph_of(categories)
        return graphs

    def ancestors_closure(self, item_index: np.ndarray, graphs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memberships implied by direct ones (item_index[i] is in graphs[i]): every
        (item, category) pair once, with its ancestors, sorted by item then subgraph.
        Returns (item_index, graphs, direct uint8: 1 where given, 0 where implied)."""
        items = [item_index]
        found = [graphs]
        level = graphs
        level_items = item_index
        for _ in range(MAX_TAXONOMY_DEPTH):
            up = self.parent[level] if len(level) else level
            keep = up >= 0
            if not keep.any():
                break
            level, level_items = up[keep], level_items[keep]
            items.append(level_items)
            found.append(level)
        all_items = np.concatenate(items).astype(np.int64)
        all_graphs = np.concatenate(found).astype(np.int64)
        direct = np.zeros(len(all_items), np.uint8)
        direct[: len(item_index)] = 1
        key = all_items * max(1, self.count) + all_graphs
        order = np.lexsort((1 - direct, key))  # per pair, a direct entry first (direct is unsigned: no -direct)
        key = key[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        pick = order[first]
        return all_items[pick], all_graphs[pick].astype(np.int32), direct[pick]

    def set_parents(self, children: np.ndarray, parents: np.ndarray) -> np.ndarray:
        """Make ``parents[i]`` the parent of ``children[i]`` (-1: make it a root);
        unseen ids become categories. Validates the whole change first (ValueError,
        nothing changed): ids >= 0, a child named once, no cycle, at most
        ``MAX_TAXONOMY_DEPTH`` levels. Returns the subgraph numbers of every category
        whose set of ancestors changed (the moved ones and their descendants)."""
        if len(children) != len(parents):
            raise ValueError(f"set_category_parents: {len(children)} children but {len(parents)} parents; "
                             "give one parent per child")
        if len(children) and children.min() < 0:
            raise ValueError(f"set_category_parents: child category id {children.min()} is negative; ids are >= 0")
        if len(parents) and parents.min() < -1:
            raise ValueError(f"set_category_parents: parent {parents.min()} is negative; ids are >= 0 "
                             "(-1 makes the child a root)")
        unique_children, counts = np.unique(children, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"set_category_parents: category {unique_children[counts > 1][0]} is given "
                             f"{counts.max()} parents; a category has one parent (the taxonomy is a forest)")
        selfish = children == parents
        if selfish.any():
            raise ValueError(f"set_category_parents: category {children[selfish][0]} is its own parent")
        # number unseen ids as ``ensure`` will (after the known ones, in sorted order),
        # check the result, and only then register them and apply the change
        named = np.concatenate([children, parents[parents >= 0]])
        unseen = np.unique(named[self.graph_of(named) < 0])

        def number(ids: np.ndarray) -> np.ndarray:
            graphs = self.graph_of(ids)
            missing = graphs < 0
            graphs[missing] = self.count + np.searchsorted(unseen, ids[missing])
            return graphs

        parent = np.concatenate([self.parent, np.full(len(unseen), -1, np.int32)])
        child_graphs = number(children)
        parent_graphs = np.where(parents >= 0, number(np.maximum(parents, 0)), -1).astype(np.int32)
        moved = parent[child_graphs] != parent_graphs
        parent[child_graphs] = parent_graphs
        self._check_depths(parent)
        self.ensure(unseen)
        self.parent = parent
        return self.descendants(child_graphs[moved])

    def _check_depths(self, parent: np.ndarray) -> None:
        """ValueError if ``parent`` has a cycle or more than ``MAX_TAXONOMY_DEPTH`` levels."""
        current = np.arange(len(parent))
        for _ in range(MAX_TAXONOMY_DEPTH):
            up = parent[current]
            if not (up >= 0).any():
                return
            current = np.where(up >= 0, up, current)
        deep = np.unique(current[parent[current] >= 0])
        for start in deep[:16].tolist():  # a cycle, or a chain too long: say which
            node, steps = int(parent[start]), 0
            while node not in (start, -1) and steps < len(parent):
                node, steps = int(parent[node]), steps + 1
            if node == start:
                known = np.concatenate([self.category_ids, np.full(len(parent) - self.count, -1)])
                raise ValueError(f"set_category_parents: the change makes a cycle through category "
                                 f"{known[start] if known[start] >= 0 else 'a new id'}; a category cannot be "
                                 "its own ancestor")
        raise ValueError(f"set_category_parents: the taxonomy would have more than {MAX_TAXONOMY_DEPTH} "
                         "levels; flatten it")

    def descendants(self, graphs: np.ndarray) -> np.ndarray:
        """``graphs`` and every category below them."""
        if len(graphs) == 0:
            return graphs.astype(np.int32)
        inside = np.zeros(self.count, bool)
        inside[graphs] = True
        for _ in range(MAX_TAXONOMY_DEPTH):
            grow = ~inside & (self.parent >= 0)
            grow[grow] = inside[self.parent[grow]]
            if not grow.any():
                break
            inside |= grow
        return np.flatnonzero(inside).astype(np.int32)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(children, parents) category ids of every non-root category."""
        has = np.flatnonzero(self.parent >= 0)
        return self.category_ids[has], self.category_ids[self.parent[has]]

    def export_views(self) -> dict[str, np.ndarray]:
        return {"taxonomy_ids": self.category_ids, "taxonomy_parent": self.parent}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray]) -> Taxonomy:
        taxonomy = cls()
        ids = arrays.get("taxonomy_ids", np.zeros(0, np.int64)).astype(np.int64)
        taxonomy._ids = IdMap(max(64, len(ids)))
        taxonomy._ids.put(ids, np.arange(len(ids), dtype=np.int32))
        taxonomy.category_ids = ids.copy()
        taxonomy.parent = arrays.get("taxonomy_parent", np.zeros(0, np.int32)).astype(np.int32).copy()
        return taxonomy
