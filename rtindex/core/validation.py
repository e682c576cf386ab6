"""Checks at the edge: every public entry point converts and validates its input here,
once, with messages that say what was wrong and what to do. Nothing here mutates.

Each rule is written once. The batch edges (``Index`` methods, and through them the gRPC
server, which only turns wire bytes into arrays) raise ValueError naming the first bad
rows; the stream edge (the Kafka consumer) asks ``row_problems`` for one reason per bad
row, so one bad message is dead-lettered without sinking its batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from rtindex.core.categories import MAX_SEARCH_CATEGORIES, ItemCategories

MAX_ID = np.iinfo(np.int64).max
FLOAT16_MAX = 65504.0


class RowRule(NamedTuple):
    """A rule every stored embedding (and every query vector) obeys."""

    reason: str  # what is wrong with a refused row
    fix: str  # what the sender should do about it

    def message(self) -> str:
        return f"{self.reason}; {self.fix}"


NOT_FINITE = RowRule("embedding contains NaN or infinity (or values beyond float32 range)",
                     "send finite float32 values")
ALL_ZEROS = RowRule("embedding is all zeros, which has no direction for cosine similarity", "send a non-zero vector")
BEYOND_FLOAT16 = RowRule("embedding has values beyond float16 range (|x| > 65504)",
                         "rescale the embeddings or use traversal_precision='float32'")


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
    """int64[n] (one version per id), or None for an unversioned write."""
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


def as_matrix(vectors: object, dim: int, what: str, rows: int | None = None, *, metric: str = "ip",
              float16: bool = False) -> np.ndarray:
    """float32[n, dim] whose rows obey the row rules of an index with this ``metric``
    (and a float16 traversal copy when ``float16``); raises ValueError naming the first
    bad rows. A single vector of length dim is accepted as one row; ``rows`` is the
    number of vectors expected (one per id). Not normalised: see ``stored_rows``."""
    out = _float32_matrix(vectors, dim, what, rows)
    check_rows(out, metric, float16, what)
    return out


def _float32_matrix(vectors: object, dim: int, what: str, rows: int | None) -> np.ndarray:
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
        raise ValueError(f"{what}: vectors have dim={arr.shape[1]}, the index has dimension {dim}; "
                         f"send vectors of {dim} values")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{what}: {rows} ids but {arr.shape[0]} embeddings; send one embedding per id")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, which the row rules refuse
        return np.ascontiguousarray(arr, dtype=np.float32)


def _broken_rules(rows: np.ndarray, metric: str, float16: bool) -> list[tuple[RowRule, np.ndarray]]:
    """(rule, bool[n] rows breaking it) for each rule an index with this metric keeps.
    A row breaks at most one: the others are judged on finite rows only."""
    finite = np.isfinite(rows).all(axis=1)
    broken = [(NOT_FINITE, ~finite)]
    if metric == "cosine" or float16:
        peak = np.abs(rows if finite.all() else np.where(finite[:, None], rows, 0)).max(axis=1)
        if metric == "cosine":
            broken.append((ALL_ZEROS, finite & (peak == 0)))
        else:  # cosine rows are stored unit-norm, so only other metrics can leave the float16 range
            broken.append((BEYOND_FLOAT16, finite & (peak > FLOAT16_MAX)))
    return broken


def check_rows(rows: np.ndarray, metric: str, float16: bool, what: str) -> None:
    """Raise ValueError for the first row rule some of ``rows`` (float32[n, dim]) break,
    naming (up to five of) those rows."""
    for rule, bad in _broken_rules(rows, metric, float16):
        if bad.any():
            raise ValueError(f"{what}: rows {np.flatnonzero(bad)[:5].tolist()}: {rule.message()}")


def row_problems(rows: np.ndarray, metric: str, float16: bool) -> dict[int, str]:
    """The same rules as ``check_rows``, per row: row number -> why it is refused.
    Empty when all are fine. For streams, where one bad row must not sink a batch."""
    return {int(i): rule.message() for rule, bad in _broken_rules(rows, metric, float16) for i in np.flatnonzero(bad)}


def stored_rows(rows: np.ndarray, metric: str) -> np.ndarray:
    """``rows`` (float32[n, dim], already past the row rules) as the index stores and
    searches them: unit-norm for cosine, unchanged otherwise."""
    if metric != "cosine":
        return rows
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):  # odd rows: redone below
        norms = np.linalg.norm(rows, axis=1)
        out = rows / norms[:, None]
    # float32 squares under/overflow for tiny or huge rows (|x| ~ 1e-23 or 1e19); redo those in float64
    odd = (norms == 0) | ~np.isfinite(norms)
    if odd.any():
        wide = rows[odd].astype(np.float64)
        out[odd] = wide / np.linalg.norm(wide, axis=1)[:, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def as_queries(queries: object, dim: int, metric: str, what: str = "search") -> np.ndarray:
    """Query vectors float32[b, dim] as an index with this metric searches them: the row
    rules checked (raises ValueError), unit-norm for cosine."""
    return stored_rows(as_matrix(queries, dim, what, metric=metric), metric)


def batch_size(queries: object, what: str = "search") -> int:
    """Number of queries in a batch given to a scorer: rows of an array, or of every
    tensor of a mapping of named features (all of the same length)."""
    if isinstance(queries, Mapping):
        if not queries:
            raise ValueError(f"{what}: no query features given")
        sizes = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in queries.items()}
        if None in sizes.values():
            scalar = [name for name, size in sizes.items() if size is None]
            raise ValueError(f"{what}: query features {scalar} are scalars; each feature needs one row per query")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{what}: query features have different batch sizes {sizes}; pass one row per query")
        n = next(iter(sizes.values()))
    else:
        try:
            n = len(queries)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                f"{what}: queries must be a batch (array or mapping of arrays), got {type(queries).__name__}"
            ) from None
    if n == 0:
        raise ValueError(f"{what}: empty batch (0 queries); pass at least one")
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


def as_item_categories(categories: object, n: int, what: str) -> ItemCategories:
    """Categories of ``n`` items: an ``ItemCategories``, or one sequence of category ids
    per item (None or [] for none). None = no categories for any item."""
    if categories is None:
        return ItemCategories.none(n)
    if isinstance(categories, ItemCategories):
        found = len(categories)
    else:
        if isinstance(categories, (str, bytes)) or not hasattr(categories, "__len__"):
            raise ValueError(f"{what}: categories must be one list of category ids per item, got {categories!r}")
        found = len(categories)  # type: ignore[arg-type]
    if found != n:
        raise ValueError(f"{what}: {found} category lists for {n} items; give one list per item ([] for none)")
    if isinstance(categories, ItemCategories):
        return categories
    return ItemCategories.from_lists(categories, what)  # type: ignore[arg-type]


def as_search_categories(categories: object, k: object, what: str = "search") -> tuple[np.ndarray, np.ndarray]:
    """(category ids int64[c], quotas int32[c]) of a category search: 1 to
    ``MAX_SEARCH_CATEGORIES`` ids >= 0; k a positive integer (the quota of each) or one
    positive integer per category."""
    ids = np.asarray(categories)
    if ids.ndim == 0:
        ids = ids.reshape(1)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ValueError(f"{what}: categories must be a list of integer category ids, got {categories!r}")
    if ids.size == 0:
        raise ValueError(f"{what}: categories is empty; name at least one category (or pass None to search all items)")
    if ids.size > MAX_SEARCH_CATEGORIES:
        raise ValueError(f"{what}: {ids.size} categories in one request; the limit is {MAX_SEARCH_CATEGORIES} "
                         "(split the request)")
    ids = ids.astype(np.int64)
    if ids.min() < 0:
        raise ValueError(f"{what}: category id {ids.min()} is negative; ids are >= 0")
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        quotas = np.full(ids.size, int(k), np.int64)
    else:
        quotas = np.asarray(k)
        if quotas.ndim != 1 or quotas.dtype.kind not in "iu":
            raise ValueError(f"{what}: k must be a positive integer or one positive integer per category, got {k!r}")
        if quotas.size != ids.size:
            raise ValueError(f"{what}: {quotas.size} quotas (k) for {ids.size} categories; give one per category")
    if quotas.min() < 1 or quotas.max() > 1 << 20:
        raise ValueError(f"{what}: every quota k must be in [1, {1 << 20}], got {quotas.min()}..{quotas.max()}")
    return ids, quotas.astype(np.int32)


def as_category_ids(ids: object, what: str, name: str, allow_root: bool = False) -> np.ndarray:
    """int64[n] category ids >= 0 (-1 too with ``allow_root``: "no parent")."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what}: {name} must be a 1-D array of integer category ids, got {ids!r}")
    arr = arr.astype(np.int64)
    floor = -1 if allow_root else 0
    if arr.size and arr.min() < floor:
        raise ValueError(f"{what}: {name} holds a negative id ({arr.min()}); category ids are >= 0"
                         + (" (-1: no parent)" if allow_root else ""))
    return arr
