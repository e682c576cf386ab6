"""Neural scorer benchmark (issue 6, NANN): beam search on the embedding graph scored by
a TensorFlow SavedModel vs (1) brute-force scoring of the whole catalog with the same
model (ground truth and time) and (2) the two-stage baseline — hnswlib top-X by inner
product of a linear projection of the query, then neural rerank of those X — at equal
scorer evaluations.

  (a) MovieLens (examples/movielens.py): trained towers + MLP head, with and without
      NANN's FGSM term;
  (b) a generated catalog (200k x 64 clustered unit vectors, fixed seed) with a
      random-weight MLP scorer (rtindex.core.neural.export_random_mlp);
  (c) head precision / XLA on (b).

Run: scripts/bench.sh neural [--n 200000] [--queries 200] [--skip-movielens]
Writes bench/results/neural.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from report import table, write_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/

from rtindex import Index, datasets

try:
    import tensorflow as tf
except ImportError:
    sys.exit("bench_neural needs TensorFlow: .venv/bin/pip install -e '.[tf]'")
import hnswlib

from examples import movielens
from rtindex.core.neural import SavedModelScorer, export_random_mlp

K = 50


def linear_projection(scorer: SavedModelScorer, state: Any, items: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Per query, the mean gradient of the head's score w.r.t. the item embedding over
    ``samples`` random catalog items: a first-order (linear) stand-in of the head, so
    that an inner-product index can retrieve for it. Costs ``samples`` evaluations."""
    rng = np.random.default_rng(seed)
    sample = tf.constant(items[rng.integers(0, len(items), samples)])
    head = scorer._model.signatures["score"]
    b = int(state.shape[0])
    q_index = tf.repeat(tf.range(b), samples)
    rows = tf.tile(sample, [b, 1])
    with tf.GradientTape() as tape:
        tape.watch(rows)
        s = head(state=tf.gather(state, q_index), items=rows)["scores"]
    grad = tape.gradient(s, rows).numpy().reshape(b, samples, -1)
    return np.ascontiguousarray(grad.mean(axis=1), np.float32)


def build_hnswlib(items: np.ndarray) -> hnswlib.Index:
    h = hnswlib.Index(space="ip", dim=items.shape[1])
    h.init_index(max_elements=len(items), M=16, ef_construction=200, random_seed=0)
    h.set_num_threads(2)
    h.add_items(items, np.arange(len(items)))
    return h


def two_stage(scorer: SavedModelScorer, features: dict[str, np.ndarray], items: np.ndarray, h: hnswlib.Index,
              budget: int, samples: int = 64) -> tuple[np.ndarray, float, float]:
    """hnswlib top-X by the linear projection, neural rerank; X = budget - samples, so
    the scorer evaluations per query equal ``budget``. Returns (ids, evals, ms/query)."""
    t0 = time.perf_counter()
    state = scorer.prepare(features)
    b = int(state.shape[0])
    proj = linear_projection(scorer, state, items, samples, seed=1)
    x = max(K, budget - samples)
    h.set_ef(max(x, 64))
    cand, _ = h.knn_query(proj, k=x)
    cand = cand.astype(np.int64)
    scores = scorer.score(state, np.repeat(np.arange(b, dtype=np.int32), x), items[cand.reshape(-1)]).reshape(b, x)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    ids = np.take_along_axis(cand, top, 1)
    return ids, float(x + samples), (time.perf_counter() - t0) * 1e3 / b


def nann_rows(index: Index, scorer: SavedModelScorer, features: dict[str, np.ndarray], items: np.ndarray,
              truth: np.ndarray, settings: list[tuple[int, list[int] | None]], h: hnswlib.Index | None,
              single: int, brute_ms: float) -> list[list[object]]:
    b = len(next(iter(features.values())))
    rows: list[list[object]] = []
    for ef, level_ef in settings:
        index.search({n: v[:4] for n, v in features.items()}, k=K, ef=ef, level_ef=level_ef, scorer=scorer)
        t0 = time.perf_counter()
        res = index.search(features, k=K, ef=ef, level_ef=level_ef, scorer=scorer)
        ms = (time.perf_counter() - t0) * 1e3 / b
        t0 = time.perf_counter()
        for i in range(single):
            index.search({n: v[i : i + 1] for n, v in features.items()}, k=K, ef=ef, level_ef=level_ef, scorer=scorer)
        single_ms = (time.perf_counter() - t0) * 1e3 / single
        evals = float(res.evaluations.mean())
        row: list[object] = [
            ef, level_ef or "-", f"{datasets.recall_at_k(res.ids, truth, 10):.3f}",
            f"{datasets.recall_at_k(res.ids, truth, 50):.3f}", f"{evals:.0f}", f"{100 * evals / len(items):.2f}%",
            f"{ms:.2f}", f"{1e3 / ms:.0f}", f"{brute_ms / ms:.1f}x", f"{single_ms:.1f}",
        ]
        if h is not None:
            ids2, evals2, ms2 = two_stage(scorer, features, items, h, round(evals))
            row += [f"{datasets.recall_at_k(ids2, truth, 10):.3f}", f"{datasets.recall_at_k(ids2, truth, 50):.3f}",
                    f"{evals2:.0f}", f"{ms2:.2f}"]
        rows.append(row)
        print("  ", row, flush=True)
    return rows


HEADER = ["ef", "level_ef", "recall@10", "recall@50", "evals/query", "% catalog", "batch ms/query", "QPS",
          "speed-up vs brute force (batch)", "single-query ms",
          "two-stage recall@10", "two-stage recall@50", "two-stage evals", "two-stage ms/query"]


def brute_force(scorer: SavedModelScorer, features: dict[str, np.ndarray], items: np.ndarray) -> tuple[np.ndarray, float, float]:
    b = len(next(iter(features.values())))
    t0 = time.perf_counter()
    truth, _ = scorer.top_k_exhaustive(features, items, K)
    batch_ms = (time.perf_counter() - t0) * 1e3 / b
    t0 = time.perf_counter()
    scorer.top_k_exhaustive({n: v[:1] for n, v in features.items()}, items, K)
    return truth, batch_ms, (time.perf_counter() - t0) * 1e3


def bench_movielens(out: Path, epochs: int, eps_values: list[float], single: int) -> list[str]:
    data = movielens.load_movielens()
    features = movielens.user_features(data)
    parts = [f"## (a) MovieLens ml-latest-small: {data.n_items} movies, {data.n_users} users as queries, k={K}", ""]
    for eps in eps_values:
        model, stats = movielens.train(data, epochs=epochs, adversarial_eps=eps, log=False)
        path, items = movielens.export(model, data, out / f"movielens_eps{eps}")
        scorer = SavedModelScorer(path, items.shape[1])
        truth, brute_ms, brute_single = brute_force(scorer, features, items)
        h = build_hnswlib(items)
        for metric, M in (("l2", 16), ("l2", 10), ("ip", 16)):  # a sparser graph scores fewer rows per hop
            index = Index(dim=items.shape[1], metric=metric, M=M, ef_construction=200)
            index.upsert(np.arange(len(items)), items)
            print(f"movielens eps={eps} metric={metric} M={M}", flush=True)
            rows = nann_rows(index, scorer, features, items, truth, [(50, None), (64, None), (128, None), (64, [8, 4])],
                             h, single, brute_ms)
            parts += [f"FGSM eps={eps} (train {stats['train_s']:.0f} s, held-out AUC {stats['auc']:.3f}), graph metric "
                      f"{metric}, M={M}; brute force {brute_ms:.2f} ms/query batched, {brute_single:.1f} ms single", "",
                      table(HEADER, rows), ""]
    return parts


def bench_generated(n: int, dim: int, n_queries: int, single: int, out: Path) -> list[str]:
    items = datasets.clustered(n, dim, clusters=200, std=0.35, seed=0)
    query_dim = 32
    features = {"query": np.random.default_rng(1).normal(size=(n_queries, query_dim)).astype(np.float32)}
    path = out / "random_mlp"
    export_random_mlp(path, query_dim, dim, hidden=(128, 64), seed=0)
    scorer = SavedModelScorer(path, dim)
    truth, brute_ms, brute_single = brute_force(scorer, features, items)
    print(f"generated: brute force {brute_ms:.1f} ms/query", flush=True)
    t0 = time.perf_counter()
    index = Index(dim=dim, metric="l2", M=16, ef_construction=200)
    index.upsert(np.arange(n), items)
    build_s = time.perf_counter() - t0
    h = build_hnswlib(items)
    settings: list[tuple[int, list[int] | None]] = [(64, None), (128, None), (256, None), (128, [16, 8, 4]),
                                                    (256, [32, 16, 8]), (512, [64, 32, 16]), (640, [96, 48, 24]),
                                                    (768, [128, 64, 32]), (1024, [128, 64, 32])]
    rows = nann_rows(index, scorer, features, items, truth, settings, h, single, brute_ms)
    parts = [f"## (b) generated: {n} x {dim} clustered unit vectors (200 clusters, seed 0), random-weight MLP "
             f"(query 32 -> state 128; head relu(state + items W) 128 -> 64 -> 1), {n_queries} queries, k={K}", "",
             f"graph: rtindex l2, M=16, ef_construction=200 (built in {build_s:.0f} s); brute force {brute_ms:.1f} ms/query "
             f"batched, {brute_single:.1f} ms single query", "", table(HEADER, rows), ""]
    # (c) precision and XLA at one setting
    prec_rows = []
    for precision, jit in (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True),
                           ("float16", False)):
        s = SavedModelScorer(path, dim, precision=precision, jit_compile=jit)
        r_ms = []
        for ef, level_ef in ((128, [16, 8, 4]),):
            index.search(features, k=K, ef=ef, level_ef=level_ef, scorer=s)  # warm-up (XLA buckets)
            t0 = time.perf_counter()
            res = index.search(features, k=K, ef=ef, level_ef=level_ef, scorer=s)
            r_ms.append((time.perf_counter() - t0) * 1e3 / n_queries)
        state = s.prepare(features)
        block = items[:65536]
        s.score(state, np.zeros(len(block), np.int32), block)
        t0 = time.perf_counter()
        for q in range(8):
            s.score(state, np.full(len(block), q, np.int32), block)
        big_ms = (time.perf_counter() - t0) * 1e3 / 8
        prec_rows.append([precision, jit, f"{datasets.recall_at_k(res.ids, truth, 50):.3f}", f"{r_ms[0]:.2f}",
                          f"{big_ms:.1f}"])
        print("  ", prec_rows[-1], flush=True)
    parts += ["## (c) head precision and XLA on (b): search at ef=128, level_ef=[16, 8, 4] (recall vs the float32 "
              "brute force); one 65,536-row scoring call", "",
              table(["precision", "jit_compile", "recall@50", "search ms/query", "65k-row call ms"], prec_rows), ""]
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--single", type=int, default=20, help="queries timed one at a time")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--eps", type=float, nargs="*", default=[0.0, 0.05], help="FGSM eps values for MovieLens")
    p.add_argument("--skip-movielens", action="store_true")
    p.add_argument("--skip-generated", action="store_true")
    args = p.parse_args()
    parts = [f"# Neural scorer benchmark\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"TensorFlow {tf.__version__}, hnswlib (two-stage: top-X by inner product of the linearised head "
             f"(mean gradient over 64 sampled items, counted as evaluations), then neural rerank)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_movielens:
            parts += bench_movielens(Path(tmp), args.epochs, args.eps, args.single)
        if not args.skip_generated:
            parts += bench_generated(args.n, args.dim, args.queries, args.single, Path(tmp))
    write_report(Path(__file__).parent / "results" / "neural.md", "\n".join(parts))


if __name__ == "__main__":
    main()
