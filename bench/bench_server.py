"""Server load test: rtindex over gRPC against the same index in-process, same run.

A ``rtindex serve`` process holds the index (N x dim clustered unit vectors, loaded
through the client); load comes from separate client processes (so client and server
never share a GIL). The in-process reference is an identical index (same data, batches
and seed give the same graph) searched directly in this process.

Prints markdown: single-query latency (one client, sequential) and throughput/latency
with C concurrent clients, for single queries and batches of 64, with the overhead
against in-process; then acknowledged single-item upserts per second with the
write-ahead log on and off (servers with a data directory, same run), and how many
writes each fsync carried (group commit).

    scripts/bench.sh server                      # 100k x 128, 1 and 4 clients
    scripts/bench.sh server --n 20000 --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time

import numpy as np
import serving
from report import table, write_report

from rtindex import Index, datasets
from rtindex.client import IndexClient


def start_server(dim: int, threads: int, *flags: str) -> tuple[subprocess.Popen, int]:
    return serving.start_server("--dim", str(dim), "--metric", "ip", "--threads", str(threads),
                                "--max-write-ids", "1000000", *flags)


def timed_searches(search, queries: np.ndarray, batch: int, seconds: float, seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Latencies (s) of back-to-back ``search(batch of queries)`` calls for ``seconds``."""
    rng = np.random.default_rng(seed)
    search(queries[:batch])
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        lo = int(rng.integers(0, len(queries) - batch))
        t0 = time.perf_counter()
        search(queries[lo : lo + batch])
        latencies.append(time.perf_counter() - t0)
    return np.array(latencies)


def summarize(latencies: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    return {"qps": len(latencies) * batch / seconds, "p50": float(np.percentile(latencies, 50)) * 1e3,
            "p99": float(np.percentile(latencies, 99)) * 1e3}


def _client_loop(target: str, queries: np.ndarray, batch: int, ef: int, seconds: float, seed: int, out: mp.Queue) -> None:
    with IndexClient(target, timeout=30) as client:
        out.put(timed_searches(lambda q: client.search(q, k=10, ef=ef), queries, batch, seconds, seed))


def grpc_load(target: str, queries: np.ndarray, clients: int, batch: int, ef: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_client_loop, args=(target, queries, batch, ef, seconds, i, out)) for i in range(clients)]
    for p in procs:
        p.start()
    latencies = np.concatenate([out.get(timeout=seconds + 120) for _ in procs])
    for p in procs:
        p.join()
    return summarize(latencies, batch, seconds)


def _concurrent_singles(target: str, queries: np.ndarray, concurrency: int, ef: int, seconds: float,
                        out: mp.Queue) -> None:
    """``concurrency`` single-query Search calls kept in flight from one process (grpc.aio:
    64 client processes would measure the 2-core machine's scheduler, not the server)."""
    import asyncio

    import grpc

    from rtindex.api.v1 import index_pb2, index_pb2_grpc

    requests = [index_pb2.SearchRequest(queries=q.astype("<f4").tobytes(), dim=len(q), k=10, ef=ef)
                for q in queries[:2000]]

    async def run() -> list[float]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = index_pb2_grpc.IndexServiceStub(channel)
            await stub.Search(requests[0])
            latencies: list[float] = []
            end = time.perf_counter() + seconds

            async def loop(i: int) -> None:
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    await stub.Search(requests[(i * 7919 + len(latencies)) % len(requests)], timeout=30)
                    latencies.append(time.perf_counter() - t0)

            await asyncio.gather(*(loop(i) for i in range(concurrency)))
            return latencies

    out.put(np.array(asyncio.run(run())))


def concurrent_load(target: str, queries: np.ndarray, concurrency: int, ef: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_concurrent_singles, args=(target, queries, concurrency, ef, seconds, out))
    proc.start()
    latencies = out.get(timeout=seconds + 120)
    proc.join()
    return summarize(latencies, 1, seconds)


def _writer_loop(target: str, dim: int, first_id: int, seconds: float, out: mp.Queue) -> None:
    """Single-item upserts back to back (new ids, then refreshes), each acknowledged."""
    rows = np.random.default_rng(first_id).standard_normal((1000, dim)).astype(np.float32)
    latencies = []
    with IndexClient(target, timeout=30) as client:
        client.upsert([first_id], rows[:1])
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            client.upsert([first_id + i % 1000], rows[i % 1000 : i % 1000 + 1])
            latencies.append(time.perf_counter() - t0)
            i += 1
    out.put(np.array(latencies))


def write_load(wal: str, dim: int, threads: int, clients: int, seconds: float) -> dict[str, float]:
    """Acknowledged single-item upserts/s of ``clients`` writer processes against a fresh
    server with a data directory and the write-ahead log ``wal`` (on/off)."""
    with tempfile.TemporaryDirectory(prefix="rtindex-bench-wal-") as data:
        proc, port = serving.start_server("--dim", str(dim), "--metric", "ip", "--threads", str(threads),
                                          "--data-dir", data, "--wal", wal, "--snapshot-interval-s", "0")
        target = f"127.0.0.1:{port}"
        try:
            with IndexClient(target, timeout=60) as client:
                client.wait_until_serving(300)
            ctx = mp.get_context("spawn")
            out: mp.Queue = ctx.Queue()
            procs = [ctx.Process(target=_writer_loop, args=(target, dim, c * 1_000_000, seconds, out))
                     for c in range(clients)]
            for p in procs:
                p.start()
            latencies = np.concatenate([out.get(timeout=seconds + 120) for _ in procs])
            for p in procs:
                p.join()
            with IndexClient(target) as client:
                stats = client.stats()
        finally:
            proc.terminate()
            proc.wait(60)
    result = summarize(latencies, 1, seconds)
    fsyncs = stats.get("wal_fsyncs", 0)
    result["writes_per_fsync"] = stats.get("wal_records", 0) / fsyncs if fsyncs else float("nan")
    return result


def inprocess(index: Index, queries: np.ndarray, batch: int, ef: int, seconds: float) -> dict[str, float]:
    return summarize(timed_searches(lambda q: index.search(q, k=10, ef=ef), queries, batch, seconds, 0), batch, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="index worker threads (server and in-process)")
    ap.add_argument("--clients", default="1,4", help="concurrent client processes to try")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--concurrency", default="1,8,64", help="single-query calls kept in flight, coalescing off vs on "
                    "('' to skip)")
    ap.add_argument("--writers", default="1,8", help="concurrent writer processes for the write-ahead-log rows "
                    "('' to skip them)")
    ap.add_argument("--out", default="bench/results/server.md")
    args = ap.parse_args()

    data = datasets.clustered(args.n + 10_000, args.dim, seed=0)
    base, queries = data[: args.n], data[args.n :]
    ids = np.arange(args.n, dtype=np.int64)
    chunk = 10_000
    data_dir = tempfile.TemporaryDirectory(prefix="rtindex-bench-server-")
    proc, port = start_server(args.dim, args.threads, "--data-dir", data_dir.name, "--snapshot-interval-s", "0")
    target = f"127.0.0.1:{port}"
    try:
        with IndexClient(target, timeout=600) as client:
            client.wait_until_serving(300)
            for lo in range(0, args.n, chunk):
                client.upsert(ids[lo : lo + chunk], base[lo : lo + chunk])
        index = Index(dim=args.dim, metric="ip", threads=args.threads)
        for lo in range(0, args.n, chunk):
            index.upsert(ids[lo : lo + chunk], base[lo : lo + chunk])
        with IndexClient(target) as client:
            same = np.mean(client.search(queries[:200], k=10, ef=args.ef).ids == index.search(queries[:200], k=10, ef=args.ef).ids)

        rows = []
        summary = []
        for batch in (1, 64):
            local = inprocess(index, queries, batch, args.ef, args.seconds)
            rows.append(["in-process `Index.search`", batch, 1, f"{local['qps']:,.0f}", f"{local['p50']:.3f}", f"{local['p99']:.3f}", "-"])
            for c in (int(x) for x in args.clients.split(",")):
                remote = grpc_load(target, queries, c, batch, args.ef, args.seconds)
                overhead = remote["p50"] - local["p50"]
                rows.append(["gRPC `IndexClient.search`", batch, c, f"{remote['qps']:,.0f}", f"{remote['p50']:.3f}",
                             f"{remote['p99']:.3f}", f"p50 +{overhead * 1e3:.0f} us; QPS {remote['qps'] / local['qps']:.2f}x"])
                if batch == 1 and c == 1:
                    summary.append(f"- single-query p50 overhead over in-process: {overhead * 1e3:.0f} us (target <= 200 us)")
                if batch == 64:
                    summary.append(f"- batch-64 throughput with {c} client process(es): {remote['qps'] / local['qps']:.0%} of "
                                   "in-process (target >= 70%)")
        concurrency_rows, coalesce_summary = _coalescing(args, queries, proc, data_dir.name)
        write_rows = []
        for c in (int(x) for x in args.writers.split(",") if x):
            off = write_load("off", args.dim, args.threads, c, args.seconds)
            on = write_load("on", args.dim, args.threads, c, args.seconds)
            for wal, r in (("off", off), ("on", on)):
                write_rows.append([wal, c, f"{r['qps']:,.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
                                   "-" if wal == "off" else f"{r['writes_per_fsync']:.1f}",
                                   "-" if wal == "off" else f"{on['qps'] / off['qps']:.2f}x"])
        text = "\n".join([
            f"# rtindex server benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n",
            f"{args.n:,} x {args.dim} clustered unit vectors, inner product, k=10, ef={args.ef}, index threads "
            f"{args.threads}; server in its own process, clients in separate processes, loopback. Same graph on "
            f"both sides ({same:.1%} of result ids identical). Command: `scripts/bench.sh server {' '.join(sys.argv[1:])}`\n",
            table(["path", "queries per call", "concurrent clients", "queries/s", "p50 ms", "p99 ms", "vs in-process"], rows),
            "",
            "## Targets\n",
            *summary,
            "",
            "## Concurrent single-query clients: request coalescing\n",
            f"`C` single-query Search calls kept in flight (one grpc.aio client process), against the same index "
            f"served with `--coalesce off` (each call searches alone) and `--coalesce on` (calls with the same "
            f"parameters merged into one index call, <= 1 ms wait), same run, {args.seconds:g} s each.\n",
            table(["concurrent calls", "--coalesce", "queries/s", "p50 ms", "p99 ms", "queries/s vs off",
                   "p99 vs off"], concurrency_rows) if concurrency_rows else "(skipped)",
            "",
            *coalesce_summary,
            "",
            "## Durable writes: the write-ahead log\n",
            "Acknowledged single-item gRPC upserts from concurrent writer processes, servers with a data "
            "directory (fresh each), `--wal on` (append + fdatasync before the answer, one per writer batch) "
            "against `--wal off`, same run. The disk's fsync latency sets the floor; concurrent writers share "
            "fsyncs (writes per fsync > 1).\n",
            table(["--wal", "writers", "writes/s", "p50 ms", "p99 ms", "writes per fsync", "writes/s vs off"],
                  write_rows) if write_rows else "(skipped)",
            "",
        ])
        write_report(args.out, text)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        data_dir.cleanup()


def _coalescing(args: argparse.Namespace, queries: np.ndarray, proc: subprocess.Popen,
                data_dir: str) -> tuple[list[list[object]], list[str]]:
    """Stop the loaded server (its final snapshot keeps the index), then serve that
    snapshot with coalescing off and on in turn, each measured at every concurrency."""
    proc.terminate()
    proc.wait(120)
    levels = [int(x) for x in args.concurrency.split(",") if x]
    results: dict[str, dict[int, dict[str, float]]] = {}
    for mode in ("off", "on"):
        server, port = start_server(args.dim, args.threads, "--data-dir", data_dir, "--snapshot-interval-s", "0",
                                    "--coalesce", mode)
        try:
            with IndexClient(f"127.0.0.1:{port}", timeout=600) as client:
                client.wait_until_serving(300)
            results[mode] = {c: concurrent_load(f"127.0.0.1:{port}", queries, c, args.ef, args.seconds)
                             for c in levels}
        finally:
            server.terminate()
            server.wait(120)
    rows: list[list[object]] = []
    summary = []
    for c in levels:
        off, on = results["off"][c], results["on"][c]
        for mode, r in (("off", off), ("on", on)):
            rows.append([c, mode, f"{r['qps']:,.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}",
                         "-" if mode == "off" else f"{on['qps'] / off['qps']:.2f}x",
                         "-" if mode == "off" else f"{on['p99'] - off['p99']:+.2f} ms"])
        if c == max(levels):
            summary.append(f"- {c} concurrent single-query clients: coalescing gives {on['qps'] / off['qps']:.2f}x "
                           f"the throughput (target >= 3x), p99 {on['p99'] - off['p99']:+.2f} ms (target <= +2 ms)")
    return rows, summary


if __name__ == "__main__":
    main()
