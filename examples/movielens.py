"""A trained neural scorer on MovieLens (NANN, issue 6), end to end on the CPU:

1. train (a few minutes on 2 cores) an item tower (movie-id embedding + genres -> item
   embedding, float32[dim]), a user tower (user-id embedding + the user's genre profile
   -> user vector) and an MLP head over (user, item) — binary cross-entropy on rated
   movies vs sampled unrated ones; optionally NANN's adversarial term (FGSM: the loss
   again on item embeddings pushed by eps * sign(gradient)), which makes the head
   smoother in embedding space so that a graph on the embeddings leads the beam search
   to the head's best items;
2. export the SavedModel (the contract of ``rtindex.core.neural``) and the item embeddings
   (``items.npy``, row = movie index, ``movie_ids.npy`` the MovieLens ids);
3. build an ``rtindex.Index`` on the item embeddings, search every user with the
   neural scorer and report recall@10/@50 against scoring the whole catalog with the
   same model, scorer evaluations per query and latency.

Run: ``python -m examples.movielens --out var/movielens`` (``--help`` for options) or
``scripts/bench.sh neural`` (which also runs the generated 200k catalog).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtindex import Index, datasets
from rtindex.core.neural import QUERY_SIGNATURE, SCORE_SIGNATURE, SavedModelScorer


@dataclass
class MovieLens:
    n_users: int
    n_items: int
    user: np.ndarray  # int64[r]: user index of each rating
    item: np.ndarray  # int64[r]: movie index of each rating
    genres: np.ndarray  # float32[n_items, g]: multi-hot genres of each movie
    genre_names: list[str]
    movie_ids: np.ndarray  # int64[n_items]: MovieLens movieId of each movie index
    profile: np.ndarray  # float32[n_users, g]: mean genres of the movies each user rated


def load_movielens(root: Path | None = None, min_rating: float = 0.0) -> MovieLens:
    """ratings.csv and movies.csv of ml-latest-small (checksums verified)."""
    if root is None:  # the shared copy: checksums verified
        root = datasets._verified("movielens-small/ratings.csv").parent
        datasets._verified("movielens-small/movies.csv")
    with open(root / "movies.csv", newline="", encoding="utf-8") as f:
        movies = list(csv.DictReader(f))
    movie_ids = np.array([int(m["movieId"]) for m in movies], np.int64)
    genre_names = sorted({g for m in movies for g in m["genres"].split("|")})
    genres = np.zeros((len(movies), len(genre_names)), np.float32)
    col = {g: i for i, g in enumerate(genre_names)}
    for r, m in enumerate(movies):
        for g in m["genres"].split("|"):
            genres[r, col[g]] = 1.0
    raw = np.loadtxt(root / "ratings.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2))
    raw = raw[raw[:, 2] >= min_rating]
    users, user = np.unique(raw[:, 0].astype(np.int64), return_inverse=True)
    item = np.searchsorted(movie_ids, raw[:, 1].astype(np.int64))
    profile = np.zeros((len(users), len(genre_names)), np.float32)
    np.add.at(profile, user, genres[item])
    profile /= np.maximum(np.bincount(user, minlength=len(users)), 1)[:, None]
    return MovieLens(len(users), len(movies), user.astype(np.int64), item.astype(np.int64), genres, genre_names,
                     movie_ids, profile)


def build_model(data: MovieLens, dim: int = 32, hidden: tuple[int, int] = (64, 32), seed: int = 0) -> Any:
    """A tf.Module with the towers, the head and the two contract signatures."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    g = data.genres.shape[1]
    h1, h2 = hidden

    def var(*shape: int, scale: float) -> Any:
        return tf.Variable(rng.normal(0, scale, shape).astype(np.float32))

    class TwoTowerMLP(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.genres = tf.constant(data.genres)
            self.item_table = var(data.n_items, dim, scale=0.05)
            self.item_genre = var(g, dim, scale=0.1)
            self.user_table = var(data.n_users, dim, scale=0.05)
            self.user_w = var(dim + g, 64, scale=1 / np.sqrt(dim + g))
            self.user_b = var(64, scale=0.0)
            self.user_out = var(64, dim, scale=1 / 8)
            self.w_query = var(dim, h1, scale=1 / np.sqrt(dim))
            self.w_items = var(dim, h1, scale=1 / np.sqrt(dim))
            self.b_1 = var(h1, scale=0.0)
            self.w_2 = var(h1, h2, scale=1 / np.sqrt(h1))
            self.b_2 = var(h2, scale=0.0)
            self.w_3 = var(h2, 1, scale=1 / np.sqrt(h2))
            self.w_item_bias = var(dim, 1, scale=0.01)

        def item_embeddings(self, item: Any) -> Any:
            return tf.gather(self.item_table, item) + tf.gather(self.genres, item) @ self.item_genre

        def user_state(self, user_id: Any, genre_profile: Any) -> Any:
            x = tf.concat([tf.gather(self.user_table, user_id), genre_profile], 1)
            u = tf.nn.relu(x @ self.user_w + self.user_b) @ self.user_out
            return u @ self.w_query + self.b_1  # the user's share of the head's first layer (folded)

        def head(self, state: Any, items: Any) -> Any:
            h = tf.nn.relu(state + items @ self.w_items)
            h = tf.nn.relu(h @ self.w_2 + self.b_2)
            return tf.squeeze(h @ self.w_3 + items @ self.w_item_bias, -1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_id"),
                                      tf.TensorSpec([None, g], tf.float32, name="genre_profile")])
        def query_state(self, user_id: Any, genre_profile: Any) -> dict[str, Any]:
            return {"state": self.user_state(user_id, genre_profile)}

        @tf.function(input_signature=[tf.TensorSpec([None, h1], tf.float32, name="state"),
                                      tf.TensorSpec([None, dim], tf.float32, name="items")])
        def score(self, state: Any, items: Any) -> dict[str, Any]:
            return {"scores": self.head(state, items)}

    return TwoTowerMLP()


def train(data: MovieLens, epochs: int = 6, negatives: int = 4, batch: int = 2048, adversarial_eps: float = 0.0,
          dim: int = 32, seed: int = 0, log: bool = True) -> tuple[Any, dict[str, float]]:
    """Binary cross-entropy: each rating is a positive, ``negatives`` random movies per
    rating are negatives. adversarial_eps > 0 adds NANN's FGSM term: the same loss on
    item embeddings moved by eps * sign(d loss / d item embedding). Returns the model and
    held-out AUC (10% of the ratings, each against one random movie)."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(data, dim=dim, seed=seed)
    order = rng.permutation(len(data.user))
    held = order[: len(order) // 10]
    kept = order[len(order) // 10 :]
    opt = tf.keras.optimizers.Adam(2e-3)
    weights = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(user: Any, item: Any, label: Any, profile: Any) -> Any:
        with tf.GradientTape() as tape:
            state = model.user_state(user, profile)
            emb = model.item_embeddings(item)
            if adversarial_eps > 0:
                with tf.GradientTape() as inner:
                    inner.watch(emb)
                    clean = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(label, model.head(state, emb)))
                push = tf.stop_gradient(adversarial_eps * tf.sign(inner.gradient(clean, emb)))
                adv = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(label, model.head(state, emb + push)))
                loss = 0.5 * (clean + adv)
            else:
                loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(label, model.head(state, emb)))
            loss += 1e-5 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in (model.item_table, model.user_table)])
        opt.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    t0 = time.perf_counter()
    for epoch in range(epochs):
        pos = rng.permutation(kept)
        users = np.repeat(data.user[pos], 1 + negatives)
        items = np.repeat(data.item[pos], 1 + negatives).reshape(-1, 1 + negatives)
        items[:, 1:] = rng.integers(0, data.n_items, (len(pos), negatives))
        labels = np.zeros(items.shape, np.float32)
        labels[:, 0] = 1
        items, labels = items.reshape(-1), labels.reshape(-1)
        losses = []
        for lo in range(0, len(users), batch):
            u = users[lo : lo + batch]
            losses.append(float(step(u, items[lo : lo + batch], labels[lo : lo + batch], data.profile[u])))
        if log:
            print(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} ({time.perf_counter() - t0:.0f} s)")
    # held-out AUC: a held-out rated movie vs a random movie for the same user
    u = data.user[held]
    state = model.user_state(u, data.profile[u])
    pos_s = model.head(state, model.item_embeddings(data.item[held])).numpy()
    neg_s = model.head(state, model.item_embeddings(rng.integers(0, data.n_items, len(held)))).numpy()
    stats = {"train_s": time.perf_counter() - t0, "auc": float(np.mean(pos_s > neg_s) + 0.5 * np.mean(pos_s == neg_s))}
    return model, stats


def export(model: Any, data: MovieLens, out: Path) -> tuple[Path, np.ndarray]:
    """Write ``out/model`` (SavedModel) and ``out/items.npy`` (float32[n_items, dim]),
    ``out/movie_ids.npy``. Returns the model path and the item embeddings."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    items = model.item_embeddings(np.arange(data.n_items)).numpy().astype(np.float32)
    np.save(out / "items.npy", items)
    np.save(out / "movie_ids.npy", data.movie_ids)
    path = out / "model"
    tf.saved_model.save(model, str(path), signatures={QUERY_SIGNATURE: model.query_state, SCORE_SIGNATURE: model.score})
    return path, items


def user_features(data: MovieLens, users: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The query features of users (default: all): user_id int64[b], genre_profile float32[b, g]."""
    users = np.arange(data.n_users) if users is None else np.asarray(users, np.int64)
    return {"user_id": users.astype(np.int64), "genre_profile": data.profile[users]}


@dataclass
class SearchReport:
    metric: str
    ef: int
    level_ef: list[int] | None
    recall10: float
    recall50: float
    evaluations: float  # per query
    catalog_fraction: float
    batch_ms_per_query: float
    single_ms: float


def evaluate(model_path: Path, items: np.ndarray, features: dict[str, np.ndarray], metric: str = "l2",
             settings: tuple[tuple[int, list[int] | None], ...] = ((64, None), (128, None), (128, [8, 4])),
             single: int = 50, index: Index | None = None) -> tuple[list[SearchReport], dict[str, float]]:
    """Index the item embeddings, search every query with the neural scorer and compare
    with the same model scoring the whole catalog. Returns per-setting reports and the
    brute-force figures."""
    scorer = SavedModelScorer(model_path, items.shape[1])
    b = len(next(iter(features.values())))
    t0 = time.perf_counter()
    truth, _ = scorer.top_k_exhaustive(features, items, 50)
    brute = {"batch_ms_per_query": (time.perf_counter() - t0) * 1e3 / b}
    one = {n: v[:1] for n, v in features.items()}
    t0 = time.perf_counter()
    scorer.top_k_exhaustive(one, items, 50)
    brute["single_ms"] = (time.perf_counter() - t0) * 1e3
    if index is None:
        index = Index(dim=items.shape[1], metric=metric, M=16, ef_construction=200)
        index.upsert(np.arange(len(items)), items)
    reports = []
    for ef, level_ef in settings:
        index.search(features, k=50, ef=ef, level_ef=level_ef, scorer=scorer)  # warm-up (tracing)
        t0 = time.perf_counter()
        res = index.search(features, k=50, ef=ef, level_ef=level_ef, scorer=scorer)
        batch_ms = (time.perf_counter() - t0) * 1e3 / b
        t0 = time.perf_counter()
        for i in range(min(single, b)):
            index.search({n: v[i : i + 1] for n, v in features.items()}, k=50, ef=ef, level_ef=level_ef, scorer=scorer)
        single_ms = (time.perf_counter() - t0) * 1e3 / min(single, b)
        reports.append(SearchReport(
            metric, ef, level_ef, datasets.recall_at_k(res.ids, truth, 10), datasets.recall_at_k(res.ids, truth, 50),
            float(res.evaluations.mean()), float(res.evaluations.mean() / len(items)), batch_ms, single_ms,
        ))
    return reports, brute


def report_rows(reports: list[SearchReport]) -> list[list[object]]:
    return [[r.metric, r.ef, r.level_ef or "-", f"{r.recall10:.3f}", f"{r.recall50:.3f}", f"{r.evaluations:.0f}",
             f"{100 * r.catalog_fraction:.1f}%", f"{r.batch_ms_per_query:.2f}", f"{r.single_ms:.1f}"] for r in reports]


def table(header: list[str], rows: list[list[object]]) -> str:
    """Markdown table (the same format as bench/report.py)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


REPORT_HEADER = ["graph metric", "ef", "level_ef", "recall@10", "recall@50", "evals/query", "% catalog",
                 "batch ms/query", "single-query ms"]


def run(out: Path, epochs: int = 6, adversarial_eps: float = 0.0, metric: str = "l2", seed: int = 0) -> str:
    """Train, export, evaluate; returns a markdown report."""
    data = load_movielens()
    print(f"MovieLens: {len(data.user)} ratings, {data.n_users} users, {data.n_items} movies, "
          f"{len(data.genre_names)} genres")
    model, stats = train(data, epochs=epochs, adversarial_eps=adversarial_eps, seed=seed)
    path, items = export(model, data, out)
    print(f"trained in {stats['train_s']:.0f} s, held-out AUC {stats['auc']:.3f}; exported to {path} and {out / 'items.npy'}")
    reports, brute = evaluate(path, items, user_features(data), metric=metric)
    return "\n".join([
        f"MovieLens neural scorer: {data.n_items} movies, {data.n_users} users as queries, k=50, "
        f"FGSM eps={adversarial_eps}, AUC {stats['auc']:.3f}",
        "",
        table(REPORT_HEADER, report_rows(reports)),
        "",
        f"brute force (same model, whole catalog): {brute['batch_ms_per_query']:.2f} ms/query in a batch, "
        f"{brute['single_ms']:.1f} ms single query",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.movielens", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="var/movielens", help="output directory; default %(default)s")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs; default %(default)s")
    parser.add_argument("--adversarial-eps", type=float, default=0.0,
                        help="NANN's FGSM perturbation of item embeddings while training (0 = off); default %(default)s")
    parser.add_argument("--metric", default="l2", choices=["l2", "ip"], help="graph metric; default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run_from_args(args: argparse.Namespace) -> int:
    print(run(Path(args.out), epochs=args.epochs, adversarial_eps=args.adversarial_eps, metric=args.metric,
              seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
