"""CatalogChange messages: encode (producer side), decode and validate (consumer side),
and reduce a batch to what the index applies.

Decoding is per message (Kafka hands them over one by one); everything after is
vectorised: rows are checked with the index's own rules, then each id keeps its change
of the highest version (per-item order is guaranteed within a partition, and versions
are monotonic per item, so that is the change that wins).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rtindex.v1.catalog_pb2 import CatalogChange

UPSERT = CatalogChange.UPSERT
DELETE = CatalogChange.DELETE


class Poison(Exception):
    """A message that cannot be applied; the reason goes into the dead-letter header."""


def encode(op: int, item_id: int, version: int, embedding: np.ndarray | None = None,
           categories: tuple[int, ...] = (), produced_at: float | None = None) -> tuple[bytes, bytes]:
    """(key, value) of one change, stamped with ``produced_at`` (default: now)."""
    key, body = encode_body(op, item_id, version, embedding, categories)
    return key, stamp(body, produced_at)


def encode_body(op: int, item_id: int, version: int, embedding: np.ndarray | None = None,
                categories: tuple[int, ...] = ()) -> tuple[bytes, bytes]:
    """(key, value) of one change without its producer time: encode ahead, ``stamp``
    when sent (a producer paced to a rate then stamps the time it really sends)."""
    change = CatalogChange(op=op, id=int(item_id), version=int(version), categories=list(categories))
    if embedding is not None:
        change.embedding = np.ascontiguousarray(embedding, "<f4").tobytes()
    return str(int(item_id)).encode(), change.SerializeToString()


def stamp(body: bytes, produced_at: float | None = None) -> bytes:
    """``body`` with its producer time set to ``produced_at`` (default: now). Serialized
    protobuf messages concatenate as a merge, the last value of a field winning, so
    the time field is appended instead of re-encoding the message."""
    micros = int((time.time() if produced_at is None else produced_at) * 1e6)
    return body + CatalogChange(producer_time_us=micros).SerializeToString()


def decode(key: bytes | None, value: bytes | None, dim: int) -> CatalogChange:
    """Parse and check one message; raises Poison with the reason."""
    if value is None:
        raise Poison("empty message value (a tombstone record?); send a serialized CatalogChange")
    try:
        change = CatalogChange.FromString(value)
    except Exception as exc:  # protobuf raises DecodeError, but be robust to anything
        raise Poison(f"value is not a CatalogChange protobuf: {exc}") from None
    if change.op not in (UPSERT, DELETE):
        raise Poison(f"unknown op {change.op}; use UPSERT (1) or DELETE (2)")
    if not change.HasField("id"):
        raise Poison("missing id")
    if change.id < 0:
        raise Poison(f"id {change.id} is negative; ids are >= 0")
    if not change.HasField("version"):
        raise Poison("missing version")
    if key is not None and key != str(change.id).encode():
        raise Poison(f"message key {key[:40]!r} does not match id {change.id} (key = id as decimal text)")
    if change.op == UPSERT:
        if len(change.embedding) != 4 * dim:
            raise Poison(f"embedding has {len(change.embedding)} bytes; the index needs {dim} float32 ({4 * dim} bytes)")
    elif change.embedding:
        raise Poison("a DELETE carries no embedding")
    return change


@dataclass
class Batch:
    """What one poll of the stream becomes: the latest change per id, split by op."""

    upsert_ids: np.ndarray
    upsert_rows: np.ndarray
    upsert_versions: np.ndarray
    delete_ids: np.ndarray
    delete_versions: np.ndarray
    produced_at: np.ndarray  # seconds since the epoch, per kept change
    superseded: int  # changes dropped because a later version of the same id was in the batch


def reduce_batch(changes: list[CatalogChange], dim: int) -> Batch:
    n = len(changes)
    ids = np.fromiter((c.id for c in changes), np.int64, n)
    versions = np.fromiter((c.version for c in changes), np.int64, n)
    ops = np.fromiter((c.op for c in changes), np.int8, n)
    produced = np.fromiter((c.producer_time_us for c in changes), np.float64, n) / 1e6
    # the highest version of each id (the last one on ties: the stream's order)
    order = np.lexsort((np.arange(n), versions, ids))
    last = np.ones(n, bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    keep = np.sort(order[last])
    up = keep[ops[keep] == UPSERT]
    rows = np.frombuffer(b"".join(changes[i].embedding for i in up), "<f4").reshape(len(up), dim)
    de = keep[ops[keep] == DELETE]
    return Batch(
        upsert_ids=ids[up], upsert_rows=np.array(rows, np.float32), upsert_versions=versions[up],
        delete_ids=ids[de], delete_versions=versions[de], produced_at=produced[keep], superseded=n - len(keep),
    )
