"""Decode a batch of serialized CatalogChange messages (proto/rtindex/api/v1/catalog.proto)
in one compiled pass: the consumer's hot path, instead of a protobuf object per message.
``parse_edges`` does the same for the taxonomy topic's CategoryEdge messages.

Messages arrive concatenated (``values`` with starts and lengths, -1 = no value; keys
likewise). A message is accepted only when it is well formed and valid as the consumer
requires (op UPSERT or DELETE, id >= 0 and version present, key = id in decimal, an
UPSERT's embedding of exactly ``dim`` float32, a DELETE's empty, categories >= 0 and at
most ``max_categories`` distinct ones). Everything else is flagged, not judged: the
caller hands flagged messages to the protobuf library, whose verdict (and reason)
stands. So this parser only has to be exact on what it accepts.

Categories come out as compressed rows: message m's distinct category ids, ascending, in
``cat_values[cat_starts[m] : cat_starts[m] + cat_counts[m]]``. Each id takes at least a
byte of its message, and a message has at most ``max_categories``, so ``cat_values``
needs no more entries than the smaller of the batch's bytes and ``max_categories`` per
message: the caller allocates it once per batch, and nothing is allocated per message.

Wire format (protobuf encoding): a message is a sequence of (tag varint = field << 3 |
wire type, payload); a scalar field seen twice keeps its last value (``codec.stamp``
appends the producer time that way); unknown fields are skipped. Tags and lengths are
varints of at most 5 bytes (protobuf refuses longer ones), values of at most 10.

The field numbers and op values come in as a ``WireLayout`` that the caller reads from
the generated descriptor (kernels may not import rtindex.api), so a renumbered .proto
needs no change here; a field whose type changes does (see ``FIELD_TYPES``).
"""

from typing import NamedTuple

import numpy as np
from numba import njit

ACCEPTED = 0
FLAGGED = 1  # decide with the protobuf library

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5


class WireLayout(NamedTuple):
    """CatalogChange's field numbers, and the values of its Op enum."""

    op: int
    id: int
    version: int
    embedding: int
    categories: int  # repeated: packed (LENGTH_DELIMITED) or not (VARINT), both accepted
    producer_time_us: int
    upsert: int
    delete: int


class EdgeLayout(NamedTuple):
    """CategoryEdge's field numbers."""

    child: int
    parent: int
    producer_time_us: int


# the type this parser's code reads each field as (and so its wire type: varint for
# enum and int64, length-delimited for bytes, a repeated one packed or not); the
# caller checks the descriptor declares these
FIELD_TYPES = {"op": "enum", "id": "int64", "version": "int64", "embedding": "bytes", "categories": "repeated int64",
               "producer_time_us": "int64"}
EDGE_FIELD_TYPES = {"child": "int64", "parent": "int64", "producer_time_us": "int64"}


@njit(nogil=True, cache=True)
def _is_known(field, layout):
    return (field == layout.op or field == layout.id or field == layout.version or field == layout.embedding
            or field == layout.categories or field == layout.producer_time_us)


@njit(nogil=True, cache=True)
def _varint(buf, pos, end, max_bytes=10):
    """(value as int64 two's complement, position after it); position -1 if malformed
    (cut short, or longer than ``max_bytes``)."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(max_bytes):
        if pos >= end:
            return np.int64(0), -1
        byte = buf[pos]
        pos += 1
        result |= np.uint64(byte & 0x7F) << shift
        if byte < 0x80:
            return np.int64(result), pos
        shift += np.uint64(7)
    return np.int64(0), -1


@njit(nogil=True, cache=True)
def _varint32(buf, pos, end):
    """A tag or a length: protobuf reads them as 32-bit varints of at most 5 bytes and
    refuses a longer one, even one padded with zero groups (e.g. 0x90 0x80 0x80 0x80 0x80
    0x00 for field 2), so this parser must not accept it either."""
    return _varint(buf, pos, end, 5)


@njit(nogil=True, cache=True)
def _add_category(out, base, count, value, max_count):
    """Insert ``value`` into the ascending distinct run out[base:base+count] (a repeat is
    dropped); returns the new count, or -1 for a negative id or more than ``max_count``
    distinct ids. At most ``max_count`` entries are shifted per value."""
    if value < 0:
        return -1
    at = base + count
    while at > base and out[at - 1] > value:
        at -= 1
    if at > base and out[at - 1] == value:
        return count
    if count >= max_count or base + count >= out.shape[0]:
        return -1
    for i in range(base + count, at, -1):
        out[i] = out[i - 1]
    out[at] = value
    return count + 1


@njit(nogil=True, cache=True)
def _add_packed_categories(buf, pos, end, out, base, count, max_count):
    """Add the packed run of varints in buf[pos:end]; the new count, -1 if malformed or
    refused (see ``_add_category``)."""
    while pos < end:
        value, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1
        count = _add_category(out, base, count, value, max_count)
        if count < 0:
            return -1
    return count


@njit(nogil=True, cache=True)
def _key_is_decimal_of(keys, start, length, value):
    """keys[start:start+length] == str(value) (value >= 0), without building a string."""
    digits = 1
    rest = value // 10
    while rest > 0:
        digits += 1
        rest //= 10
    if length != digits:
        return False
    rest = value
    for i in range(length - 1, -1, -1):
        if keys[start + i] != 48 + rest % 10:
            return False
        rest //= 10
    return True


@njit(nogil=True, cache=True)
def _parse_one(values, start, length, keys, key_start, key_length, dim, layout, m, rows_bytes, out_op, out_id,
               out_version, out_time_us, max_categories, cat_values, cat_base):
    """(status, number of distinct categories written at cat_values[cat_base:])."""
    if length < 0:
        return FLAGGED, 0
    pos = start
    end = start + length
    op = np.int64(0)
    item_id = np.int64(0)
    version = np.int64(0)
    time_us = np.int64(0)
    has_id = False
    has_version = False
    embedding_at = -1
    embedding_length = 0
    categories = 0
    while pos < end:
        tag, pos = _varint32(values, pos, end)
        if pos < 0 or tag <= 0 or tag > 0xFFFFFFFF:
            return FLAGGED, 0
        field = tag >> 3
        wire_type = tag & 7
        if field == 0:
            return FLAGGED, 0
        if wire_type == VARINT:
            value, pos = _varint(values, pos, end)
            if pos < 0:
                return FLAGGED, 0
            if field == layout.op:
                op = value
            elif field == layout.id:
                item_id = value
                has_id = True
            elif field == layout.version:
                version = value
                has_version = True
            elif field == layout.producer_time_us:
                time_us = value
            elif field == layout.categories:  # one unpacked element
                categories = _add_category(cat_values, cat_base, categories, value, max_categories)
                if categories < 0:
                    return FLAGGED, 0
            elif field == layout.embedding:
                return FLAGGED, 0  # a known field with an unexpected wire type
            # unknown fields: skipped
        elif wire_type == LENGTH_DELIMITED:
            size, pos = _varint32(values, pos, end)
            if pos < 0 or size < 0 or size > end - pos:
                return FLAGGED, 0
            if field == layout.embedding:
                embedding_at = pos
                embedding_length = size
            elif field == layout.categories:
                categories = _add_packed_categories(values, pos, pos + size, cat_values, cat_base, categories,
                                                    max_categories)
                if categories < 0:
                    return FLAGGED, 0
            elif _is_known(field, layout):
                return FLAGGED, 0
            pos += size
        elif wire_type in (FIXED64, FIXED32):
            if _is_known(field, layout):
                return FLAGGED, 0
            pos += 8 if wire_type == FIXED64 else 4
            if pos > end:
                return FLAGGED, 0
        else:  # groups (deprecated) and invalid wire types
            return FLAGGED, 0
    if op != layout.upsert and op != layout.delete:
        return FLAGGED, 0
    if not has_id or item_id < 0 or not has_version:
        return FLAGGED, 0
    if key_length >= 0 and not _key_is_decimal_of(keys, key_start, key_length, item_id):
        return FLAGGED, 0
    if op == layout.upsert:
        if embedding_length != 4 * dim:
            return FLAGGED, 0
        rows_bytes[m, :] = values[embedding_at : embedding_at + 4 * dim]
    else:
        if embedding_length != 0:
            return FLAGGED, 0
        categories = 0  # a DELETE's categories are ignored
    out_op[m] = op
    out_id[m] = item_id
    out_version[m] = version
    out_time_us[m] = time_us
    return ACCEPTED, categories


@njit(nogil=True, cache=True)
def parse_changes(values, value_starts, value_lengths, keys, key_starts, key_lengths, dim, layout, rows_bytes,
                  out_op, out_id, out_version, out_time_us, status, max_categories, cat_values, cat_starts,
                  cat_counts):
    """Parse message m = 0..n-1 into out_*[m] and, for an UPSERT, rows_bytes[m] (its
    embedding's bytes; a float32 row when viewed as such) and its distinct categories
    (ascending int64 ids, ``cat_values[cat_starts[m]:][:cat_counts[m]]``; a DELETE has
    none); status[m] = ACCEPTED or FLAGGED (out_*[m], rows_bytes[m], cat_starts[m] and
    cat_counts[m] are then left as they were). ``layout`` is a WireLayout: where the
    message keeps each field. ``cat_values`` needs min(``values.shape[0]``, n *
    ``max_categories``) entries (see the module's docstring; a message that would need
    more is flagged). Returns the number of ``cat_values`` entries used: the accepted
    messages' rows lie one after another from 0."""
    used = 0
    for m in range(value_starts.shape[0]):
        ok, count = _parse_one(
            values, value_starts[m], value_lengths[m], keys, key_starts[m], key_lengths[m], dim, layout, m,
            rows_bytes, out_op, out_id, out_version, out_time_us, max_categories, cat_values, used,
        )
        status[m] = ok
        if ok == ACCEPTED:
            cat_starts[m] = used
            cat_counts[m] = count
            used += count
    return used


@njit(nogil=True, cache=True)
def _parse_edge(values, start, length, keys, key_start, key_length, layout):
    """(status, child, parent, producer time) of one CategoryEdge."""
    if length < 0:
        return FLAGGED, 0, 0, 0
    pos = start
    end = start + length
    child = np.int64(0)
    parent = np.int64(0)
    time_us = np.int64(0)
    has_child = False
    has_parent = False
    while pos < end:
        tag, pos = _varint32(values, pos, end)
        if pos < 0 or tag <= 0 or tag > 0xFFFFFFFF:
            return FLAGGED, 0, 0, 0
        field = tag >> 3
        wire_type = tag & 7
        known = field == layout.child or field == layout.parent or field == layout.producer_time_us
        if field == 0:
            return FLAGGED, 0, 0, 0
        if wire_type == VARINT:
            value, pos = _varint(values, pos, end)
            if pos < 0:
                return FLAGGED, 0, 0, 0
            if field == layout.child:
                child = value
                has_child = True
            elif field == layout.parent:
                parent = value
                has_parent = True
            elif field == layout.producer_time_us:
                time_us = value
        elif known:  # a known field with an unexpected wire type
            return FLAGGED, 0, 0, 0
        elif wire_type == LENGTH_DELIMITED:
            size, pos = _varint32(values, pos, end)
            if pos < 0 or size < 0 or size > end - pos:
                return FLAGGED, 0, 0, 0
            pos += size
        elif wire_type in (FIXED64, FIXED32):
            pos += 8 if wire_type == FIXED64 else 4
            if pos > end:
                return FLAGGED, 0, 0, 0
        else:
            return FLAGGED, 0, 0, 0
    if not has_child or child < 0 or not has_parent or parent < -1:
        return FLAGGED, 0, 0, 0
    if key_length >= 0 and not _key_is_decimal_of(keys, key_start, key_length, child):
        return FLAGGED, 0, 0, 0
    return ACCEPTED, child, parent, time_us


@njit(nogil=True, cache=True)
def parse_edges(values, value_starts, value_lengths, keys, key_starts, key_lengths, layout, out_child, out_parent,
                out_time_us, status):
    """Parse CategoryEdge message m = 0..n-1 into out_*[m]; status[m] = ACCEPTED (child
    >= 0, parent >= -1, both present, key = child in decimal when there is a key) or
    FLAGGED (out_*[m] left as they were). ``layout`` is an EdgeLayout."""
    for m in range(value_starts.shape[0]):
        ok, child, parent, time_us = _parse_edge(values, value_starts[m], value_lengths[m], keys, key_starts[m],
                                                 key_lengths[m], layout)
        status[m] = ok
        if ok == ACCEPTED:
            out_child[m] = child
            out_parent[m] = parent
            out_time_us[m] = time_us
