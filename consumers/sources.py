"""Streams of catalog changes for ``rtindex produce``: a dataset (upserts), or a
generated churn stream (inserts, deletes, refreshes with per-item versions) whose final
state a reference model can be checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rtindex import datasets
from rtindex.consumers.codec import DELETE, UPSERT

Change = tuple[int, int, int, "np.ndarray | None"]  # op, id, version, embedding


def load_vectors(path: str) -> np.ndarray:
    """float32[n, dim] from a texmex .fvecs file or a .npy array."""
    p = Path(path)
    if p.suffix == ".fvecs":
        return datasets.read_vecs(p)
    if p.suffix == ".npy":
        return np.load(p).astype(np.float32)
    raise ValueError(f"{path}: expected a .fvecs or .npy file")


def dataset_changes(vectors: np.ndarray, start_id: int = 0, version: int = 1) -> Iterator[Change]:
    for i, row in enumerate(vectors):
        yield UPSERT, start_id + i, version, row


def churn_changes(n: int, dim: int, live: int = 10_000, seed: int = 0) -> Iterator[Change]:
    """First ``live`` inserts, then a mix: 40% inserts, 40% deletes, 20% refreshes
    (the live count stays near ``live``; with none live, an insert); versions grow per
    item."""
    if n < 0 or live < 0:
        raise ValueError(f"a churn stream needs n >= 0 changes and live >= 0 items, got n={n}, live={live}")
    return _churn(n, dim, live, seed)


def _churn(n: int, dim: int, live: int, seed: int) -> Iterator[Change]:
    rng = np.random.default_rng(seed)
    data = datasets.clustered(n + live, dim, seed=seed)
    alive: list[int] = []
    position: dict[int, int] = {}
    version: dict[int, int] = {}
    next_id = 0
    for i in range(n):
        r = rng.random()
        if len(alive) < max(live, 1) or r < 0.4:
            item, op = next_id, UPSERT
            next_id += 1
            position[item] = len(alive)
            alive.append(item)
        elif r < 0.8:
            k = int(rng.integers(len(alive)))
            item, op = alive[k], DELETE
            last = alive.pop()  # swap-remove keeps it O(1)
            if last != item:
                alive[k] = last
                position[last] = k
            del position[item]
        else:
            item, op = alive[int(rng.integers(len(alive)))], UPSERT
        version[item] = version.get(item, 0) + 1
        yield op, item, version[item], data[i] if op == UPSERT else None
