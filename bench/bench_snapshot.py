"""Snapshot benchmark: write time and size, restore-to-serving against rebuilding from
scratch, and search latency while a snapshot is written — same run, same data.

1. Rebuild from scratch: N x dim clustered unit vectors upserted into an empty index
   (what a replica without a snapshot must do before it can serve).
2. Snapshot, as the server takes it: the state is copied into shared memory (the pause
   writes wait for) and a helper process writes the RocksDB files and the manifest:
   total time, size on disk.
3. Search p50/p99 (single queries, one thread) while idle and while that snapshot is
   being written.
4. Restore to serving: ``rtindex serve --data-dir D`` as a new process, timed from
   launch until its health service says SERVING (process start, imports, loading and
   verifying every checksum included); and the in-process load time alone.

    scripts/bench.sh snapshot                   # 1M x 128
    scripts/bench.sh snapshot --n 100000        # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import serving
from report import table, write_report

from rtindex import Index, datasets
from rtindex.client import IndexClient
from rtindex.snapshots.store import SnapshotStore
from rtindex.snapshots.writer_process import SnapshotWriterProcess


def single_query_latencies(index: Index, queries: np.ndarray, stop: threading.Event, ef: int) -> np.ndarray:
    out = []
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        index.search(queries[i % len(queries)], k=10, ef=ef)
        out.append(time.perf_counter() - t0)
        i += 1
    return np.array(out) * 1e3


def latencies_during(index: Index, queries: np.ndarray, ef: int, work: object) -> tuple[np.ndarray, float]:
    """Run ``work()`` (or sleep ``work`` seconds) while one thread searches."""
    stop = threading.Event()
    result: list[np.ndarray] = []
    searcher = threading.Thread(target=lambda: result.append(single_query_latencies(index, queries, stop, ef)))
    searcher.start()
    t0 = time.perf_counter()
    if callable(work):
        work()
    else:
        time.sleep(float(work))  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    stop.set()
    searcher.join()
    return result[0], seconds


def restore_to_serving(data_dir: Path) -> float:
    t0 = time.perf_counter()
    proc, port = serving.start_server("--data-dir", str(data_dir), "--snapshot-interval-s", "0")
    try:
        with IndexClient(f"127.0.0.1:{port}", timeout=5) as client:
            client.wait_until_serving(timeout=900)
            return time.perf_counter() - t0
    finally:
        proc.kill()  # SIGKILL: no final snapshot, the directory stays as it was
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--dir", default="", help="data directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--out", default="bench/results/snapshot.md")
    args = ap.parse_args()

    x = datasets.clustered(args.n + 1000, args.dim, clusters=100, std=0.35, seed=0)
    base, queries = x[: args.n], x[args.n :]
    index = Index(dim=args.dim, metric="ip", M=args.M, ef_construction=args.ef_construction)
    index.upsert(np.arange(2000), base[:2000])  # compile the kernels outside the timing
    index = Index(dim=args.dim, metric="ip", M=args.M, ef_construction=args.ef_construction)
    print(f"rebuilding {args.n:,} x {args.dim} from scratch ...", flush=True)
    t0 = time.perf_counter()
    for start in range(0, args.n, args.batch):
        index.upsert(np.arange(start, min(start + args.batch, args.n)), base[start : start + args.batch])
    rebuild = time.perf_counter() - t0

    data_dir = Path(args.dir or tempfile.mkdtemp(prefix="rtindex-bench-snapshot-"))
    store = SnapshotStore(data_dir, keep=2)
    writer = SnapshotWriterProcess()  # what the server uses: a helper process writes the files
    idle, _ = latencies_during(index, queries, args.ef, 10.0)
    infos = []
    during, write_seconds = latencies_during(index, queries, args.ef,
                                             lambda: infos.append(writer.write(store, index, None)))
    writer.close()
    info = infos[0]
    t0 = time.perf_counter()
    state, _ = store.load(info.seq)
    loaded = Index.from_state(state)
    load_seconds = time.perf_counter() - t0
    del state
    same = np.array_equal(loaded.search(queries, k=10, ef=args.ef).ids, index.search(queries, k=10, ef=args.ef).ids)
    loaded.close()
    serving = restore_to_serving(data_dir)
    if not args.dir:
        shutil.rmtree(data_dir, ignore_errors=True)

    p = lambda a, q: float(np.percentile(a, q))  # noqa: E731
    text = "\n".join([
        f"# rtindex snapshot benchmark ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"{args.n:,} x {args.dim} clustered unit vectors, inner product, M={args.M}, "
        f"ef_construction={args.ef_construction}; {os.cpu_count()} cores, {platform.python_version()}. "
        f"Command: `scripts/bench.sh snapshot {' '.join(sys.argv[1:])}`",
        "",
        table(["what", "value"], [
            ["rebuild from scratch (upsert all rows into an empty index)", f"{rebuild:.1f} s"],
            ["snapshot write (copy + RocksDB + checksums + flush)", f"{info.write_seconds:.2f} s"],
            ["writes paused while the state was copied", f"{info.pause_seconds * 1e3:.0f} ms"],
            ["snapshot size on disk", f"{info.bytes / 2**20:,.0f} MiB"],
            ["load + verify + rebuild the index in-process", f"{load_seconds:.2f} s"],
            ["restore to serving (`rtindex serve --data-dir`, launch -> SERVING)", f"{serving:.2f} s"],
            ["**rebuild / restore-to-serving**", f"**{rebuild / serving:.1f}x** (target >= 10x)"],
            ["restored index returns the same ids", str(same)],
        ]),
        "",
        f"Single-query search latency (one thread, k=10, ef={args.ef}), ms:",
        "",
        table(["", "searches", "p50", "p99"], [
            ["idle", len(idle), f"{p(idle, 50):.3f}", f"{p(idle, 99):.3f}"],
            [f"during the snapshot write ({write_seconds:.1f} s)", len(during), f"{p(during, 50):.3f}",
             f"{p(during, 99):.3f}"],
            ["**ratio**", "", f"{p(during, 50) / p(idle, 50):.2f}x",
             f"**{p(during, 99) / p(idle, 99):.2f}x** (target <= 2x)"],
        ]),
    ])
    write_report(args.out, text)


if __name__ == "__main__":
    main()
