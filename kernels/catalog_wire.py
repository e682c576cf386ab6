"""Decode a batch of serialized CatalogChange messages (proto/rtindex/api/v1/catalog.proto)
in one compiled pass: the consumer's hot path, instead of a protobuf object per message.

Messages arrive concatenated (``values`` with starts and lengths, -1 = no value; keys
likewise). A message is accepted only when it is well formed and valid as the consumer
requires (op UPSERT or DELETE, id >= 0 and version present, key = id in decimal, an
UPSERT's embedding of exactly ``dim`` float32, a DELETE's empty). Everything else is
flagged, not judged: the caller hands flagged messages to the protobuf library, whose
verdict (and reason) stands. So this parser only has to be exact on what it accepts.

Wire format (protobuf encoding): a message is a sequence of (tag varint = field << 3 |
wire type, payload); a scalar field seen twice keeps its last value (``codec.stamp``
appends the producer time that way); unknown fields are skipped.

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


# the type this parser's code reads each field as (and so its wire type: varint for
# enum and int64, length-delimited for bytes, a repeated one packed or not); the
# caller checks the descriptor declares these
FIELD_TYPES = {"op": "enum", "id": "int64", "version": "int64", "embedding": "bytes", "categories": "repeated int64",
               "producer_time_us": "int64"}


@njit(nogil=True, cache=True)
def _is_known(field, layout):
    return (field == layout.op or field == layout.id or field == layout.version or field == layout.embedding
            or field == layout.categories or field == layout.producer_time_us)


@njit(nogil=True, cache=True)
def _varint(buf, pos, end):
    """(value as int64 two's complement, position after it); position -1 if malformed."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
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
def _skip_packed_varints(buf, pos, end):
    """End of a packed run of varints occupying buf[pos:end]; -1 if malformed."""
    while pos < end:
        _, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1
    return end


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
               out_version, out_time_us):
    if length < 0:
        return FLAGGED
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
    while pos < end:
        tag, pos = _varint(values, pos, end)
        if pos < 0 or tag <= 0 or tag > 0xFFFFFFFF:
            return FLAGGED
        field = tag >> 3
        wire_type = tag & 7
        if field == 0:
            return FLAGGED
        if wire_type == VARINT:
            value, pos = _varint(values, pos, end)
            if pos < 0:
                return FLAGGED
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
            elif field == layout.embedding:
                return FLAGGED  # a known field with an unexpected wire type
            # categories (unpacked) and unknown fields: skipped
        elif wire_type == LENGTH_DELIMITED:
            size, pos = _varint(values, pos, end)
            if pos < 0 or size < 0 or size > end - pos:
                return FLAGGED
            if field == layout.embedding:
                embedding_at = pos
                embedding_length = size
            elif field == layout.categories:
                if _skip_packed_varints(values, pos, pos + size) < 0:
                    return FLAGGED
            elif _is_known(field, layout):
                return FLAGGED
            pos += size
        elif wire_type in (FIXED64, FIXED32):
            if _is_known(field, layout):
                return FLAGGED
            pos += 8 if wire_type == FIXED64 else 4
            if pos > end:
                return FLAGGED
        else:  # groups (deprecated) and invalid wire types
            return FLAGGED
    if op != layout.upsert and op != layout.delete:
        return FLAGGED
    if not has_id or item_id < 0 or not has_version:
        return FLAGGED
    if key_length >= 0 and not _key_is_decimal_of(keys, key_start, key_length, item_id):
        return FLAGGED
    if op == layout.upsert:
        if embedding_length != 4 * dim:
            return FLAGGED
        rows_bytes[m, :] = values[embedding_at : embedding_at + 4 * dim]
    elif embedding_length != 0:
        return FLAGGED
    out_op[m] = op
    out_id[m] = item_id
    out_version[m] = version
    out_time_us[m] = time_us
    return ACCEPTED


@njit(nogil=True, cache=True)
def parse_changes(values, value_starts, value_lengths, keys, key_starts, key_lengths, dim, layout, rows_bytes,
                  out_op, out_id, out_version, out_time_us, status):
    """Parse message m = 0..n-1 into out_*[m] and, for an UPSERT, rows_bytes[m] (its
    embedding's bytes; a float32 row when viewed as such); status[m] = ACCEPTED or
    FLAGGED (out_*[m] and rows_bytes[m] are then left as they were). ``layout`` is a
    WireLayout: where the message keeps each field."""
    for m in range(value_starts.shape[0]):
        status[m] = _parse_one(
            values, value_starts[m], value_lengths[m], keys, key_starts[m], key_lengths[m], dim, layout, m,
            rows_bytes, out_op, out_id, out_version, out_time_us,
        )
