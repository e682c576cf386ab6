"""Load a graph saved by hnswlib (``Index.save_index``) into an ``rtindex.Index``, so
both libraries can be searched over the very same graph: equal recall, and any speed
difference is the search code alone. Format: hnswlib/hnswalg.h ``saveIndex``."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from rtindex import Index


def load_into_rtindex(path: Path, dim: int, metric: str, **options: object) -> Index:
    raw = Path(path).read_bytes()
    head = struct.unpack_from("<QQQQQQiIQQQdQ", raw, 0)
    (offset_level0, _max_elements, count, size_per_element, label_offset, offset_data,
     max_level, entry_point, max_m, max_m0, m, _mult, ef_c) = head
    pos = struct.calcsize("<QQQQQQiIQQQdQ")
    level0 = np.frombuffer(raw, np.uint8, count * size_per_element, pos).reshape(count, size_per_element)
    pos += count * size_per_element
    links0 = level0[:, offset_level0 : offset_level0 + 4 * (1 + max_m0)].copy().view(np.uint32).astype(np.int64)
    vectors = level0[:, offset_data : offset_data + 4 * dim].copy().view(np.float32)
    labels = level0[:, label_offset : label_offset + 8].copy().view(np.uint64).ravel().astype(np.int64)
    index = Index(dim=dim, metric=metric, M=int(m), ef_construction=int(ef_c), initial_capacity=count, **options)
    engine = index._engine
    store = engine.store
    levels = np.zeros(count, np.int32)
    upper_lists: list[np.ndarray] = []
    block = 4 * (1 + max_m)
    for node in range(count):
        size = struct.unpack_from("<I", raw, pos)[0]
        pos += 4
        if size:
            lv = size // block
            levels[node] = lv
            upper_lists.append(np.frombuffer(raw, np.uint32, size // 4, pos).reshape(lv, 1 + max_m).astype(np.int64))
            pos += size
    n_upper = int(levels.sum())
    store.node_slots.allocate(count)
    items = store.items.allocate(count)
    upper_rows = store.upper_slots.allocate(n_upper)
    store.ensure_capacity(count, n_upper, count)
    t = store.tables
    nodes = np.arange(count, dtype=np.int32)
    store.add_nodes(nodes, vectors, nodes, levels, upper_rows)
    t.links0[:count, 0] = links0[:, 0] & 0xFFFF
    t.links0[:count, 1 : 1 + max_m0] = links0[:, 1:]
    first = np.cumsum(levels) - levels
    for rows, node in zip(upper_lists, np.flatnonzero(levels), strict=True):
        for lv in range(levels[node]):
            r = upper_rows[first[node] + lv]
            t.upper_links[r, 0] = rows[lv, 0] & 0xFFFF
            t.upper_links[r, 1 : 1 + max_m] = rows[lv, 1:]
    store.items.add(items, labels, np.zeros(count, np.int64), nodes, nodes)
    t.entry_node[0] = entry_point
    assert t.node_level[entry_point] == max_level
    store.items.publish(labels, items, versioned=False)
    engine.live_nodes = count
    return index
