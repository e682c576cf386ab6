"""Compile (or load from numba's cache) every kernel a request can reach, before the
server reports SERVING: otherwise the first calls after a fresh install wait for the
compiler (tens of seconds on a small machine) and miss their deadlines.

The kernels are specialised on the types of their arguments (dtype, layout, whether an
array is read-only), not on sizes, so the same steps on a small throwaway index of the
served index's configuration — with inputs made the way the server makes them (arrays
over the request's bytes) — leave every specialisation the real calls need compiled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from rtindex.core.config import IndexConfig
from rtindex.core.index import Index

log = logging.getLogger("rtindex.warmup")

ITEMS = 400  # enough for upper levels, sub-batches and a consolidation


def _as_wire(rows: np.ndarray) -> np.ndarray:
    """What the server hands the index: a read-only float32 view over request bytes."""
    return np.frombuffer(rows.astype("<f4").tobytes(), "<f4").reshape(rows.shape)


def steps(config: IndexConfig, kafka: bool) -> list[tuple[str, Callable[[], object]]]:
    """The warm-up, as (what, step) pairs to run in order."""
    cfg = replace(config, initial_capacity=64, device="cpu", repair_min_tombstones=1)
    index = Index.from_config(cfg)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ITEMS, cfg.dim)).astype(np.float32)
    ids = np.arange(ITEMS, dtype=np.int64)
    half = ITEMS // 2
    cats = [[1 + i % 5] for i in range(ITEMS)]
    queries = _as_wire(x[:8] + np.float32(0.01))

    def upsert(lo: int, hi: int, versions: bool, categories: bool) -> object:
        prepared = index.prepare_upsert(ids[lo:hi], _as_wire(x[lo:hi]), ids[lo:hi] + 1 if versions else None)
        item_categories = index.prepare_categories(cats[lo:hi], hi - lo) if categories else None
        return index.upsert_prepared(*prepared, categories=item_categories)

    out: list[tuple[str, Callable[[], object]]] = [
        ("taxonomy", lambda: index.set_category_parents([1, 2], [3, 3])),
        ("inserts", lambda: upsert(0, half, versions=False, categories=False)),
        ("inserts with versions and categories", lambda: upsert(half, ITEMS, versions=True, categories=True)),
        ("refreshes", lambda: upsert(0, half // 2, versions=False, categories=True)),
        ("search", lambda: index.search(queries, k=10, ef=32)),
        ("search, one query", lambda: index.search(queries[:1], k=10, ef=32)),
        ("search with level widths", lambda: index.search(queries, k=5, ef=16, level_ef=[2])),
        ("lock-step search", lambda: index.search(queries, k=10, ef=32, execution="lockstep")),
        ("category search", lambda: index.search(queries, k=[5, 10], ef=32, categories=[1, 3])),
        ("category search, one query", lambda: index.search(queries[:1], k=5, categories=[2, 3, 9])),
        ("category lock-step search", lambda: index.search(queries, k=5, categories=[1, 3], execution="lockstep")),
        ("get", lambda: index.get(ids[:10])),
        ("deletes and repair", lambda: (index.delete(ids[: ITEMS // 3]), index.consolidate())),
        ("versioned deletes", lambda: index.delete_prepared(*index.prepare_delete(ids[-10:], ids[-10:] + 5))),
        ("taxonomy move", lambda: index.set_category_parents([2], [-1])),
    ]
    if kafka:
        from rtindex.consumers.codec import decode_batch, encode

        encoded = [encode(1, int(i), 1, x[i], categories=cats[i]) for i in range(4)]
        keys = [key for key, _ in encoded]
        values = [value for _, value in encoded]
        out.append(("Kafka decoding", lambda: decode_batch(keys, values, cfg.dim)))
    out.append(("close", index.close))
    return out


def warm_up(config: IndexConfig, kafka: bool = False, cancelled: Callable[[], bool] = lambda: False) -> float:
    """Run ``steps``, logging each one (the first start after an install compiles them;
    later starts load them from the cache), until done or ``cancelled()``. Returns the
    seconds taken."""
    t0 = time.perf_counter()
    plan = steps(config, kafka)
    log.info("compiling kernels before serving (loaded from the cache after the first start)",
             extra={"steps": len(plan)})
    for done, (what, step) in enumerate(plan, 1):
        if cancelled():
            log.info("kernel warm-up cancelled", extra={"done": done - 1, "of": len(plan)})
            return time.perf_counter() - t0
        t_step = time.perf_counter()
        step()
        log.info("kernels ready", extra={"step": what, "done": done, "of": len(plan),
                                         "seconds": round(time.perf_counter() - t_step, 3)})
    seconds = time.perf_counter() - t0
    log.info("all kernels compiled", extra={"seconds": round(seconds, 3)})
    return seconds
