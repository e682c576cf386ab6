"""Core benchmark: rtindex against hnswlib, faiss HNSW and usearch in the same run.

Data: N x dim L2-normalised mixture of 100 Gaussian clusters (std 0.35), seeded; queries
drawn from the same mixture; inner product (= cosine). Exact ground truth by brute
force. Every library: same M, ef_construction and thread count.

Prints markdown tables (build, recall/QPS per ef, best QPS at recall >= target, single
query latency, churn, memory) and the ratios to hnswlib that the targets refer to.
Timings are interleaved across libraries and repeated (median) because the machines are
shared and noisy; quote the ratios, not the absolute numbers.

    scripts/bench.sh core                  # the full run (about 10 minutes on 2 cores)
    scripts/bench.sh core --n 20000 --churn-live 10000 --rounds 3   # a quick look
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

from peers import ALL_PEERS, Params, Peer, RtindexLockstepPeer

from rtindex import datasets

K = 10


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def batch_qps(peers: dict[str, Peer], queries: np.ndarray, truth: np.ndarray, efs: list[int], reps: int):
    """{name: {ef: (recall, qps)}}; repetitions interleaved across libraries, median time."""
    times: dict[str, dict[int, list[float]]] = {n: {ef: [] for ef in efs} for n in peers}
    recall: dict[str, dict[int, float]] = {n: {} for n in peers}
    for ef in efs:
        for name, peer in peers.items():
            recall[name][ef] = datasets.recall_at_k(peer.search(queries, K, ef), truth, K)  # also warms up
        for _ in range(reps):
            for name, peer in peers.items():
                _, dt = timed(peer.search, queries, K, ef)
                times[name][ef].append(dt)
    return {n: {ef: (recall[n][ef], len(queries) / statistics.median(times[n][ef])) for ef in efs} for n in peers}


def smallest_ef_reaching(peer: Peer, queries: np.ndarray, truth: np.ndarray, efs: list[int], target: float):
    """(ef, recall) at the smallest ef whose recall reaches the target; recall does not
    depend on timing, so this step is free of noise."""
    for ef in efs:
        recall = datasets.recall_at_k(peer.search(queries, K, ef), truth, K)
        if recall >= target:
            return ef, recall
    return None, 0.0


def paired_qps(peers: dict[str, Peer], efs: dict[str, int], queries: np.ndarray, rounds: int, reference: str):
    """Each library at its own ef, timed in interleaved rounds. Returns {name: (median
    QPS, median over rounds of time(reference) / time(name))}: paired ratios cancel the
    slow drifts of a shared machine that separate medians do not."""
    times: dict[str, list[float]] = {n: [] for n in peers}
    for name, peer in peers.items():
        peer.search(queries, K, efs[name])  # warm up
    for _ in range(rounds):
        for name, peer in peers.items():
            _, dt = timed(peer.search, queries, K, efs[name])
            times[name].append(dt)
    ref = times[reference]
    return {
        n: (len(queries) / statistics.median(t), statistics.median(r / x for r, x in zip(ref, t, strict=True)))
        for n, t in times.items()
    }


def latency(peer: Peer, queries: np.ndarray, ef: int) -> tuple[float, float]:
    for q in queries[:50]:
        peer.search_one(q, K, ef)
    samples = []
    for q in queries:
        t0 = time.perf_counter()
        peer.search_one(q, K, ef)
        samples.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.array(samples) * 1e3, [50, 99])
    return float(p50), float(p99)


def churn(names: list[str], params: Params, pool: np.ndarray, queries: np.ndarray, live_n: int, rounds: int,
          ef: int, seed: int) -> tuple[str, dict[str, dict[str, float]]]:
    """Each library starts from the same live set and gets the same ops each round."""
    rng = np.random.default_rng(seed)
    capacity = live_n + live_n // 10 + 16
    peers = {n: ALL_PEERS[n](params, capacity) for n in names}
    live = np.arange(live_n, dtype=np.int64)
    vectors = {int(i): pool[i] for i in range(live_n)}
    for peer in peers.values():
        peer.build(live, pool[:live_n])
    next_row = live_n
    next_id = live_n
    per_round: list[list[object]] = []
    totals = {n: {"delete": 0.0, "insert": 0.0, "refresh": 0.0} for n in names}
    counts = {"delete": 0, "insert": 0, "refresh": 0}
    n_del = live_n // 10
    n_ref = live_n // 25
    for r in range(rounds):
        doomed = rng.choice(live, n_del, replace=False)
        new_ids = np.arange(next_id, next_id + n_del, dtype=np.int64)
        new_x = pool[next_row : next_row + n_del]
        next_id += n_del
        next_row += n_del
        live = np.concatenate([np.setdiff1d(live, doomed), new_ids])
        refreshed = rng.choice(live, n_ref, replace=False)
        ref_x = pool[next_row : next_row + n_ref]
        next_row += n_ref
        for name, peer in peers.items():
            _, dt = timed(peer.delete, doomed)
            totals[name]["delete"] += dt
            _, dt = timed(peer.insert, new_ids, new_x)
            totals[name]["insert"] += dt
            _, dt = timed(peer.refresh, refreshed, ref_x)
            totals[name]["refresh"] += dt
        counts["delete"] += n_del
        counts["insert"] += n_del
        counts["refresh"] += n_ref
        for i in doomed.tolist():
            del vectors[i]
        vectors.update(zip(new_ids.tolist(), new_x, strict=True))
        vectors.update(zip(refreshed.tolist(), ref_x, strict=True))
        base = np.stack([vectors[i] for i in live.tolist()])
        truth = datasets.exact_knn(base, queries, K, params.metric, base_ids=live)
        row: list[object] = [r + 1]
        for peer in peers.values():
            row.append(f"{datasets.recall_at_k(peer.search(queries, K, ef), truth, K):.4f}")
        per_round.append(row)
        print(f"  churn round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    # a fresh build of the final live set, per library, is the reference for recall loss
    base = np.stack([vectors[i] for i in live.tolist()])
    truth = datasets.exact_knn(base, queries, K, params.metric, base_ids=live)
    summary: dict[str, dict[str, float]] = {}
    rows = []
    for name, peer in peers.items():
        fresh = ALL_PEERS[name](params, capacity)
        fresh.build(live, base)
        fresh_recall = datasets.recall_at_k(fresh.search(queries, K, ef), truth, K)
        churned = datasets.recall_at_k(peer.search(queries, K, ef), truth, K)
        t = totals[name]
        s = {
            "insert_rate": counts["insert"] / t["insert"],
            "refresh_rate": counts["refresh"] / t["refresh"],
            "delete_rate": counts["delete"] / t["delete"],
            "upsert_rate": (counts["insert"] + counts["refresh"]) / (t["insert"] + t["refresh"]),
            "all_ops_rate": sum(counts.values()) / sum(t.values()),
            "recall_loss": fresh_recall - churned,
            "memory": peer.memory_bytes(),
        }
        summary[name] = s
        rows.append([
            name, f"{s['insert_rate']:,.0f}", f"{s['refresh_rate']:,.0f}", f"{s['delete_rate']:,.0f}",
            f"{s['upsert_rate']:,.0f}", f"{s['all_ops_rate']:,.0f}", f"{churned:.4f}", f"{fresh_recall:.4f}",
            f"{s['recall_loss']:+.4f}", f"{s['memory'] / 2**20:.1f}",
        ])
    text = table(["round", *[f"{n} recall@10" for n in names]], per_round) + "\n\n"
    text += table(
        ["library", "inserts/s", "refreshes/s", "deletes/s", "inserts+refreshes/s", "all ops/s",
         "recall after churn", "recall fresh build", "recall loss", "memory MiB"], rows,
    )
    return text, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per (library, ef); median reported")
    ap.add_argument("--churn-live", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--churn-ef", type=int, default=32, help="ef for recall during churn (small, so losses show)")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--peers", default="rtindex,rtindex-f32,hnswlib,faiss-hnsw,usearch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/core.md", help="also write the report here")
    args = ap.parse_args()

    names = args.peers.split(",")
    params = Params(dim=args.dim, metric="ip", M=args.M, ef_construction=args.ef_construction, threads=args.threads)
    extra = args.rounds * (args.churn_live // 10 + args.churn_live // 25)
    data = datasets.clustered(args.n + args.queries + extra, args.dim, clusters=100, std=0.35, seed=args.seed)
    base = data[: args.n]
    queries = data[args.n : args.n + args.queries]
    pool = np.concatenate([base, data[args.n + args.queries :]])
    ids = np.arange(args.n, dtype=np.int64)
    truth = datasets.exact_knn(base, queries, K, "ip")
    report = [
        f"# rtindex core benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n",
        f"{args.n:,} x {args.dim} unit vectors (100 Gaussian clusters, std 0.35), {args.queries:,} queries, "
        f"inner product, k={K}, M={args.M}, ef_construction={args.ef_construction}, threads={args.threads}; "
        f"{platform.processor() or platform.machine()}, {platform.python_version()}. "
        f"Command: `scripts/bench.sh core {' '.join(sys.argv[1:])}`\n",
    ]

    print("building ...", file=sys.stderr, flush=True)
    peers: dict[str, Peer] = {}
    build_rows = []
    build_rate = {}
    warm = ALL_PEERS["rtindex"](params, 2048)  # compile kernels outside the timed build
    warm.build(ids[:2000], base[:2000])
    warm.search(queries[:10], K, 16)
    for name in names:
        peer = ALL_PEERS[name](params, args.n)
        _, dt = timed(peer.build, ids, base)
        peers[name] = peer
        build_rate[name] = args.n / dt
    if "rtindex" in peers:
        peers["rtindex-lockstep"] = RtindexLockstepPeer(peers["rtindex"])  # type: ignore[arg-type]
        names.insert(names.index("rtindex") + 1, "rtindex-lockstep")
        build_rate["rtindex-lockstep"] = build_rate["rtindex"]
    for name, peer in peers.items():
        if name == "rtindex-lockstep":
            continue
        build_rows.append([name, f"{build_rate[name]:,.0f}", f"{build_rate[name] / build_rate['hnswlib']:.2f}x",
                           f"{peer.memory_bytes() / 2**20:.1f}"])
    report.append("## Build\n\n" + table(["library", "inserts/s", "vs hnswlib", "memory MiB"], build_rows) + "\n")

    print("searching ...", file=sys.stderr, flush=True)
    efs = [16, 32, 64, 128, 256]
    res = batch_qps(peers, queries, truth, efs, args.reps)
    header = ["ef"] + [f"{n} recall / QPS" for n in names]
    rows = [[ef] + [f"{res[n][ef][0]:.4f} / {res[n][ef][1]:,.0f}" for n in names] for ef in efs]
    report.append("## Batch search (1000 queries per call, median of repetitions)\n\n" + table(header, rows) + "\n")

    fine = sorted(set(range(10, 41, 2)) | {44, 48, 56, 64, 80, 96, 128, 192, 256})
    at_target = {n: smallest_ef_reaching(peers[n], queries, truth, fine, args.target_recall) for n in names}
    reachable = {n: peers[n] for n in names if at_target[n][0] is not None}
    paired = paired_qps(reachable, {n: at_target[n][0] for n in reachable}, queries, 15, "hnswlib")
    best = {n: paired[n][1] if n in paired else 0.0 for n in names}  # ratio to hnswlib
    rows = [
        [n, at_target[n][0] or "-", f"{at_target[n][1]:.4f}", f"{paired[n][0]:,.0f}" if n in paired else "-",
         f"{best[n]:.2f}x"]
        for n in names
    ]
    report.append(
        f"## Batch QPS at recall@10 >= {args.target_recall}\n\nEach library at the smallest ef (of "
        f"{fine[0]}..{fine[-1]}) reaching the target, timed in 15 interleaved rounds; the ratio is the median "
        "of the per-round ratios to hnswlib.\n\n"
        + table(["library", "ef", "recall@10", "QPS (median)", "vs hnswlib (median of paired ratios)"], rows) + "\n"
    )

    print("single-query latency ...", file=sys.stderr, flush=True)
    rows = []
    for name, peer in peers.items():
        p50, p99 = latency(peer, queries, 64)
        rows.append([name, f"{p50:.3f}", f"{p99:.3f}"])
    report.append("## Single-query latency at ef=64 (one query per call, ms)\n\n" + table(["library", "p50", "p99"], rows) + "\n")
    del peers

    churn_names = [n for n in names if n in ALL_PEERS and ALL_PEERS[n].supports_churn]
    print("churn ...", file=sys.stderr, flush=True)
    text, summary = churn(churn_names, params, pool, queries, args.churn_live, args.rounds, args.churn_ef, args.seed)
    skipped = [n for n in names if n not in churn_names and n in ALL_PEERS]
    note = f" ({', '.join(skipped)}: no delete support, not run)" if skipped else ""
    report.append(
        f"## Churn: {args.churn_live:,} live, {args.rounds} rounds of -{args.churn_live // 10:,} / "
        f"+{args.churn_live // 10:,} / {args.churn_live // 25:,} refreshes, recall@10 at ef={args.churn_ef}{note}\n\n"
        "Rates count every second each library spent in that phase (hnswlib's repair happens inside its "
        "replace-insert and update; rtindex's inside delete and upsert). Recall loss = fresh build of the final "
        "live set minus the churned index, same library and ef.\n\n" + text + "\n"
    )

    h = summary.get("hnswlib")
    r = summary.get("rtindex")
    if h and r:
        lines = [
            f"- batch QPS at recall@10 >= {args.target_recall}: {best['rtindex']:.2f}x hnswlib (default, float16 "
            f"traversal); {best.get('rtindex-f32', 0):.2f}x with float32 traversal (target >= 1.0x, stretch 1.2x)",
            f"- churn inserts+refreshes/s: {r['upsert_rate'] / h['upsert_rate']:.2f}x hnswlib (target >= 2x); "
            f"all churn ops/s: {r['all_ops_rate'] / h['all_ops_rate']:.2f}x",
            f"- recall loss after {args.rounds} rounds: {r['recall_loss']:+.4f} (target <= 0.002)",
            f"- build rate: {build_rate['rtindex'] / build_rate['hnswlib']:.2f}x hnswlib (target >= 0.8x)",
        ]
        report.append("## Targets (ratios to hnswlib in this run)\n\n" + "\n".join(lines) + "\n")
    write_report(args.out, "\n".join(report))


if __name__ == "__main__":
    main()
