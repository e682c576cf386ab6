"""The embedded demo: build an index on a real dataset (or a generated one), search it
against exact ground truth, churn it (deletes, re-inserts, refreshes) and search again.
Everything runs in-process; no Kafka, no GPU."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from rtindex import Index, datasets


@dataclass
class DemoOptions:
    dataset: str = "sift5k"
    n: int = 0  # > 0: generated clustered data of this size instead of a dataset
    dim: int = 128
    M: int = 32
    ef_construction: int = 400
    threads: int = 0
    churn_rounds: int = 5
    seed: int = 0


def _load(opts: DemoOptions) -> datasets.Dataset:
    if opts.n > 0:
        data = datasets.clustered(opts.n + 1000, opts.dim, seed=opts.seed)
        base, queries = data[: opts.n], data[opts.n :]
        truth = datasets.exact_knn(base, queries, 100, "ip")
        return datasets.Dataset(f"clustered{opts.n}x{opts.dim}", base, queries, truth.astype(np.int32), "ip")
    return datasets.load(opts.dataset)


def _table(rows: list[list[object]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _search_rows(index: Index, ds: datasets.Dataset, efs: tuple[int, ...]) -> list[list[object]]:
    rows = []
    for ef in efs:
        index.search(ds.queries[:10], k=10, ef=ef)
        t0 = time.perf_counter()
        res = index.search(ds.queries, k=10, ef=ef)
        dt = time.perf_counter() - t0
        recall = datasets.recall_at_k(res.ids, ds.ground_truth, 10)
        rows.append([ef, f"{recall:.4f}", f"{len(ds.queries) / dt:,.0f}", f"{res.evaluations.mean():.0f}"])
    return rows


def run_demo(opts: DemoOptions) -> None:
    ds = _load(opts)
    n, dim = ds.base.shape
    print(f"# rtindex demo: {ds.name} ({n:,} x {dim}, {len(ds.queries):,} queries, metric {ds.metric})\n")
    index = Index(dim=dim, metric=ds.metric, M=opts.M, ef_construction=opts.ef_construction, threads=opts.threads)
    ids = np.arange(n, dtype=np.int64)
    batch = max(1, n // 50)
    t0 = time.perf_counter()
    with tqdm(total=n, desc="build", unit="item", leave=False) as bar:
        for lo in range(0, n, batch):
            index.upsert(ids[lo : lo + batch], ds.base[lo : lo + batch])
            bar.update(min(batch, n - lo))
    build_s = time.perf_counter() - t0
    print(f"built {n:,} items in {build_s:.2f} s ({n / build_s:,.0f} inserts/s, M={opts.M}, "
          f"ef_construction={opts.ef_construction}; first call includes kernel compilation when not cached)\n")

    efs = (16, 32, 64, 128)
    header = ["ef", "recall@10", "batch QPS", "rows scored / query"]
    before = _search_rows(index, ds, efs)
    print("## search after build\n")
    print(_table(before, header) + "\n")

    latencies = []
    for q in ds.queries[:200]:
        t0 = time.perf_counter()
        index.search(q, k=10, ef=64)
        latencies.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
    print(f"single-query latency at ef=64: p50 {p50:.3f} ms, p99 {p99:.3f} ms\n")

    rng = np.random.default_rng(opts.seed)
    ops = 0
    t0 = time.perf_counter()
    # churn that keeps the ground truth valid: deleted items come back with their own
    # vectors, refreshes rewrite an item with its own vector (same content, new node)
    for _ in tqdm(range(opts.churn_rounds), desc="churn", unit="round", leave=False):
        doomed = rng.choice(ids, n // 10, replace=False)
        index.delete(doomed)
        index.upsert(doomed, ds.base[doomed])
        refreshed = rng.choice(ids, n // 20, replace=False)
        index.upsert(refreshed, ds.base[refreshed])
        ops += 2 * len(doomed) + len(refreshed)
    churn_s = time.perf_counter() - t0
    print(f"churn: {opts.churn_rounds} rounds of delete 10% + re-insert 10% + refresh 5%: "
          f"{ops:,} ops in {churn_s:.2f} s ({ops / churn_s:,.0f} ops/s)\n")
    after = _search_rows(index, ds, efs)
    print("## search after churn\n")
    print(_table(after, header) + "\n")
    stats = index.stats()
    print(f"live items {stats['items']:,}; node slots in use {stats['node_slots_in_use']:,} "
          f"(capacity {stats['node_capacity']:,}); memory {stats['memory_bytes'] / 2**20:.1f} MiB; "
          f"consolidations {stats['consolidations']}, rows repaired {stats['repaired_rows']:,}")
