"""CatalogChange messages: encode (producer side), decode and validate (consumer side),
and reduce a batch to what the index applies.

A batch of messages is decoded in one compiled pass (``decode_batch``, the parser in
kernels/catalog_wire.py); the few messages that parser does not accept are decoded one
by one by the protobuf library (``decode``), whose verdict and reason stand. Everything
after is vectorised: rows are checked with the index's own rules, then each id keeps
its change of the highest version (per-item order is guaranteed within a partition, and
versions are monotonic per item, so that is the change that wins).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto

from rtindex.api.v1.catalog_pb2 import CatalogChange
from rtindex.kernels.catalog_wire import ACCEPTED, FIELD_TYPES, WireLayout, parse_changes

UPSERT = CatalogChange.UPSERT
DELETE = CatalogChange.DELETE


def wire_layout(message: Descriptor) -> WireLayout:
    """Field numbers and op values of a CatalogChange descriptor, for the compiled parser
    (kernels/catalog_wire.py). Raises ValueError when a field is missing or its type
    (hence its wire type) is not the one that parser reads."""
    numbers = {}
    for name, parsed_as in FIELD_TYPES.items():
        field = message.fields_by_name.get(name)
        declared = _declared_type(field) if field is not None else "missing"
        if declared != parsed_as:
            raise ValueError(f"{message.full_name}.{name} is {declared} in the .proto, but the consumer's compiled "
                             f"decoder (kernels/catalog_wire.py) reads it as {parsed_as}; update the decoder with "
                             "the .proto")
        numbers[name] = field.number  # type: ignore[union-attr]
    ops = message.enum_types_by_name["Op"].values_by_name
    return WireLayout(**numbers, upsert=ops["UPSERT"].number, delete=ops["DELETE"].number)


def _declared_type(field: FieldDescriptor) -> str:
    """e.g. "int64", "repeated int64", "enum", "bytes"."""
    name = FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
    return f"repeated {name}" if field.is_repeated else name


# read once at import: the numbers the producer's generated code writes
WIRE_LAYOUT = wire_layout(CatalogChange.DESCRIPTOR)


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
        raise Poison(f"unknown op {change.op}; use UPSERT ({UPSERT}) or DELETE ({DELETE})")
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
class Decoded:
    """The valid changes of a batch of messages, in message order."""

    message: np.ndarray  # position of each change's message in the batch
    op: np.ndarray
    ids: np.ndarray
    versions: np.ndarray
    produced_at: np.ndarray  # seconds since the epoch
    rows: np.ndarray  # float32 (n, dim); an UPSERT's embedding (rows of DELETEs are not meaningful)


def decode_batch(keys: list[bytes | None], values: list[bytes | None], dim: int) -> tuple[Decoded, list[tuple[int, str]]]:
    """Decode and check a batch of messages (keys[i], values[i]); returns the valid
    changes and, per invalid message, (its position, the reason)."""
    n = len(values)
    value_bytes, value_starts, value_lengths = _concatenated(values)
    key_bytes, key_starts, key_lengths = _concatenated(keys)
    op = np.zeros(n, np.int64)
    ids = np.zeros(n, np.int64)
    versions = np.zeros(n, np.int64)
    time_us = np.zeros(n, np.int64)
    rows = np.empty((n, dim), "<f4")  # written for accepted UPSERTs, the only rows used (no memset)
    status = np.empty(n, np.uint8)
    parse_changes(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, dim, WIRE_LAYOUT,
                  rows.view(np.uint8), op, ids, versions, time_us, status)
    poison = []
    for m in np.flatnonzero(status != ACCEPTED):  # few: the protobuf library decides
        try:
            change = decode(keys[m], values[m], dim)
        except Poison as exc:
            poison.append((int(m), str(exc)))
            continue
        op[m], ids[m], versions[m], time_us[m] = change.op, change.id, change.version, change.producer_time_us
        if change.op == UPSERT:
            rows[m] = np.frombuffer(change.embedding, "<f4")
        status[m] = ACCEPTED
    ok = np.flatnonzero(status == ACCEPTED)
    decoded = Decoded(message=ok, op=op[ok], ids=ids[ok], versions=versions[ok], produced_at=time_us[ok] / 1e6,
                      rows=rows[ok])
    return decoded, poison


def _concatenated(chunks: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(all bytes, start of each chunk, length of each chunk; -1 for None)."""
    if None in chunks:  # a record without a key, or a tombstone: rare
        lengths = np.array([-1 if c is None else len(c) for c in chunks], np.int64)
        chunks = [b"" if c is None else c for c in chunks]
    else:
        lengths = np.fromiter(map(len, chunks), np.int64, len(chunks))  # type: ignore[arg-type]
    sizes = np.maximum(lengths, 0)
    starts = np.cumsum(sizes) - sizes
    return np.frombuffer(b"".join(chunks), np.uint8), starts, lengths  # type: ignore[arg-type]


@dataclass
class Batch:
    """What one poll of the stream becomes: the latest change per id, split by op."""

    upsert_ids: np.ndarray
    upsert_rows: np.ndarray
    upsert_versions: np.ndarray
    upsert_messages: np.ndarray  # each upsert's message: its position in the polled batch
    delete_ids: np.ndarray
    delete_versions: np.ndarray
    produced_at: np.ndarray  # seconds since the epoch, per kept change
    superseded: int  # changes dropped because a later version of the same id was in the batch


def reduce_batch(changes: Decoded) -> Batch:
    n = len(changes.ids)
    ids, versions = changes.ids, changes.versions
    # the highest version of each id (the last one on ties: the stream's order)
    order = np.lexsort((np.arange(n), versions, ids))
    last = np.ones(n, bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    keep = np.sort(order[last])
    up = keep[changes.op[keep] == UPSERT]
    de = keep[changes.op[keep] == DELETE]
    return Batch(
        upsert_ids=ids[up], upsert_rows=changes.rows[up], upsert_versions=versions[up],
        upsert_messages=changes.message[up], delete_ids=ids[de], delete_versions=versions[de],
        produced_at=changes.produced_at[keep], superseded=n - len(keep),
    )
