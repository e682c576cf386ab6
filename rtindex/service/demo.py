"""The embedded demo (the README's "run" command): start a server on a free local port
(no Kafka, no GPU), load a real dataset (or generate one), upsert it through the gRPC
client, search it against exact ground truth, churn it (deletes, re-inserts, refreshes),
search again, and print the tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from rtindex import datasets

if TYPE_CHECKING:
    from rtindex.api.client import IndexClient


@dataclass
class DemoOptions:
    dataset: str = "sift5k"
    n: int = 0  # > 0: generated clustered data of this size instead of a dataset
    dim: int = 128
    M: int = 32
    ef_construction: int = 400
    threads: int = 0
    churn_rounds: int = 5
    batch: int = 500  # ids per Upsert call
    seed: int = 0


def _load(opts: DemoOptions) -> datasets.Dataset:
    if opts.n > 0:
        data = datasets.clustered(opts.n + 1000, opts.dim, seed=opts.seed)
        base, queries = data[: opts.n], data[opts.n :]
        truth = datasets.exact_knn(base, queries, 100, "ip")
        return datasets.Dataset(f"clustered{opts.n}x{opts.dim}", base, queries, truth.astype(np.int32), "ip")
    return datasets.load(opts.dataset)


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _search_table(client: IndexClient, ds: datasets.Dataset) -> str:
    rows = []
    for ef in (16, 32, 64, 128):
        client.search(ds.queries[:10], k=10, ef=ef)
        t0 = time.perf_counter()
        res = client.search(ds.queries, k=10, ef=ef)
        batch_qps = len(ds.queries) / (time.perf_counter() - t0)
        latencies = []
        for q in ds.queries[:200]:
            t0 = time.perf_counter()
            client.search(q, k=10, ef=ef)
            latencies.append(time.perf_counter() - t0)
        p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
        recall = datasets.recall_at_k(res.ids, ds.ground_truth, 10)
        rows.append([ef, f"{recall:.4f}", f"{batch_qps:,.0f}", f"{p50:.3f}", f"{p99:.3f}", f"{res.evaluations.mean():.0f}"])
    return _table(["ef", "recall@10", "batch QPS", "p50 ms", "p99 ms", "rows scored / query"], rows)


def _in_batches(ids: np.ndarray, batch: int, call: Callable[[np.ndarray], object], bar: tqdm) -> None:
    """``call`` on consecutive slices of ``ids``, advancing ``bar`` by each slice's ids."""
    for lo in range(0, len(ids), batch):
        call(ids[lo : lo + batch])
        bar.update(min(batch, len(ids) - lo))


def _upsert_all(client: IndexClient, ids: np.ndarray, x: np.ndarray, batch: int) -> float:
    """Upsert ids with their rows (x is indexed by id); returns the seconds taken."""
    t0 = time.perf_counter()
    with tqdm(total=len(ids), desc="upsert", unit="item", leave=False) as bar:
        _in_batches(ids, batch, lambda part: client.upsert(part, x[part]), bar)
    return time.perf_counter() - t0


def run_demo(opts: DemoOptions) -> None:
    # the CLI imports this module for its --help defaults: the server loads only here
    from rtindex.api.client import IndexClient
    from rtindex.service.server import IndexServer
    from rtindex.service.settings import ServerConfig

    ds = _load(opts)
    n, dim = ds.base.shape
    config = ServerConfig(port=0, dim=dim, metric=ds.metric, M=opts.M, ef_construction=opts.ef_construction,
                          threads=opts.threads, log_level="warning")
    server = IndexServer(config)
    port = server.start()
    server.mark_ready()
    target = f"127.0.0.1:{port}"
    print(f"# rtindex demo: {ds.name} ({n:,} x {dim}, {len(ds.queries):,} queries, metric {ds.metric}) "
          f"through gRPC at {target}\n")
    try:
        with IndexClient(target, timeout=60) as client:
            client.wait_until_serving()
            ids = np.arange(n, dtype=np.int64)
            seconds = _upsert_all(client, ids, ds.base, opts.batch)
            print(f"upserted {n:,} items in batches of {opts.batch} in {seconds:.2f} s ({n / seconds:,.0f} items/s; "
                  f"M={opts.M}, ef_construction={opts.ef_construction}; the first run also compiles the kernels)\n")
            print("## search after build (batch = all queries in one call; latency = one query per call)\n")
            print(_search_table(client, ds) + "\n")

            rng = np.random.default_rng(opts.seed)
            ops = 0
            t0 = time.perf_counter()
            # churn that keeps the ground truth valid: deleted items come back with their
            # own vectors; a refresh rewrites an item with its own vector (new node)
            per_round = 2 * (n // 10) + n // 20
            with tqdm(total=opts.churn_rounds * per_round, desc="churn", unit="op", leave=False) as bar:
                for _ in range(opts.churn_rounds):
                    doomed = rng.choice(ids, n // 10, replace=False)
                    _in_batches(doomed, opts.batch, client.delete, bar)
                    _in_batches(doomed, opts.batch, lambda part: client.upsert(part, ds.base[part]), bar)
                    refreshed = rng.choice(ids, n // 20, replace=False)
                    _in_batches(refreshed, opts.batch, lambda part: client.upsert(part, ds.base[part]), bar)
                    ops += 2 * len(doomed) + len(refreshed)
            churn_s = time.perf_counter() - t0
            print(f"churn: {opts.churn_rounds} rounds of delete 10% + re-insert 10% + refresh 5%: "
                  f"{ops:,} ops in {churn_s:.2f} s ({ops / churn_s:,.0f} ops/s)\n")
            print("## search after churn\n")
            print(_search_table(client, ds) + "\n")
            stats = client.stats()
            print(f"live items {stats['items']:,}; node slots in use {stats['node_slots_in_use']:,} "
                  f"(capacity {stats['node_capacity']:,}); memory {stats['memory_bytes'] / 2**20:.1f} MiB; "
                  f"consolidations {stats['consolidations']}, rows repaired {stats['repaired_rows']:,}; "
                  f"writer batches {stats['write_batches']:,} for {stats['write_requests']:,} write calls")
    finally:
        server.stop(grace=2)
