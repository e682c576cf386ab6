"""Searches running while the writer churns: no errors, no deleted id after its delete
returned, every acknowledged write searchable."""

from __future__ import annotations

import threading
import time

import numpy as np

from rtindex import Index, datasets

DIM = 32


def test_searching_while_another_thread_writes_sees_no_deleted_ids() -> None:
    pool = datasets.clustered(60_000, DIM, clusters=40, seed=9)
    index = Index(dim=DIM, metric="l2", M=8, ef_construction=64, threads=2)
    index.upsert(np.arange(5000), pool[:5000])
    # compile every path before the clock starts (a cold kernel cache takes seconds)
    index.delete([4999])
    index.upsert([4999], pool[4999:5000])
    index.consolidate()
    index.search(pool[:16], k=10, ef=32)
    live = list(range(5000))
    deleted: list[int] = []  # appended only after delete() returned
    deleted_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    searches = [0]
    unfindable: list[int] = []

    def writer() -> None:
        rng = np.random.default_rng(1)
        next_id, next_row = 5000, 5000
        try:
            while not stop.is_set():
                doomed = rng.choice(live, 50, replace=False)
                index.delete(doomed)
                with deleted_lock:
                    deleted.extend(doomed.tolist())
                for d in doomed.tolist():
                    live.remove(d)
                new = np.arange(next_id, next_id + 50)
                rows = pool[next_row : next_row + 50]
                index.upsert(new, rows)
                # acknowledged = searchable: each new row finds itself
                hit = index.search(rows, k=1, ef=32).ids[:, 0]
                unfindable.extend(new[hit != new].tolist())
                live.extend(new.tolist())
                next_id += 50
                next_row += 50
                refresh = rng.choice(live, 20, replace=False)
                index.upsert(refresh, pool[next_row : next_row + 20])
                next_row += 20
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with deleted_lock:
                    gone = np.array(deleted, np.int64)
                queries = pool[rng.integers(0, 60_000, 16)]
                ids = index.search(queries, k=10, ef=32).ids
                leaked = np.intersect1d(ids, gone)
                assert len(leaked) == 0, f"deleted ids returned after delete() returned: {leaked[:5]}"
                for row in ids:
                    found = row[row >= 0]
                    assert len(np.unique(found)) == len(found)
                searches[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (2, 3)]
    for t in threads:
        t.start()
    started = time.monotonic()
    while time.monotonic() - started < 60 and not errors and (
        time.monotonic() - started < 3.0 or searches[0] < 50 or len(deleted) < 500
    ):
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert searches[0] > 50 and len(deleted) > 500
    assert len(unfindable) <= 0.01 * (len(index) + len(deleted)), f"{len(unfindable)} writes not findable"
    assert len(index) == len(live)
    stats = index.stats()
    assert stats["active_searches"] == 0
    assert stats["node_slots_in_use"] <= 1.3 * len(index) + 200


def test_workers_sharing_a_claim_counter_take_every_item_exactly_once() -> None:
    """The insert kernels split a batch among threads with an atomic counter; a lost or
    doubled update would skip a node or link it twice."""
    from numba import njit

    from rtindex.kernels.atomics import fetch_add

    @njit(nogil=True)
    def claim_all(started, threads, cursor, n, taken):
        fetch_add(started, 0, 1)
        spins = 0  # wait (bounded) until every thread runs, so that the claims really race
        while fetch_add(started, 0, 0) < threads and spins < 500_000_000:
            spins += 1
        while True:
            i = fetch_add(cursor, 0, 1)
            if i >= n:
                return
            taken[i] += 1

    n, threads = 5_000_000, 4
    claim_all(np.zeros(1, np.int64), 1, np.zeros(1, np.int64), 10, np.zeros(10, np.int64))  # compile first
    for _ in range(5):  # a race shows in some rounds only (2 cores, 4 threads)
        started, cursor, taken = np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(n, np.int64)
        workers = [threading.Thread(target=claim_all, args=(started, threads, cursor, n, taken))
                   for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        assert (taken == 1).all(), np.bincount(taken)
        assert cursor[0] == n + threads  # each thread's last claim overshoots once
