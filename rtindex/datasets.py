"""Loaders for the real datasets in ``../shared/datasets`` (texmex .fvecs/.ivecs and
MNIST IDX), verified against SHA256SUMS.json, plus the seeded synthetic set used by the
benchmarks. Set RTINDEX_DATASETS to point elsewhere (see ``datasets_dir``)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


@cache
def datasets_dir() -> Path:
    """RTINDEX_DATASETS, else ``../shared/datasets`` beside this checkout, else beside
    the local repository it was cloned from (a scratch clone, e.g. in a temp folder)."""
    env = os.environ.get("RTINDEX_DATASETS")
    if env:
        return Path(env)
    beside = REPO_ROOT.parent / "shared" / "datasets"
    if not beside.is_dir():
        origin = _local_origin(REPO_ROOT)
        if origin is not None and (origin.parent / "shared" / "datasets").is_dir():
            return origin.parent / "shared" / "datasets"
    return beside


def _local_origin(repo: Path) -> Path | None:
    """The folder ``repo`` was cloned from, when its origin is a local path."""
    try:
        url = subprocess.run(["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


@dataclass(frozen=True)
class Dataset:
    name: str
    base: np.ndarray  # float32[n, dim]
    queries: np.ndarray  # float32[q, dim]
    ground_truth: np.ndarray  # int32[q, 100]: ids (row numbers of base), best first
    metric: str


@cache
def _checksums(root: Path) -> dict[str, dict[str, object]]:
    path = root / "SHA256SUMS.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; set RTINDEX_DATASETS to the folder holding the shared datasets")
    return json.loads(path.read_text())


def _verified(relative: str) -> Path:
    root = datasets_dir()
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} not found; set RTINDEX_DATASETS to the shared datasets folder")
    expected = _checksums(root).get(relative)
    if expected is None:
        raise ValueError(f"{relative} has no entry in SHA256SUMS.json; refusing to use an unlisted file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected["sha256"]:
        raise ValueError(f"{path} fails its checksum (got {digest[:12]}…, expected {str(expected['sha256'])[:12]}…); re-copy the dataset")
    return path


def read_vecs(path: Path, dtype: type = np.float32) -> np.ndarray:
    """texmex format: per row an int32 dim, then dim values (little-endian)."""
    raw = np.fromfile(path, np.int32)
    if raw.size == 0:
        return np.empty((0, 0), dtype)
    dim = int(raw[0])
    rows = raw.reshape(-1, dim + 1)[:, 1:]
    return np.ascontiguousarray(rows.view(np.float32) if dtype == np.float32 else rows)


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows * cols).astype(np.float32)


def load(name: str) -> Dataset:
    """``sift5k`` (L2), ``glove25`` (cosine) or ``mnist10k`` (L2)."""
    if name == "sift5k":
        return Dataset(
            name, read_vecs(_verified("sift5k/sift5k_base.fvecs")),
            read_vecs(_verified("sift5k/siftsmall100_query.fvecs")),
            read_vecs(_verified("sift5k/sift5k_groundtruth_l2_k100.ivecs"), np.int32), "l2",
        )
    if name == "glove25":
        return Dataset(
            name, read_vecs(_verified("glove25/glove25_base.fvecs")),
            read_vecs(_verified("glove25/glove25_query.fvecs")),
            read_vecs(_verified("glove25/glove25_groundtruth_angular_k100.ivecs"), np.int32), "cosine",
        )
    if name == "mnist10k":
        images = _read_idx_images(_verified("mnist10k/t10k-images-idx3-ubyte.gz"))
        return Dataset(
            name, np.ascontiguousarray(images[:9000]), np.ascontiguousarray(images[9000:]),
            read_vecs(_verified("mnist10k/mnist_groundtruth_l2_k100.ivecs"), np.int32), "l2",
        )
    raise ValueError(f"unknown dataset {name!r}; choose sift5k, glove25 or mnist10k")


def clustered(n: int, dim: int, clusters: int = 100, std: float = 0.35, seed: int = 0) -> np.ndarray:
    """L2-normalised mixture of Gaussian clusters (unit-norm centers, per-coordinate
    noise std/sqrt(dim)), float32[n, dim]."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    x = centers[labels] + rng.standard_normal((n, dim)).astype(np.float32) * np.float32(std / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str, base_ids: np.ndarray | None = None) -> np.ndarray:
    """Brute-force top-k (ids of base rows, or base_ids) by the metric, in blocks."""
    b = base
    q = queries
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = np.empty((len(q), k), np.int64)
    sq = np.einsum("ij,ij->i", b, b) if metric == "l2" else None
    for lo in range(0, len(q), 1024):
        s = q[lo : lo + 1024] @ b.T
        if sq is not None:
            s = 2 * s - sq[None, :]
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(s, part, 1).argsort(axis=1)[:, ::-1]
        out[lo : lo + 1024] = np.take_along_axis(part, order, 1)
    return out if base_ids is None else base_ids[out]


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:, :k] ∩ truth[:, :k]| / k."""
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(found))
