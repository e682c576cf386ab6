"""CatalogChange and CategoryEdge messages: encode (producer side), decode and validate
(consumer side), and reduce a batch of changes to what the index applies.

A batch of messages is decoded in one compiled pass (``decode_batch`` and
``decode_edges``, the parsers in kernels/catalog_wire.py); the few messages a parser does
not accept are decoded one by one by the protobuf library (``decode``, ``decode_edge``),
whose verdict and reason stand. Everything after is vectorised: rows are checked with the
index's own rules, then each id keeps its change of the highest version (per-item order
is guaranteed within a partition, and versions are monotonic per item, so that is the
change that wins), with the categories that change carries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto

from rtindex.api.v1.catalog_pb2 import CatalogChange, CategoryEdge
from rtindex.core.categories import MAX_ITEM_CATEGORIES, ItemCategories, item_categories
from rtindex.kernels.catalog_wire import (
    ACCEPTED,
    EDGE_FIELD_TYPES,
    FIELD_TYPES,
    EdgeLayout,
    WireLayout,
    parse_changes,
    parse_edges,
)

UPSERT = CatalogChange.UPSERT
DELETE = CatalogChange.DELETE


def wire_layout(message: Descriptor) -> WireLayout:
    """Field numbers and op values of a CatalogChange descriptor, for the compiled parser
    (kernels/catalog_wire.py). Raises ValueError when a field is missing or its type
    (hence its wire type) is not the one that parser reads."""
    ops = message.enum_types_by_name["Op"].values_by_name
    return WireLayout(**_field_numbers(message, FIELD_TYPES), upsert=ops["UPSERT"].number,
                      delete=ops["DELETE"].number)


def edge_layout(message: Descriptor) -> EdgeLayout:
    """Field numbers of a CategoryEdge descriptor (as ``wire_layout``)."""
    return EdgeLayout(**_field_numbers(message, EDGE_FIELD_TYPES))


def _field_numbers(message: Descriptor, field_types: dict[str, str]) -> dict[str, int]:
    numbers = {}
    for name, parsed_as in field_types.items():
        field = message.fields_by_name.get(name)
        declared = _declared_type(field) if field is not None else "missing"
        if declared != parsed_as:
            raise ValueError(f"{message.full_name}.{name} is {declared} in the .proto, but the consumer's compiled "
                             f"decoder (kernels/catalog_wire.py) reads it as {parsed_as}; update the decoder with "
                             "the .proto")
        numbers[name] = field.number  # type: ignore[union-attr]
    return numbers


def _declared_type(field: FieldDescriptor) -> str:
    """e.g. "int64", "repeated int64", "enum", "bytes"."""
    name = FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
    return f"repeated {name}" if field.is_repeated else name


# read once at import: the numbers the producer's generated code writes
WIRE_LAYOUT = wire_layout(CatalogChange.DESCRIPTOR)
EDGE_LAYOUT = edge_layout(CategoryEdge.DESCRIPTOR)


class Poison(Exception):
    """A message that cannot be applied; the reason goes into the dead-letter header."""


def encode(op: int, item_id: int, version: int, embedding: np.ndarray | None = None,
           categories: Iterable[int] | None = (), produced_at: float | None = None) -> tuple[bytes, bytes]:
    """(key, value) of one change, stamped with ``produced_at`` (default: now).
    categories: an UPSERT's category ids (None or empty: none)."""
    key, body = encode_body(op, item_id, version, embedding, categories)
    return key, stamp(body, produced_at)


def encode_body(op: int, item_id: int, version: int, embedding: np.ndarray | None = None,
                categories: Iterable[int] | None = ()) -> tuple[bytes, bytes]:
    """(key, value) of one change without its producer time: encode ahead, ``stamp``
    when sent (a producer paced to a rate then stamps the time it really sends)."""
    change = CatalogChange(op=op, id=int(item_id), version=int(version),
                           categories=[int(c) for c in categories or ()])
    if embedding is not None:
        change.embedding = np.ascontiguousarray(embedding, "<f4").tobytes()
    return str(int(item_id)).encode(), change.SerializeToString()


def stamp(body: bytes, produced_at: float | None = None) -> bytes:
    """``body`` with its producer time set to ``produced_at`` (default: now). Serialized
    protobuf messages concatenate as a merge, the last value of a field winning, so
    the time field is appended instead of re-encoding the message."""
    micros = int((time.time() if produced_at is None else produced_at) * 1e6)
    return body + CatalogChange(producer_time_us=micros).SerializeToString()


def encode_edge(child: int, parent: int, produced_at: float | None = None) -> tuple[bytes, bytes]:
    """(key, value) of one taxonomy edge: ``parent`` becomes the parent of ``child``
    (-1: ``child`` becomes a root), stamped with ``produced_at`` (default: now)."""
    micros = int((time.time() if produced_at is None else produced_at) * 1e6)
    edge = CategoryEdge(child=int(child), parent=int(parent), producer_time_us=micros)
    return str(int(child)).encode(), edge.SerializeToString()


def _parsed(message: Any, value: bytes | None) -> Any:
    """``value`` parsed as a ``message`` (a generated protobuf class); Poison if it is not one."""
    name = message.DESCRIPTOR.name
    if value is None:
        raise Poison(f"empty message value (a tombstone record?); send a serialized {name}")
    try:
        return message.FromString(value)
    except Exception as exc:  # protobuf raises DecodeError, but be robust to anything
        raise Poison(f"value is not a {name} protobuf: {exc}") from None


def decode(key: bytes | None, value: bytes | None, dim: int) -> CatalogChange:
    """Parse and check one message; raises Poison with the reason."""
    change = _parsed(CatalogChange, value)
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
        _check_categories(change.categories)
    elif change.embedding:
        raise Poison("a DELETE carries no embedding")
    return change


def _check_categories(categories: Iterable[int]) -> None:
    """The index's rules for an item's categories (``item_categories``), as a Poison."""
    try:
        item_categories(np.fromiter(categories, np.int64), "categories")
    except ValueError as exc:
        raise Poison(str(exc)) from None


def decode_edge(key: bytes | None, value: bytes | None) -> CategoryEdge:
    """Parse and check one taxonomy edge; raises Poison with the reason. (Whether the
    taxonomy accepts it, e.g. no cycle, is the index's call when it is applied.)"""
    edge = _parsed(CategoryEdge, value)
    if not edge.HasField("child"):
        raise Poison("missing child")
    if edge.child < 0:
        raise Poison(f"child category id {edge.child} is negative; category ids are >= 0")
    if not edge.HasField("parent"):
        raise Poison("missing parent (a category id >= 0, or -1 to make the child a root)")
    if edge.parent < -1:
        raise Poison(f"parent {edge.parent} is negative; category ids are >= 0 (-1 makes the child a root)")
    if key is not None and key != str(edge.child).encode():
        raise Poison(f"message key {key[:40]!r} does not match child {edge.child} (key = child id as decimal text)")
    return edge


@dataclass
class Decoded:
    """The valid changes of a batch of messages, in message order."""

    message: np.ndarray  # position of each change's message in the batch
    op: np.ndarray
    ids: np.ndarray
    versions: np.ndarray
    produced_at: np.ndarray  # seconds since the epoch
    rows: np.ndarray  # float32 (n, dim); an UPSERT's embedding (rows of DELETEs are not meaningful)
    categories: ItemCategories  # an UPSERT's distinct category ids, ascending (a DELETE has none)


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
    # room for every category of the batch: an id takes a byte of its message at least,
    # and an accepted message has at most MAX_ITEM_CATEGORIES
    cat_values = np.empty(min(len(value_bytes), n * MAX_ITEM_CATEGORIES), np.int64)
    cat_starts = np.zeros(n, np.int64)
    cat_counts = np.zeros(n, np.int64)
    used = parse_changes(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, dim,
                         WIRE_LAYOUT, rows.view(np.uint8), op, ids, versions, time_us, status, MAX_ITEM_CATEGORIES,
                         cat_values, cat_starts, cat_counts)
    poison = []
    rescued = False
    for m in np.flatnonzero(status != ACCEPTED):  # few: the protobuf library decides
        try:
            change = decode(keys[m], values[m], dim)
        except Poison as exc:
            poison.append((int(m), str(exc)))
            continue
        op[m], ids[m], versions[m], time_us[m] = change.op, change.id, change.version, change.producer_time_us
        if change.op == UPSERT:
            rows[m] = np.frombuffer(change.embedding, "<f4")
            given = np.unique(np.fromiter(change.categories, np.int64))
            cat_values[used : used + len(given)] = given  # fits (see cat_values)
            cat_starts[m], cat_counts[m] = used, len(given)
            used += len(given)
        status[m] = ACCEPTED
        rescued = True
    ok = np.flatnonzero(status == ACCEPTED)
    if rescued:  # rows out of message order: gather them
        categories = _gathered(cat_values, cat_starts[ok], cat_counts[ok])
    else:  # the parser wrote the accepted messages' rows one after another
        offsets = np.zeros(len(ok) + 1, np.int64)
        np.cumsum(cat_counts[ok], out=offsets[1:])
        categories = ItemCategories(offsets, cat_values[:used].copy())
    decoded = Decoded(message=ok, op=op[ok], ids=ids[ok], versions=versions[ok], produced_at=time_us[ok] / 1e6,
                      rows=rows[ok], categories=categories)
    return decoded, poison


def _gathered(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> ItemCategories:
    """Compressed rows of the runs ``values[starts[i]:starts[i] + counts[i]]``."""
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
    return ItemCategories(offsets, values[np.repeat(starts, counts) + within])


@dataclass
class DecodedEdges:
    """The valid taxonomy edges of a batch of messages, in message order."""

    message: np.ndarray  # position of each edge's message in the batch
    children: np.ndarray  # int64 category ids >= 0
    parents: np.ndarray  # int64 category ids, -1: make the child a root
    produced_at: np.ndarray  # seconds since the epoch


def decode_edges(keys: list[bytes | None], values: list[bytes | None]) -> tuple[DecodedEdges, list[tuple[int, str]]]:
    """Decode and check a batch of CategoryEdge messages (keys[i], values[i]); returns the
    valid edges and, per invalid message, (its position, the reason)."""
    n = len(values)
    value_bytes, value_starts, value_lengths = _concatenated(values)
    key_bytes, key_starts, key_lengths = _concatenated(keys)
    children, parents, time_us = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    status = np.empty(n, np.uint8)
    parse_edges(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, EDGE_LAYOUT, children,
                parents, time_us, status)
    poison = []
    for m in np.flatnonzero(status != ACCEPTED):  # few: the protobuf library decides
        try:
            edge = decode_edge(keys[m], values[m])
        except Poison as exc:
            poison.append((int(m), str(exc)))
            continue
        children[m], parents[m], time_us[m] = edge.child, edge.parent, edge.producer_time_us
        status[m] = ACCEPTED
    ok = np.flatnonzero(status == ACCEPTED)
    return DecodedEdges(message=ok, children=children[ok], parents=parents[ok], produced_at=time_us[ok] / 1e6), poison


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
    upsert_categories: ItemCategories  # each upsert's categories (they replace the item's previous ones)
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
        upsert_messages=changes.message[up], upsert_categories=changes.categories.take(up), delete_ids=ids[de], delete_versions=versions[de],
        produced_at=changes.produced_at[keep], superseded=n - len(keep),
    )
