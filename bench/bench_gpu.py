"""GPU benchmark: rtindex's GPU search against its CPU path in the same run (same index,
same graph, so any recall difference is a bug), plus faiss-gpu / cuVS CAGRA when they
are importable, and the cost of syncing a write batch to the device mirror.

Data: N x dim L2-normalised mixture of 100 Gaussian clusters (seeded); queries from the
same mixture; inner product; exact ground truth by brute force on the GPU.

    scripts/bench.sh gpu                              # 1M x 128, batches 1/64/1024/10k
    scripts/bench.sh gpu --n 200000 --queries 2000    # a quick look

Needs an NVIDIA GPU with CuPy (the gpu extra); without one it says so and exits with
status 2. Not yet run: the numbers in bench/results/gpu.md come from the first machine
that runs it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from report import table, write_report

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rtindex import Index, datasets
from rtindex.core.gpu import probe

K = 10


def gpu_exact_knn(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import cupy as cp

    b = cp.asarray(base)
    out = np.empty((len(queries), k), np.int64)
    for lo in range(0, len(queries), 1024):
        s = cp.asarray(queries[lo : lo + 1024]) @ b.T
        top = cp.argpartition(-s, k, axis=1)[:, :k]
        order = cp.argsort(-cp.take_along_axis(s, top, axis=1), axis=1)
        out[lo : lo + 1024] = cp.asnumpy(cp.take_along_axis(top, order, axis=1))
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return datasets.recall_at_k(found, truth, K)


def run_batches(search, queries: np.ndarray, batch: int) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    ids = np.empty((len(queries), K), np.int64)
    t0 = time.perf_counter()
    for lo in range(0, len(queries), batch):
        ids[lo : lo + batch] = search(queries[lo : lo + batch])
    return ids, time.perf_counter() - t0


def rtindex_rows(idx: Index, queries: np.ndarray, truth: np.ndarray, batches: list[int], efs: list[int],
                 single_queries: int) -> list[list[object]]:
    rows = []
    for batch in batches:
        q = queries[: single_queries] if batch == 1 else queries
        t = truth[: len(q)]
        for ef in efs:
            cells: list[object] = [batch, ef]
            for execution in ("auto", "per_query"):  # auto = GPU on this index, per_query = CPU kernels
                def search(x: np.ndarray, ef: int = ef, execution: str = execution) -> np.ndarray:
                    return idx.search(x, k=K, ef=ef, execution=execution).ids

                run_batches(search, q[: min(len(q), 2 * batch)], batch)  # warm-up
                ids, seconds = run_batches(search, q, batch)
                cells += [f"{len(q) / seconds:,.0f}", f"{recall(ids, t):.4f}"]
            gpu_qps = float(str(cells[2]).replace(",", ""))
            cpu_qps = float(str(cells[4]).replace(",", ""))
            cells.append(f"{gpu_qps / cpu_qps:.2f}x")
            rows.append(cells)
            print(table(["batch", "ef", "GPU QPS", "GPU recall@10", "CPU QPS", "CPU recall@10", "GPU/CPU"], [cells]))
    return rows


def peer_rows(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, batches: list[int]) -> tuple[list, list]:
    """faiss-gpu (CAGRA if built with cuVS, else IVF-Flat) and cuVS CAGRA, if importable."""
    rows: list[list[object]] = []
    notes: list[str] = []
    try:
        import faiss

        if faiss.get_num_gpus() < 1:
            raise ImportError("faiss has no GPU support in this build")
        res = faiss.StandardGpuResources()
        if hasattr(faiss, "GpuIndexCagra"):
            index = faiss.GpuIndexCagra(res, base.shape[1], faiss.METRIC_INNER_PRODUCT)
            name, knobs = "faiss-gpu CAGRA", [("itopk", v) for v in (32, 64, 128, 256)]
        else:
            index = faiss.GpuIndexIVFFlat(res, base.shape[1], 4096, faiss.METRIC_INNER_PRODUCT)
            name, knobs = "faiss-gpu IVF-Flat (nlist 4096)", [("nprobe", v) for v in (8, 16, 32, 64)]
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(base)
        index.add(base)
        notes.append(f"{name}: build {time.perf_counter() - t0:.1f} s")
        for batch in batches:
            for knob, value in knobs:
                if knob == "nprobe":
                    index.nprobe = value
                    params = None
                else:
                    params = faiss.SearchParametersCagra()
                    params.itopk_size = value

                def search(x: np.ndarray, params=params) -> np.ndarray:  # type: ignore[no-untyped-def]
                    return index.search(x, K, params=params)[1] if params is not None else index.search(x, K)[1]

                q = queries[:2000] if batch == 1 else queries
                ids, seconds = run_batches(search, q, batch)
                rows.append([name, batch, f"{knob}={value}", f"{len(q) / seconds:,.0f}",
                             f"{recall(ids, truth[: len(q)]):.4f}"])
    except Exception as exc:  # ImportError, or a CPU-only faiss
        notes.append(f"faiss-gpu: not run ({type(exc).__name__}: {exc})")
    try:
        import cupy as cp
        from cuvs.neighbors import cagra

        t0 = time.perf_counter()
        index = cagra.build(cagra.IndexParams(metric="inner_product"), cp.asarray(base))
        notes.append(f"cuVS CAGRA: build {time.perf_counter() - t0:.1f} s")
        for batch in batches:
            for itopk in (32, 64, 128, 256):
                sp = cagra.SearchParams(itopk_size=itopk)

                def search(x: np.ndarray, sp=sp) -> np.ndarray:  # type: ignore[no-untyped-def]
                    _, neighbors = cagra.search(sp, index, cp.asarray(x), K)
                    return cp.asnumpy(cp.asarray(neighbors)).astype(np.int64)

                q = queries[:2000] if batch == 1 else queries
                ids, seconds = run_batches(search, q, batch)
                rows.append(["cuVS CAGRA", batch, f"itopk={itopk}", f"{len(q) / seconds:,.0f}",
                             f"{recall(ids, truth[: len(q)]):.4f}"])
    except Exception as exc:
        notes.append(f"cuVS CAGRA: not run ({type(exc).__name__}: {exc})")
    return rows, notes


def sync_rows(idx: Index, pool: np.ndarray, n: int, rounds: int) -> list[list[object]]:
    """Write batches of 1k upserts (half new ids, half refreshes) and the device sync
    each one costs, against a full re-upload of the mirror."""
    rng = np.random.default_rng(1)
    samples = []
    next_id = n
    for r in range(rounds):
        new_ids = np.arange(next_id, next_id + 500)
        next_id += 500
        refresh = rng.choice(n, 500, replace=False)
        ids = np.concatenate([new_ids, refresh])
        rows = pool[r * 1000 : (r + 1) * 1000]
        t0 = time.perf_counter()
        idx.upsert(ids, rows)
        wall = time.perf_counter() - t0
        s = idx.stats()
        samples.append((wall, s["gpu_sync_last_ms"], s["gpu_sync_last_rows"], s["gpu_sync_last_bytes"]))
    backend = idx._engine.gpu
    t0 = time.perf_counter()
    backend.upload_all()
    full = time.perf_counter() - t0
    s = idx.stats()
    return [
        ["upsert of 1k (500 new, 500 refreshes), wall ms, median", f"{1e3 * statistics.median(x[0] for x in samples):.1f}"],
        ["device sync of that batch, ms, median", f"{statistics.median(x[1] for x in samples):.2f}"],
        ["rows moved per sync, median", f"{statistics.median(x[2] for x in samples):,.0f}"],
        ["bytes moved per sync, median", f"{statistics.median(x[3] for x in samples):,.0f}"],
        ["full re-upload of the mirror, ms (what the sync avoids)", f"{1e3 * full:.1f}"],
        ["device memory of the mirror + search buffers, MiB", f"{s['gpu_memory_bytes'] / 2**20:,.0f}"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--single-queries", type=int, default=1_000, help="queries timed one by one (batch size 1)")
    ap.add_argument("--batches", default="1,64,1024,10000")
    ap.add_argument("--efs", default="16,32,64,128,256")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for the build and the CPU path (0 = all)")
    ap.add_argument("--precision", default="float16", help="traversal precision (float16 or float32)")
    ap.add_argument("--sync-rounds", type=int, default=10)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/gpu.md")
    args = ap.parse_args()

    devices, why = probe()
    if not devices:
        print(f"bench_gpu: no GPU: {why}. Run this on a machine with an NVIDIA GPU and the gpu extra "
              "(RTINDEX_EXTRAS=dev,bench,gpu; scripts/bench.sh gpu installs it).", file=sys.stderr)
        sys.exit(2)
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    batches = [int(b) for b in args.batches.split(",")]
    efs = [int(e) for e in args.efs.split(",")]
    extra = args.sync_rounds * 1000
    data = datasets.clustered(args.n + args.queries + extra, args.dim, clusters=100, std=0.35, seed=args.seed)
    base, queries, pool = data[: args.n], data[args.n : args.n + args.queries], data[args.n + args.queries :]
    print(f"ground truth for {len(queries)} queries on {gpu_name} ...", flush=True)
    truth = gpu_exact_knn(base, queries, K)

    idx = Index(dim=args.dim, metric="ip", M=args.M, ef_construction=args.ef_construction, threads=args.threads,
                traversal_precision=args.precision, initial_capacity=args.n, seed=args.seed, device="cuda")
    t0 = time.perf_counter()
    for lo in range(0, args.n, 100_000):
        idx.upsert(np.arange(lo, min(args.n, lo + 100_000)), base[lo : lo + 100_000])
        print(f"  built {min(args.n, lo + 100_000):,} in {time.perf_counter() - t0:.0f} s", flush=True)
    build = time.perf_counter() - t0

    search_rows = rtindex_rows(idx, queries, truth, batches, efs, args.single_queries)
    peers, notes = ([], ["peers: skipped (--no-peers)"]) if args.no_peers else peer_rows(base, queries, truth, batches)
    syncs = sync_rows(idx, pool, args.n, args.sync_rounds)

    text = "\n\n".join([
        "# GPU benchmark",
        f"{gpu_name}; CPU: {platform.processor() or platform.machine()}, {idx.config.worker_threads} threads; "
        f"{args.n:,} x {args.dim} clustered (100 clusters, seed {args.seed}), inner product, {len(queries):,} queries "
        f"({args.single_queries:,} for batch size 1), M={args.M}, ef_construction={args.ef_construction}, "
        f"traversal {args.precision}; build (CPU, with the device mirror kept in sync) {build:.0f} s.",
        "## rtindex: GPU vs CPU path, same index",
        table(["batch", "ef", "GPU QPS", "GPU recall@10", "CPU QPS", "CPU recall@10", "GPU/CPU"], search_rows),
        "## GPU peers",
        table(["library", "batch", "setting", "QPS", "recall@10"], peers) if peers else "(none ran)",
        "\n".join(f"- {n}" for n in notes),
        "## Write batch sync (dirty rows only)",
        table(["what", "value"], syncs),
    ])
    write_report(args.out, text)


if __name__ == "__main__":
    main()
