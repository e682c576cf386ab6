"""Catalog change streams shared by the Kafka and snapshot tests: a generator of mixed
inserts / deletes / refreshes with per-item versions, the reference model of what an
index must hold after them, and the check that an index (or a server) holds exactly that."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtindex import datasets
from rtindex.consumers.codec import DELETE, UPSERT, encode
from rtindex.consumers.producer import CatalogProducer

DIM = 16


class Model:
    """What the index must hold after applying a stream: id -> (version, vector)."""

    def __init__(self) -> None:
        self.live: dict[int, tuple[int, np.ndarray]] = {}
        self.versions: dict[int, int] = {}

    @classmethod
    def of(cls, ops: list) -> Model:
        model = cls()
        for op in ops:
            model.apply(*op)
        return model

    def apply(self, op: int, item_id: int, version: int, row: np.ndarray | None) -> None:
        if version <= self.versions.get(item_id, -1):
            return
        self.versions[item_id] = version
        if op == UPSERT:
            self.live[item_id] = (version, row)  # type: ignore[assignment]
        else:
            self.live.pop(item_id, None)


def mixed_stream(n_ops: int, seed: int) -> list[tuple[int, int, int, np.ndarray | None]]:
    """Inserts, deletes and refreshes with per-item monotonic versions."""
    rng = np.random.default_rng(seed)
    pool = datasets.clustered(n_ops + 1000, DIM, clusters=30, seed=seed)
    ops: list[tuple[int, int, int, np.ndarray | None]] = []
    live: list[int] = []
    version: dict[int, int] = {}
    next_id = 0
    for i in range(n_ops):
        r = rng.random()
        if r < 0.5 or len(live) < 100:
            item, op = next_id, UPSERT
            next_id += 1
            live.append(item)
        elif r < 0.75:
            item, op = live.pop(int(rng.integers(len(live)))), DELETE
        else:
            item, op = live[int(rng.integers(len(live)))], UPSERT
        version[item] = version.get(item, 0) + int(rng.integers(1, 3))
        ops.append((op, item, version[item], pool[i] if op == UPSERT else None))
    return ops


def produce(bootstrap: str, topic: str, ops: list) -> None:
    producer = CatalogProducer(bootstrap, topic)
    for op, item, version, row in ops:
        producer.send(*encode(op, item, version, row))
    producer.flush()


def assert_matches(index: Any, model: Model) -> None:
    """``index``: an rtindex.Index or an IndexClient (same get/search shape)."""
    ids = np.array(sorted(model.live), np.int64)
    assert (len(index) if hasattr(index, "__len__") else index.stats()["items"]) == len(ids)
    got = index.get(ids)
    assert got.found.all()
    np.testing.assert_array_equal(got.versions, [model.live[i][0] for i in ids])
    np.testing.assert_array_equal(got.vectors, np.stack([model.live[i][1] for i in ids]))
    dead = np.array([i for i in model.versions if i not in model.live], np.int64)
    assert not index.get(dead).found.any()
    queries = np.stack([model.live[i][1] for i in ids[:: max(1, len(ids) // 200)]])
    res = index.search(queries, k=10, ef=64)
    assert not np.isin(res.ids, dead).any()
    truth = datasets.exact_knn(np.stack([model.live[i][1] for i in ids]), queries, 10, "ip", base_ids=ids)
    assert datasets.recall_at_k(res.ids, truth, 10) >= 0.95
