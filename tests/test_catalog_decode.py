"""The consumer's batch decoder (compiled wire parser + protobuf fallback) against the
protobuf library, message by message: same changes, same poison verdicts and reasons."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rtindex.api.v1.catalog_pb2 import CatalogChange
from rtindex.consumers import codec
from rtindex.consumers.codec import DELETE, UPSERT, Poison, decode, decode_batch, encode, reduce_batch
from rtindex.kernels.catalog_wire import ACCEPTED, FIELD_TYPES, FLAGGED, parse_changes

DIM = 8


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _row(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(DIM).astype(np.float32)


def _valid_messages(rng: np.random.Generator) -> list[tuple[bytes | None, bytes]]:
    """Valid changes in the shapes a producer may send them."""
    row, other = _row(rng), _row(rng)
    emb = row.astype("<f4").tobytes()
    reordered = (_bytes_field(4, emb) + _field(3, 0, _varint(9)) + _field(2, 0, _varint(77))
                 + _field(1, 0, _varint(UPSERT)))
    unknown_fields = (_field(7, 0, _varint(123456789)) + _field(8, 1, b"\x01" * 8) + _bytes_field(9, b"hello")
                      + _field(10, 5, b"\x02" * 4) + _field(536_870_911, 0, _varint(1)))
    return [
        encode(UPSERT, 1, 1, row),
        encode(DELETE, 2, 5),
        encode(UPSERT, 0, 0, row),  # id 0 and version 0 are present (proto3 optional)
        encode(UPSERT, 2**62, 2**40, row, categories=(3, 2**40)),  # packed categories
        (None, encode(UPSERT, 3, 1, row)[1]),  # no key
        (b"44", codec.stamp(codec.stamp(encode(UPSERT, 44, 2, row)[1], 1.0), 2.5)),  # last time wins
        (b"77", reordered),
        (b"5", encode(UPSERT, 5, 1, other)[1] + _bytes_field(4, emb)),  # last embedding wins
        (b"6", encode(UPSERT, 6, 1, row)[1] + _field(5, 0, _varint(12)) + _field(5, 0, _varint(13))),  # unpacked
        (b"7", encode(DELETE, 7, 3)[1] + unknown_fields),
        (b"8", encode(UPSERT, 8, 1, row)[1] + _bytes_field(4, emb) + unknown_fields),
        (b"9", encode(DELETE, 9, 1)[1] + _bytes_field(4, b"")),  # an empty embedding field
    ]


def _reference(key: bytes | None, value: bytes | None) -> tuple[str, object]:
    try:
        change = decode(key, value, DIM)
    except Poison as exc:
        return "poison", str(exc)
    row = np.frombuffer(change.embedding, "<f4") if change.op == UPSERT else None
    return "ok", (change.op, change.id, change.version, change.producer_time_us / 1e6, row)


def _assert_same_as_protobuf(messages: list[tuple[bytes | None, bytes | None]]) -> None:
    keys = [k for k, _ in messages]
    values = [v for _, v in messages]
    decoded, poison = decode_batch(keys, values, DIM)
    reasons = dict(poison)
    assert len(decoded.ids) + len(poison) == len(messages)
    at = {int(m): i for i, m in enumerate(decoded.message)}
    for m, (key, value) in enumerate(messages):
        verdict, expected = _reference(key, value)
        if verdict == "poison":
            assert reasons.get(m) == expected, (m, key, value)
            continue
        assert m in at, (m, key, value, reasons.get(m))
        i = at[m]
        op, item_id, version, produced_at, row = expected  # type: ignore[misc]
        assert (decoded.op[i], decoded.ids[i], decoded.versions[i]) == (op, item_id, version), (m, value)
        assert decoded.produced_at[i] == produced_at
        if row is not None:
            assert decoded.rows[i].tobytes() == row.tobytes(), m


def test_valid_messages_decode_like_protobuf_without_falling_back_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _valid_messages(np.random.default_rng(1))
    _assert_same_as_protobuf(messages)

    def no_fallback(*args: object) -> None:
        raise AssertionError("a valid message went to the slow protobuf path")

    monkeypatch.setattr(codec, "decode", no_fallback)
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    assert not poison and len(decoded.ids) == len(messages)


def test_each_kind_of_invalid_message_gets_the_protobuf_verdict_and_reason() -> None:
    row = np.ones(DIM, np.float32)
    key, body = encode(UPSERT, 12, 1, row)
    messages: list[tuple[bytes | None, bytes | None]] = [
        (key, None),  # tombstone
        (key, b"\xff\xff\xff"),  # not protobuf
        (key, body[:-3]),  # truncated embedding
        (b"13", body),  # key is not the id
        (b"012", body),  # leading zero
        (key, encode(UPSERT, 12, 1, np.ones(DIM - 1, np.float32))[1]),  # wrong dim
        (key, encode(DELETE, 12, 1, row)[1]),  # DELETE with an embedding
        (key, CatalogChange(op=UPSERT, version=1, embedding=row.tobytes()).SerializeToString()),  # no id
        (key, CatalogChange(op=UPSERT, id=12, embedding=row.tobytes()).SerializeToString()),  # no version
        (key, CatalogChange(id=12, version=1).SerializeToString()),  # no op
        (key, CatalogChange(op=7, id=12, version=1).SerializeToString()),  # unknown op
        (b"-3", CatalogChange(op=DELETE, id=-3, version=1).SerializeToString()),  # negative id
        (key, body + _field(2, 2, _varint(1) + b"x")),  # a known field with the wrong wire type
        (key, body + _field(11, 3, b"")),  # a group
        (key, body + _varint(1 << 35)),  # a tag beyond 32 bits
    ]
    _assert_same_as_protobuf(messages)
    _, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    assert len(poison) >= 12  # the fixtures really are poison, not all rescued by the fallback


def test_randomly_damaged_messages_get_the_same_verdict_as_protobuf() -> None:
    rng = np.random.default_rng(7)
    valid = _valid_messages(rng)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for _ in range(3000):
        key, value = valid[rng.integers(len(valid))]
        data = bytearray(value)
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(4)
            at = int(rng.integers(len(data) + 1))
            if kind == 0 and at < len(data):
                data[at] = int(rng.integers(256))  # flip a byte
            elif kind == 1:
                data = data[:at]  # truncate
            elif kind == 2:
                data[at:at] = rng.integers(256, size=int(rng.integers(1, 4))).astype(np.uint8).tobytes()
            else:
                data[at:at] = _field(int(rng.integers(1, 12)), int(rng.integers(6)), b"\x01\x01")
        messages.append((key, bytes(data)))
    _assert_same_as_protobuf(messages)


def test_reduce_keeps_the_highest_version_of_each_id_in_stream_order() -> None:
    rng = np.random.default_rng(3)
    rows = [_row(rng) for _ in range(5)]
    messages = [
        encode(UPSERT, 1, 2, rows[0]),
        encode(UPSERT, 1, 1, rows[1]),  # older, arrives later: loses
        encode(UPSERT, 2, 1, rows[2]),
        encode(DELETE, 2, 2),
        encode(UPSERT, 3, 4, rows[3]),
        encode(UPSERT, 3, 4, rows[4]),  # same version: the later one
    ]
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    batch = reduce_batch(decoded)
    assert not poison and batch.superseded == 3
    assert batch.upsert_ids.tolist() == [1, 3] and batch.upsert_versions.tolist() == [2, 4]
    assert np.array_equal(batch.upsert_rows, np.stack([rows[0], rows[4]]))
    assert batch.upsert_messages.tolist() == [0, 5]
    assert batch.delete_ids.tolist() == [2] and batch.delete_versions.tolist() == [2]


# ------------------------------------------------------------------ field numbers follow the .proto
def _catalog_variant(numbers: dict[str, int], ops: dict[str, int] | None = None,
                     types: dict[str, int] | None = None) -> type:
    """A message class like CatalogChange, with other field numbers, op values or field
    types: what a changed catalog.proto would generate."""
    proto = descriptor_pb2.FileDescriptorProto()
    CatalogChange.DESCRIPTOR.file.CopyToProto(proto)
    proto.name, proto.package = "variant_catalog.proto", "variant"
    message = proto.message_type[0]
    for field in message.field:
        field.number = numbers.get(field.name, field.number)
        field.type = (types or {}).get(field.name, field.type)
        if field.type_name:
            field.type_name = field.type_name.replace(".rtindex.v1.", ".variant.")
    for value in message.enum_type[0].value:
        value.number = (ops or {}).get(value.name, value.number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("variant.CatalogChange"))


def test_the_decoder_reads_the_field_numbers_of_the_generated_code() -> None:
    generated = CatalogChange.DESCRIPTOR
    assert codec.WIRE_LAYOUT == (*(generated.fields_by_name[name].number for name in FIELD_TYPES),  # noqa: SIM300
                                 CatalogChange.UPSERT, CatalogChange.DELETE)
    variant = _catalog_variant({"op": 9, "id": 4, "version": 1, "embedding": 17, "categories": 2,
                                "producer_time_us": 300}, ops={"UPSERT": 2, "DELETE": 1})
    layout = codec.wire_layout(variant.DESCRIPTOR)
    assert (layout.op, layout.id, layout.embedding, layout.upsert) == (9, 4, 17, 2)
    row = np.arange(DIM, dtype="<f4")
    values = [
        variant(op=2, id=5, version=7, embedding=row.tobytes(), categories=[3, 4], producer_time_us=11).SerializeToString(),
        variant(op=1, id=6, version=8).SerializeToString(),
        variant(op=2, id=7, version=9, embedding=row[:-1].tobytes()).SerializeToString(),  # wrong dim: flagged
    ]
    keys = [b"5", b"6", b"7"]
    n = len(values)
    value_bytes, value_starts, value_lengths = codec._concatenated(values)  # type: ignore[arg-type]
    key_bytes, key_starts, key_lengths = codec._concatenated(keys)  # type: ignore[arg-type]
    rows = np.zeros((n, DIM), "<f4")
    op, ids, versions, time_us = (np.zeros(n, np.int64) for _ in range(4))
    status = np.empty(n, np.uint8)
    parse_changes(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, DIM, layout,
                  rows.view(np.uint8), op, ids, versions, time_us, status)
    assert status.tolist() == [ACCEPTED, ACCEPTED, FLAGGED]
    assert op[:2].tolist() == [2, 1] and ids[:2].tolist() == [5, 6] and versions[:2].tolist() == [7, 8]
    assert time_us[0] == 11 and rows[0].tobytes() == row.tobytes()


@pytest.mark.parametrize(("field", "new_type", "declared"), [
    ("id", descriptor_pb2.FieldDescriptorProto.TYPE_SINT64, "sint64"),  # zigzag: the parser would misread it
    ("version", descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64, "fixed64"),  # another wire type
    ("embedding", descriptor_pb2.FieldDescriptorProto.TYPE_STRING, "string"),
])
def test_a_field_type_the_decoder_cannot_read_is_refused_when_loaded(field: str, new_type: int, declared: str) -> None:
    variant = _catalog_variant({}, types={field: new_type})
    with pytest.raises(ValueError, match=rf"CatalogChange\.{field} is {declared} in the \.proto, .* update the decoder"):
        codec.wire_layout(variant.DESCRIPTOR)
