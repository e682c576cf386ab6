"""Categories benchmark: one 16-category request against the ways people do it today.

Data (seeded): N x dim L2-normalised mixture of Gaussian clusters, inner product. A
3-level taxonomy: 12 roots > 100 middles > 1000 leaves. Leaf sizes follow Zipf(s) over
the leaves' ranks; every item is put in 1-3 leaves; half of the leaves follow the data
(a cluster leaf only takes items of its data cluster), half are random (the hard case
for filtered search). Ancestors are implied (an item in a leaf is in its middle and its
root). Requests name 16 categories: 2 roots, 3 middles, 4 head leaves, 4 tail leaves
and 3 tiny leaves (< 50 items); k = 10 each. Ground truth by brute force per category.

Methods, measured in the same run on the same data:
  rtindex one pass        one request with the 16 categories (this is the feature)
  rtindex per category    16 requests of one category each, one after the other
  hnswlib per category    one hnswlib index per category, queried one after the other
  faiss filtered          faiss HNSW on all items, IDSelectorBatch of the category's members
  rtindex post-filter     one global search with a large k, then each category's members kept

Then churn (deletes, re-inserts, items moved to other leaves; 30% of the items in all)
on the rtindex index, without a rebuild: recall again, and every returned id checked
to be a live member of its category.

    scripts/bench.sh categories                      # the full run (100k items)
    scripts/bench.sh categories --n 20000 --requests 8   # a quick look
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

from rtindex import Index

K = 10
N_ROOTS, N_MIDDLES, N_LEAVES = 12, 100, 1000
ROOT0, MIDDLE0, LEAF0 = 1_000_000, 2_000_000, 3_000_000  # category ids by level
SIZE_BUCKETS = [(0, 50, "tiny < 50"), (50, 1000, "50-1k"), (1000, 10_000, "1k-10k"), (10_000, 10**12, ">= 10k")]


# ------------------------------------------------------------------ data
def clustered_with_labels(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    x = centers[labels] + rng.standard_normal((n, dim)).astype(np.float32) * np.float32(0.35 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, np.float32), labels


class Taxonomy:
    """Leaves (rank 1..1000, Zipf weights), their middles and roots."""

    def __init__(self, clusters: int, zipf: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        rank = np.arange(1, N_LEAVES + 1)
        self.weight = rank ** -zipf
        self.leaves = LEAF0 + rank
        self.is_cluster_leaf = rank % 2 == 0
        self.leaf_cluster = np.where(self.is_cluster_leaf, (rank // 2) % clusters, -1)
        self.middle_of_leaf = MIDDLE0 + rng.integers(0, N_MIDDLES, N_LEAVES)
        self.middles = MIDDLE0 + np.arange(N_MIDDLES)
        self.root_of_middle = ROOT0 + rng.integers(0, N_ROOTS, N_MIDDLES)
        self.roots = ROOT0 + np.arange(N_ROOTS)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([self.leaves, self.middles]),
                np.concatenate([self.middle_of_leaf, self.root_of_middle]))

    def parent(self) -> dict[int, int]:
        children, parents = self.edges()
        return dict(zip(children.tolist(), parents.tolist(), strict=True))

    def draw_leaves(self, labels: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """1-3 leaves per item: each a random leaf, or a leaf of the item's cluster."""
        random_leaves = np.flatnonzero(~self.is_cluster_leaf)
        p_random = self.weight[random_leaves] / self.weight[random_leaves].sum()
        by_cluster: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(self.leaf_cluster[self.is_cluster_leaf]).tolist():
            own = np.flatnonzero(self.leaf_cluster == c)
            by_cluster[c] = (own, self.weight[own] / self.weight[own].sum())
        out = []
        for label in labels.tolist():
            chosen = set()
            for _ in range(int(rng.integers(1, 4))):
                own = by_cluster.get(label)
                if own is not None and rng.random() < 0.5:
                    chosen.add(int(self.leaves[rng.choice(own[0], p=own[1])]))
                else:
                    chosen.add(int(self.leaves[rng.choice(random_leaves, p=p_random)]))
            out.append(sorted(chosen))
        return out


def memberships(cats: list[list[int]], parent: dict[int, int]) -> dict[int, np.ndarray]:
    """category -> sorted item rows that are members (leaves and ancestors)."""
    members: dict[int, list[int]] = {}
    for row, leaves in enumerate(cats):
        seen = set()
        for c in leaves:
            while c is not None and c not in seen:
                seen.add(c)
                c = parent.get(c)
        for c in seen:
            members.setdefault(c, []).append(row)
    return {c: np.array(rows, np.int64) for c, rows in members.items()}


def requests(tax: Taxonomy, members: dict[int, np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n lists of 16 categories: 2 roots, 3 middles, 4 head, 4 tail, 3 tiny leaves."""
    sizes = {c: len(m) for c, m in members.items()}
    leaves = [c for c in tax.leaves.tolist() if c in sizes]
    head = leaves[:20]
    mid_or_tail = [c for c in leaves[20:] if sizes[c] >= 50]
    tail = mid_or_tail[len(mid_or_tail) // 2 :] if len(mid_or_tail) >= 8 else mid_or_tail  # the lower ranks
    tiny = [c for c in leaves if sizes[c] < 50]
    roots = [c for c in tax.roots.tolist() if c in sizes]
    middles = [c for c in tax.middles.tolist() if c in sizes]
    out = []
    for _ in range(n):
        picks = [rng.choice(roots, 2, replace=False), rng.choice(middles, 3, replace=False),
                 rng.choice(head, 4, replace=False), rng.choice(tail, 4, replace=False),
                 rng.choice(tiny, 3, replace=False)]
        out.append(np.concatenate(picks).astype(np.int64))
    return out


def exact_top(x: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k best members for each query (fewer if fewer members)."""
    s = queries @ x[rows].T
    k = min(k, len(rows))
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(s, part, 1).argsort(axis=1)[:, ::-1]
    return rows[np.take_along_axis(part, order, 1)]


# ------------------------------------------------------------------ methods
class Method:
    name = "?"

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        """ids [b, len(cats), K] (-1 padded)."""
        raise NotImplementedError


class OnePass(Method):
    name = "rtindex one pass"

    def __init__(self, index: Index) -> None:
        self.index = index

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        return self.index.search(q, k=K, ef=ef, categories=cats).ids


class PerCategory(OnePass):
    name = "rtindex per category"

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        return np.stack([self.index.search(q, k=K, ef=ef, categories=[c]).ids[:, 0] for c in cats.tolist()], 1)


class PostFilter(Method):
    name = "rtindex post-filter"

    def __init__(self, index: Index, members: dict[int, np.ndarray], ids: np.ndarray, wide_k: int) -> None:
        self.index = index
        self.member_ids = {c: ids[m] for c, m in members.items()}
        self.wide_k = wide_k

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        wide = self.index.search(q, k=self.wide_k, ef=max(ef, self.wide_k)).ids
        out = np.full((len(q), len(cats), K), -1, np.int64)
        for j, c in enumerate(cats.tolist()):
            keep = np.isin(wide, self.member_ids.get(c, np.zeros(0, np.int64))) & (wide >= 0)
            first = np.argsort(~keep, axis=1, kind="stable")[:, :K]  # kept ids stay in score order
            out[:, j] = np.where(np.take_along_axis(keep, first, 1), np.take_along_axis(wide, first, 1), -1)
        return out


class HnswlibPerCategory(Method):
    name = "hnswlib per category"

    def __init__(self, x: np.ndarray, ids: np.ndarray, members: dict[int, np.ndarray], M: int, efc: int,
                 threads: int) -> None:
        import hnswlib

        self.indexes = {}
        self.bytes = 0
        for c, rows in members.items():
            index = hnswlib.Index(space="ip", dim=x.shape[1])
            index.init_index(max_elements=len(rows), M=M, ef_construction=efc)
            index.set_num_threads(threads)
            index.add_items(x[rows], ids[rows])
            self.indexes[c] = index
            # hnswlib's level-0 block per element plus upper links (as bench/peers.py counts it)
            self.bytes += len(rows) * (x.shape[1] * 4 + (2 * M + 1) * 4 + 8 + 8)

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        out = np.full((len(q), len(cats), K), -1, np.int64)
        for j, c in enumerate(cats.tolist()):
            index = self.indexes.get(c)
            if index is None:
                continue
            k = min(K, index.get_current_count())
            index.set_ef(max(ef, k))
            labels, _ = index.knn_query(q, k=k)
            out[:, j, :k] = labels
        return out


class FaissFiltered(Method):
    name = "faiss filtered"

    def __init__(self, x: np.ndarray, ids: np.ndarray, members: dict[int, np.ndarray], M: int, efc: int,
                 threads: int) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc
        self.index.add(x)
        self.ids = ids
        self.selectors = {c: faiss.IDSelectorBatch(rows.astype(np.int64)) for c, rows in members.items()}

    def search(self, q: np.ndarray, cats: np.ndarray, ef: int) -> np.ndarray:
        out = np.full((len(q), len(cats), K), -1, np.int64)
        for j, c in enumerate(cats.tolist()):
            sel = self.selectors.get(c)
            if sel is None:
                continue
            params = self.faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
            _, rows = self.index.search(q, K, params=params)
            out[:, j] = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return out


# ------------------------------------------------------------------ measuring
def recalls(found: np.ndarray, truth: dict[int, np.ndarray], cats: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    """(category, recall) per (query, category) of one request batch."""
    out = []
    for j, c in enumerate(cats.tolist()):
        t = truth[c]
        for b in range(found.shape[0]):
            want = ids[t[b]]
            out.append((c, len(np.intersect1d(found[b, j], want)) / max(1, len(want))))
    return out


def summarize(pairs: list[tuple[int, float]], sizes: dict[int, int]) -> dict[str, float]:
    values = np.array([r for _, r in pairs])
    out = {"mean": float(values.mean()), "p5": float(np.percentile(values, 5))}
    for lo, hi, label in SIZE_BUCKETS:
        bucket = [r for c, r in pairs if lo <= sizes[c] < hi]
        out[label] = float(np.mean(bucket)) if bucket else float("nan")
    return out


def run_methods(methods: list[Method], batches: list[tuple[np.ndarray, np.ndarray]],
                truth: list[dict[int, np.ndarray]], ids: np.ndarray, ef: int, sizes: dict[int, int],
                reps: int) -> dict[str, dict[str, float]]:
    """Recall, batch QPS and single-request latency of each method. Timings are
    interleaved across the methods (round after round; request after request, ten single
    queries of one method in a row, as a server answering its own traffic would), so the
    drifts of a shared machine hit them alike; QPS is the median over ``reps`` rounds."""
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        pairs: list[tuple[int, float]] = []
        for (q, cats), t in zip(batches, truth, strict=True):
            pairs += recalls(method.search(q, cats, ef), t, cats, ids)
        out[method.name] = summarize(pairs, sizes)
    n_queries = sum(len(q) for q, _ in batches)
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    for _ in range(reps):
        for method in methods:
            t0 = time.perf_counter()
            for q, cats in batches:
                method.search(q, cats, ef)
            times[method.name].append(time.perf_counter() - t0)
    samples: dict[str, list[float]] = {m.name: [] for m in methods}
    for q, cats in batches:  # per request: each method answers 10 single queries in a row
        for method in methods:
            for row in q[:10]:
                t0 = time.perf_counter()
                method.search(row[None, :], cats, ef)
                samples[method.name].append(time.perf_counter() - t0)
    for method in methods:
        r = out[method.name]
        r["qps"] = n_queries / statistics.median(times[method.name])
        r["p50_ms"], r["p99_ms"] = (float(v) for v in np.percentile(np.array(samples[method.name]) * 1e3, [50, 99]))
    return out


def ground_truth(x: np.ndarray, members: dict[int, np.ndarray],
                 batches: list[tuple[np.ndarray, np.ndarray]]) -> list[dict[int, np.ndarray]]:
    return [{c: exact_top(x, members[c], q, K) for c in cats.tolist()} for q, cats in batches]


def membership_violations(found: np.ndarray, cats: np.ndarray, member_ids: dict[int, np.ndarray]) -> int:
    bad = 0
    for j, c in enumerate(cats.tolist()):
        got = found[:, j][found[:, j] >= 0]
        bad += int((~np.isin(got, member_ids.get(c, np.zeros(0, np.int64)))).sum())
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--requests", type=int, default=20, help="distinct 16-category requests")
    ap.add_argument("--batch", type=int, default=50, help="queries per request batch")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--efs", default="64,128")
    ap.add_argument("--category-M", type=int, default=0, help="rtindex category_M (0: the index default)")
    ap.add_argument("--category-exact-limit", type=int, default=-1,
                    help="rtindex category_exact_limit (-1: the index default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--wide-k", type=int, default=1000, help="k of the global search the post-filter keeps from")
    ap.add_argument("--churn", type=float, default=0.3, help="share of items deleted, re-inserted or moved")
    ap.add_argument("--methods", default="onepass,percategory,hnswlib,faiss,postfilter")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/categories.md")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    efs = [int(e) for e in args.efs.split(",")]
    wanted = set(args.methods.split(","))

    n_queries = args.requests * args.batch
    x_all, labels = clustered_with_labels(args.n + n_queries, args.dim, args.clusters, args.seed)
    x, queries = x_all[: args.n], x_all[args.n :]
    labels = labels[: args.n]
    ids = np.arange(args.n, dtype=np.int64) * 7 + 11
    tax = Taxonomy(args.clusters, args.zipf, args.seed)
    print("drawing categories ...", file=sys.stderr, flush=True)
    cats = tax.draw_leaves(labels, rng)
    parent = tax.parent()
    members = memberships(cats, parent)
    sizes = {c: len(m) for c, m in members.items()}
    reqs = requests(tax, members, args.requests, rng)
    batches = [(queries[i * args.batch : (i + 1) * args.batch], reqs[i]) for i in range(args.requests)]
    print("ground truth ...", file=sys.stderr, flush=True)
    truth = ground_truth(x, members, batches)

    print("building rtindex ...", file=sys.stderr, flush=True)
    options = {"category_M": args.category_M} if args.category_M else {}
    if args.category_exact_limit >= 0:
        options["category_exact_limit"] = args.category_exact_limit
    index = Index(dim=args.dim, metric="ip", M=args.M, ef_construction=args.ef_construction, threads=args.threads,
                  **options)
    index.set_category_parents(*tax.edges())
    t0 = time.perf_counter()
    for lo in range(0, args.n, 10_000):
        index.upsert(ids[lo : lo + 10_000], x[lo : lo + 10_000], categories=cats[lo : lo + 10_000])
    build_s = time.perf_counter() - t0
    stats = index.stats()
    # rows in use (capacities grow by half: counting them would add up to 50% noise)
    total_bytes = stats["memory_used_bytes"]
    global_bytes = total_bytes - stats["category_memory_used_bytes"]

    methods: list[Method] = []
    if "onepass" in wanted:
        methods.append(OnePass(index))
    if "percategory" in wanted:
        methods.append(PerCategory(index))
    peer_build = {}
    if "hnswlib" in wanted:
        print("building hnswlib per category ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        methods.append(HnswlibPerCategory(x, ids, members, args.M, args.ef_construction, args.threads))
        peer_build["hnswlib per category"] = time.perf_counter() - t0
    if "faiss" in wanted:
        print("building faiss ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        methods.append(FaissFiltered(x, ids, members, args.M, args.ef_construction, args.threads))
        peer_build["faiss filtered"] = time.perf_counter() - t0
    if "postfilter" in wanted:
        methods.append(PostFilter(index, members, ids, args.wide_k))

    results: dict[tuple[str, int], dict[str, float]] = {}
    for ef in efs:
        print(f"measuring at ef={ef} ...", file=sys.stderr, flush=True)
        for name, r in run_methods(methods, batches, truth, ids, ef, sizes, args.reps).items():
            results[(name, ef)] = r

    buckets = [label for _, _, label in SIZE_BUCKETS]
    rows = []
    for (name, ef), r in results.items():
        rows.append([name, ef, f"{r['mean']:.4f}", f"{r['p5']:.3f}", *[f"{r[b]:.4f}" for b in buckets],
                     f"{r['qps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"])
    text = [
        "# Categories benchmark",
        "",
        f"{platform.processor() or platform.machine()}, {args.threads} threads; {args.n:,} x {args.dim} clustered "
        f"(ip), taxonomy {N_ROOTS} > {N_MIDDLES} > {N_LEAVES}, Zipf({args.zipf}) leaves, items in 1-3 leaves "
        f"(half of the leaves follow the clusters); {args.requests} requests of 16 categories x {args.batch} "
        f"queries; k = {K} per category; M = {args.M}, ef_construction = {args.ef_construction}.",
        f"Category sizes (items, with ancestors): {len(sizes)} categories, largest {max(sizes.values()):,}, "
        f"median {int(np.median(list(sizes.values()))):,}, {sum(v < 50 for v in sizes.values())} below 50.",
        "",
        "Recall@10 per (query, category) against brute force over the category's members: mean, 5th percentile, "
        "mean by category size. QPS: queries per second, each query asking for all 16 categories (batches of "
        f"{args.batch}). Latency: one query (16 categories) per call.",
        "",
        table(["method", "ef", "recall mean", "recall p5", *buckets, "QPS", "p50 ms", "p99 ms"], rows),
        "",
        "Memory: bytes of the tables' rows in use (below the high-water marks; free slots included), id maps and "
        "free lists; the global graph's share is what an index without categories holds for the same items.",
        "",
    ]
    mem_rows = [["rtindex (global graph + category subgraphs)", f"{total_bytes / args.n:,.0f}",
                 f"{total_bytes / global_bytes:.2f}x", f"{build_s:.1f}"],
                ["rtindex global graph only (same items)", f"{global_bytes / args.n:,.0f}", "1.00x", ""]]
    for m in methods:
        if isinstance(m, HnswlibPerCategory):
            mem_rows.append([m.name, f"{m.bytes / args.n:,.0f}", f"{m.bytes / global_bytes:.2f}x",
                             f"{peer_build[m.name]:.1f}"])
    text += [table(["index", "bytes per item", "vs global only", "build s"], mem_rows), ""]
    text.append(f"category nodes: {stats['category_nodes_live']:,} ({stats['category_nodes_live'] / args.n:.2f} per "
                f"item); config category_M = {index.config.category_M}, category_ef_construction = "
                f"{index.config.category_ef_construction}, category_exact_limit = {index.config.category_exact_limit}.")
    text.append("")

    # ---------------------------------------------------------------- churn
    if args.churn > 0 and "onepass" in wanted:
        print("churn ...", file=sys.stderr, flush=True)
        n_each = int(args.n * args.churn / 3)
        alive = np.ones(args.n, bool)
        t0 = time.perf_counter()
        for _ in range(3):
            dead = rng.choice(np.flatnonzero(alive), n_each // 3, replace=False)
            index.delete(ids[dead])
            alive[dead] = False
            back = rng.choice(np.flatnonzero(~alive), len(dead), replace=False)
            fresh_leaves = tax.draw_leaves(labels[back], rng)
            for i, leaves in zip(back.tolist(), fresh_leaves, strict=True):
                cats[i] = leaves
            index.upsert(ids[back], x[back], categories=[cats[i] for i in back])
            alive[back] = True
            moved = rng.choice(np.flatnonzero(alive), n_each // 3, replace=False)
            moved_leaves = tax.draw_leaves(labels[moved], rng)
            for i, leaves in zip(moved.tolist(), moved_leaves, strict=True):
                cats[i] = leaves
            index.upsert(ids[moved], x[moved], categories=[cats[i] for i in moved])
        churn_s = time.perf_counter() - t0
        live_rows = np.flatnonzero(alive)
        members_now = memberships([cats[i] if alive[i] else [] for i in range(args.n)], parent)
        member_ids = {c: ids[m] for c, m in members_now.items()}
        sizes_now = {c: len(members_now.get(c, ())) for c in sizes}
        live_batches = [(q, c) for q, c in batches]
        truth_now = [{c: exact_top(x, members_now[c], q, K) if c in members_now else np.zeros((len(q), 0), np.int64)
                      for c in cs.tolist()} for q, cs in live_batches]
        rows = []
        violations = 0
        for ef in efs:
            r = run_methods([OnePass(index)], live_batches, truth_now, ids, ef, sizes_now, args.reps)[OnePass.name]
            for q, cs in live_batches:
                violations += membership_violations(index.search(q, k=K, ef=ef, categories=cs).ids, cs, member_ids)
            before = results.get(("rtindex one pass", ef), {})
            rows.append(["rtindex one pass, after churn", ef, f"{r['mean']:.4f}", f"{r['p5']:.3f}",
                         *[f"{r[b]:.4f}" for b in buckets], f"{r['qps']:,.0f}",
                         f"{before.get('mean', float('nan')):.4f}"])
        stats_now = index.stats()
        text += [
            f"## After churn: {3 * (n_each // 3) * 3:,} operations ({args.churn:.0%} of the items deleted, "
            f"re-inserted or moved to other leaves) in {churn_s:.1f} s, no rebuild; {len(live_rows):,} live items",
            "",
            table(["method", "ef", "recall mean", "recall p5", *buckets, "QPS", "recall before churn"], rows),
            "",
            f"Returned ids that are not live members of the category they are listed under: {violations}.",
            f"Memory per live item after churn: {stats_now['memory_used_bytes'] / len(live_rows):,.0f} bytes "
            f"({stats_now['memory_used_bytes'] / (stats_now['memory_used_bytes'] - stats_now['category_memory_used_bytes']):.2f}x "
            "the global graph's; tables in use, free slots included).",
            "",
        ]

    # ---------------------------------------------------------------- targets
    text.append("## Targets")
    for ef in efs:
        one = results.get(("rtindex one pass", ef))
        per = results.get(("rtindex per category", ef))
        if one is None:
            continue
        line = f"- ef={ef}: recall mean {one['mean']:.4f} (target >= 0.95), p5 {one['p5']:.3f} (>= 0.90), " \
               f"tiny {one['tiny < 50']:.4f} (exact: 1.0)"
        if per is not None:
            line += (f"; one pass vs per category: {one['qps'] / per['qps']:.2f}x batch QPS, "
                     f"{per['p50_ms'] / one['p50_ms']:.2f}x single-request p50 (target >= 2x)")
        for name in ("hnswlib per category", "faiss filtered", "rtindex post-filter"):
            peer = results.get((name, ef))
            if peer is not None:
                line += f"; vs {name}: {one['qps'] / peer['qps']:.2f}x QPS at recall {peer['mean']:.3f}"
        text.append(line)
    text.append(f"- memory: {total_bytes / global_bytes:.2f}x the global-only index (target <= 1.5x)")
    write_report(args.out, "\n".join(text))


if __name__ == "__main__":
    main()
