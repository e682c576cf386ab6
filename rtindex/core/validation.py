"""Checks at the edge: every public entry point converts and validates its input here,
once, with messages that say what was wrong and what to do. Nothing here mutates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MAX_ID = np.iinfo(np.int64).max


def as_ids(ids: object, what: str) -> np.ndarray:
    """int64[n] of distinct ids >= 0. Accepts integer arrays, integral floats, lists."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{what}: ids must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what}: empty batch (0 ids); pass at least one id")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: ids contain NaN or infinity; ids must be integers >= 0")
        if not np.all(arr == np.floor(arr)) or np.any(np.abs(arr) >= 2.0**63):
            raise ValueError(f"{what}: ids must be whole numbers within int64; got non-integral values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > MAX_ID:
            raise ValueError(f"{what}: ids must fit in int64 (max {MAX_ID})")
        arr = arr.astype(np.int64, copy=False)
    else:
        raise ValueError(f"{what}: ids must be integers, got dtype {arr.dtype}")
    if np.any(arr < 0):
        bad = arr[arr < 0][:5].tolist()
        raise ValueError(f"{what}: ids must be >= 0 (-1 marks empty result slots); got {bad}")
    if np.unique(arr).shape[0] != arr.shape[0]:
        uniq, counts = np.unique(arr, return_counts=True)
        dup = uniq[counts > 1][:5].tolist()
        raise ValueError(f"{what}: duplicate ids in one batch {dup}; send one operation per id per batch")
    return np.ascontiguousarray(arr)


def as_versions(versions: object | None, n: int, what: str) -> np.ndarray | None:
    if versions is None:
        return None
    arr = np.asarray(versions)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(f"{what}: versions must be {n} integers (one per id), got shape {arr.shape} dtype {arr.dtype}")
    return np.ascontiguousarray(arr.astype(np.int64))


def as_ef_construction(ef: object | None, index_ef: int) -> int:
    """A per-batch insert beam width: 1..the index's ef_construction (None = that)."""
    if ef is None:
        return index_ef
    if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or not 1 <= ef <= index_ef:
        raise ValueError(f"upsert: ef_construction must be an integer in [1, {index_ef}] (the index's "
                         f"ef_construction), got {ef!r}")
    return int(ef)


def as_matrix(vectors: object, dim: int, what: str, rows: int | None = None) -> np.ndarray:
    """float32[n, dim], finite. A single vector of length dim is accepted as one row."""
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what}: vectors must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2:
        raise ValueError(f"{what}: vectors must be a 2-D array [n, {dim}], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what}: empty batch (0 vectors); pass at least one")
    if arr.shape[1] != dim:
        raise ValueError(f"{what}: vectors have dimension {arr.shape[1]}, the index has dim={dim}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{what}: got {rows} ids but {arr.shape[0]} vectors; pass one vector per id")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        finite = np.isfinite(out).all(axis=1)
        bad = np.flatnonzero(~finite)[:5].tolist()
        raise ValueError(
            f"{what}: rows {bad} contain NaN or infinity (or values beyond float32 range); "
            "fix or drop those rows"
        )
    return out


def row_problems(rows: np.ndarray, metric: str, float16: bool) -> dict[int, str]:
    """Rows the index would refuse (the rules of as_matrix, normalized_rows and
    check_float16_range): row number -> why. Empty when all are fine. For streams,
    where one bad row must not sink a whole batch."""
    finite = np.isfinite(rows).all(axis=1)
    peak = np.abs(np.where(finite[:, None], rows, 0)).max(axis=1) if len(rows) else np.zeros(0)
    rules = [(~finite, "embedding contains NaN or infinity")]
    if metric == "cosine":
        rules.append((finite & (peak == 0), "embedding is all zeros (cosine needs a direction)"))
    if float16:
        rules.append((finite & (peak > 65504.0), "embedding has values beyond float16 range (|x| > 65504)"))
    return {int(i): reason for bad, reason in rules for i in np.flatnonzero(bad)}


def check_float16_range(vectors: np.ndarray, what: str) -> None:
    """Rows must be representable in float16 when the index traverses a float16 copy."""
    too_big = np.abs(vectors).max(axis=1) > 65504.0
    if too_big.any():
        bad = np.flatnonzero(too_big)[:5].tolist()
        raise ValueError(
            f"{what}: rows {bad} have values beyond float16 range (|x| > 65504); rescale the "
            "embeddings or use traversal_precision='float32'"
        )


def normalized_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    """Unit-norm copy for the cosine metric; zero rows have no direction and are refused."""
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(norms == 0):
        bad = np.flatnonzero(norms == 0)[:5].tolist()
        raise ValueError(f"{what}: rows {bad} are all zeros; cosine similarity needs a non-zero vector")
    return np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)


def batch_size(queries: object) -> int:
    """Number of queries in a batch given to a scorer: rows of an array, or of the first
    tensor of a mapping of named features (all of the same length)."""
    if isinstance(queries, Mapping):
        if not queries:
            raise ValueError("search: no query features given")
        sizes = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in queries.items()}
        if None in sizes.values():
            scalar = [name for name, size in sizes.items() if size is None]
            raise ValueError(f"search: query features {scalar} are scalars; each feature needs one row per query")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"search: query features have different batch sizes {sizes}; pass one row per query")
        n = next(iter(sizes.values()))
    else:
        try:
            n = len(queries)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"search: queries must be a batch (array or mapping of arrays), got {type(queries).__name__}") from None
    if n == 0:
        raise ValueError("search: empty batch (0 queries); pass at least one")
    return n


def check_search_args(
    k: object, ef: object | None, level_ef: Sequence[int] | None, default_ef: int, max_level: int
) -> tuple[int, int, np.ndarray, int]:
    """Returns (k, ef, level widths int32[max_level + 1], the widest beam of them all).

    ef=None means max(default_ef, k). level_ef[i] is the beam width on level i + 1
    (NANN's level_topn); levels not given are searched greedily (width 1).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"search: k must be a positive integer, got {k!r}")
    k = int(k)
    if ef is None:
        ef = max(default_ef, k)
    if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or ef < 1:
        raise ValueError(f"search: ef must be a positive integer, got {ef!r}")
    ef = int(ef)
    if ef < k:
        raise ValueError(f"search: ef={ef} is smaller than k={k}; the beam must hold k results, pass ef >= k")
    widths = np.zeros(max_level + 1, np.int32)
    if level_ef is not None:
        values = list(level_ef)
        if len(values) > max_level:
            raise ValueError(f"search: level_ef has {len(values)} entries, at most {max_level} levels exist")
        for i, w in enumerate(values):
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ValueError(f"search: level_ef[{i}] (beam width on level {i + 1}) must be a positive integer, got {w!r}")
            widths[i + 1] = w
        return k, ef, widths, max(ef, max(values, default=1))
    return k, ef, widths, ef
