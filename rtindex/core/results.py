"""What the index returns: plain dataclasses of numpy arrays, shared by the in-process
``Index``, the GPU backend and the gRPC client (which must not load the engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# per-id outcomes of an upsert
INSERTED, REFRESHED, SKIPPED_STALE = 0, 1, 2
# per-id outcomes of a delete (SKIPPED_STALE as above)
DELETED, UNKNOWN = 0, 1


@dataclass(frozen=True)
class SearchResult:
    """ids int64[b, k] (-1 padded) and scores float32[b, k] (-inf padded), best first;
    per query: hops (nodes expanded) and evaluations (rows scored), int64[b]."""

    ids: np.ndarray
    scores: np.ndarray
    hops: np.ndarray
    evaluations: np.ndarray


@dataclass(frozen=True)
class UpsertResult:
    inserted: int  # new ids
    refreshed: int  # existing ids whose embedding was replaced
    skipped_stale: int  # ops whose version was <= the stored one (ignored)
    outcome: np.ndarray | None = None  # int8 per input id: INSERTED / REFRESHED / SKIPPED_STALE


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    unknown_ids: np.ndarray  # int64: ids not in the index (nothing done for them)
    skipped_stale: int
    outcome: np.ndarray | None = None  # int8 per input id: DELETED / UNKNOWN / SKIPPED_STALE


@dataclass(frozen=True)
class GetResult:
    found: np.ndarray  # bool[n]
    vectors: np.ndarray  # float32[n, dim] stored rows (unit-norm for cosine); NaN if not found
    versions: np.ndarray  # int64[n]; -1 if not found


@dataclass
class IndexState:
    """Everything needed to rebuild an index exactly (``Index.export_state``): the
    configuration, the used part of every table and free list, the id maps, the
    bookkeeping counters and the level generator's state. ``extra`` carries what the
    caller captured at the same instant (e.g. the Kafka offsets the state reflects)."""

    config: dict[str, Any]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    extra: dict[str, Any]
