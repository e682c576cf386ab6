"""The consumer's batch decoders (compiled wire parsers + protobuf fallback) against the
protobuf library, message by message: same changes (categories included) and taxonomy
edges, same poison verdicts and reasons."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rtindex.api.v1.catalog_pb2 import CatalogChange, CategoryEdge
from rtindex.consumers import codec
from rtindex.consumers.codec import (
    DELETE,
    UPSERT,
    Poison,
    decode,
    decode_batch,
    decode_edge,
    decode_edges,
    encode,
    encode_edge,
    reduce_batch,
)
from rtindex.core.categories import MAX_ITEM_CATEGORIES
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


def _packed(number: int, values: list[int]) -> bytes:
    return _bytes_field(number, b"".join(_varint(v) for v in values))


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
        # categories: repeats dropped, packed and unpacked runs merge (protobuf appends them)
        encode(UPSERT, 10, 1, row, categories=[5, 3, 5, 0, 3, 2**62]),
        (b"11", encode(UPSERT, 11, 1, row, categories=[7, 1])[1] + _field(5, 0, _varint(4)) + _packed(5, [1, 9])),
        (b"12", encode(UPSERT, 12, 1, row)[1] + _packed(5, [])),  # an empty packed run
        encode(UPSERT, 13, 1, row, categories=list(range(MAX_ITEM_CATEGORIES)) * 3),  # the limit, with repeats
        encode(UPSERT, 14, 1, row, categories=list(range(MAX_ITEM_CATEGORIES, 0, -1))),  # descending
        (b"15", codec.stamp(encode(UPSERT, 15, 1, row, categories=[8])[1], 3.0)),  # stamped after categories
    ]


def _reference(key: bytes | None, value: bytes | None) -> tuple[str, object]:
    try:
        change = decode(key, value, DIM)
    except Poison as exc:
        return "poison", str(exc)
    row = np.frombuffer(change.embedding, "<f4") if change.op == UPSERT else None
    categories = sorted(set(change.categories)) if change.op == UPSERT else []
    return "ok", (change.op, change.id, change.version, change.producer_time_us / 1e6, row, categories)


def _assert_same_as_protobuf(messages: list[tuple[bytes | None, bytes | None]]) -> None:
    keys = [k for k, _ in messages]
    values = [v for _, v in messages]
    decoded, poison = decode_batch(keys, values, DIM)
    reasons = dict(poison)
    assert len(decoded.ids) + len(poison) == len(messages)
    at = {int(m): i for i, m in enumerate(decoded.message)}
    assert len(decoded.categories) == len(decoded.ids)
    categories = decoded.categories.lists()
    for m, (key, value) in enumerate(messages):
        verdict, expected = _reference(key, value)
        if verdict == "poison":
            assert reasons.get(m) == expected, (m, key, value)
            continue
        assert m in at, (m, key, value, reasons.get(m))
        i = at[m]
        op, item_id, version, produced_at, row, item_categories = expected  # type: ignore[misc]
        assert (decoded.op[i], decoded.ids[i], decoded.versions[i]) == (op, item_id, version), (m, value)
        assert decoded.produced_at[i] == produced_at
        assert categories[i] == item_categories, (m, value)
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
        (key, encode(UPSERT, 12, 1, row, categories=[4, -2])[1]),  # a negative category, packed
        (key, body + _field(5, 0, _varint(-1))),  # a negative category, unpacked
        (key, encode(UPSERT, 12, 1, row, categories=range(MAX_ITEM_CATEGORIES + 1))[1]),  # too many
        (key, body + _bytes_field(5, b"\x80")),  # a packed run that ends inside a varint
        (key, body + _field(5, 5, b"\x01\x00\x00\x00")),  # categories with a 32-bit wire type
    ]
    _assert_same_as_protobuf(messages)
    _, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    assert len(poison) >= 17  # the fixtures really are poison, not all rescued by the fallback


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


def test_reduce_keeps_the_categories_of_the_change_that_wins() -> None:
    row = np.ones(DIM, np.float32)
    messages = [
        encode(UPSERT, 1, 1, row, categories=[1, 2]),
        encode(UPSERT, 2, 1, row, categories=[7]),
        encode(UPSERT, 1, 2, row, categories=[3]),  # replaces [1, 2]
        encode(UPSERT, 3, 1, row, categories=[9, 8]),
        encode(DELETE, 3, 2),
        encode(UPSERT, 4, 1, row),  # none
    ]
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    batch = reduce_batch(decoded)
    assert not poison
    assert batch.upsert_ids.tolist() == [2, 1, 4]
    assert batch.upsert_categories.lists() == [[7], [3], []]


def test_categories_of_messages_the_fallback_accepts_stay_with_their_message() -> None:
    """A DELETE with a negative category is flagged by the parser and accepted by
    protobuf (a DELETE's categories are ignored); the rows around it keep theirs."""
    row = np.ones(DIM, np.float32)
    rescued = (b"2", encode(DELETE, 2, 1)[1] + _packed(5, [-5 & (1 << 64) - 1]))
    padded = (b"3", encode(UPSERT, 3, 1, row, categories=[6])[1] + _field(5, 1, b"\x00" * 8))
    messages = [encode(UPSERT, 1, 1, row, categories=[5, 4]), rescued, encode(UPSERT, 4, 1, row, categories=[1])]
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    assert not poison and decoded.ids.tolist() == [1, 2, 4]
    assert decoded.categories.lists() == [[4, 5], [], [1]]
    _assert_same_as_protobuf([*messages, padded])


def test_bad_categories_are_refused_with_a_reason_that_says_what_to_do() -> None:
    row = np.ones(DIM, np.float32)
    messages = [encode(UPSERT, 1, 1, row, categories=[3, -7]),
                encode(UPSERT, 2, 1, row, categories=range(100)),
                encode(UPSERT, 3, 1, row, categories=[1, 1, 1])]
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    reasons = dict(poison)
    assert decoded.ids.tolist() == [3] and decoded.categories.lists() == [[1]]
    assert "category id -7 is negative" in reasons[0]
    assert f"100 categories; the limit is {MAX_ITEM_CATEGORIES}" in reasons[1] and "ancestors are implied" in reasons[1]


def test_the_parser_writes_categories_only_for_accepted_messages_one_after_another() -> None:
    row = np.ones(DIM, np.float32)
    values = [encode(UPSERT, 1, 1, row, categories=[9, 2, 9])[1],
              encode(UPSERT, 2, 1, row, categories=[1, -1])[1],  # flagged: leaves no trace
              encode(DELETE, 3, 1, categories=[4])[1],  # a DELETE's categories are ignored
              encode(UPSERT, 4, 1, row)[1] + _field(5, 0, _varint(6)) + _packed(5, [5, 6])]
    n = len(values)
    value_bytes, value_starts, value_lengths = codec._concatenated(values)  # type: ignore[arg-type]
    key_bytes, key_starts, key_lengths = codec._concatenated([None] * n)
    rows = np.zeros((n, DIM), "<f4")
    op, ids, versions, time_us = (np.zeros(n, np.int64) for _ in range(4))
    status = np.empty(n, np.uint8)
    cat_values = np.full(len(value_bytes), -99, np.int64)
    cat_starts, cat_counts = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    used = parse_changes(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, DIM,
                         codec.WIRE_LAYOUT, rows.view(np.uint8), op, ids, versions, time_us, status,
                         MAX_ITEM_CATEGORIES, cat_values, cat_starts, cat_counts)
    assert status.tolist() == [ACCEPTED, FLAGGED, ACCEPTED, ACCEPTED]
    assert used == 4 and cat_values[:used].tolist() == [2, 9, 5, 6]
    assert cat_starts.tolist() == [0, -1, 2, 2] and cat_counts.tolist() == [2, -1, 0, 2]


# ------------------------------------------------------------------ taxonomy edges
def _reference_edge(key: bytes | None, value: bytes | None) -> tuple[str, object]:
    try:
        edge = decode_edge(key, value)
    except Poison as exc:
        return "poison", str(exc)
    return "ok", (edge.child, edge.parent, edge.producer_time_us / 1e6)


def _assert_edges_same_as_protobuf(messages: list[tuple[bytes | None, bytes | None]]) -> None:
    edges, poison = decode_edges([k for k, _ in messages], [v for _, v in messages])
    reasons = dict(poison)
    assert len(edges.children) + len(poison) == len(messages)
    at = {int(m): i for i, m in enumerate(edges.message)}
    for m, (key, value) in enumerate(messages):
        verdict, expected = _reference_edge(key, value)
        if verdict == "poison":
            assert reasons.get(m) == expected, (m, key, value)
            continue
        i = at[m]
        assert (edges.children[i], edges.parents[i], edges.produced_at[i]) == expected, (m, value)


def _valid_edges() -> list[tuple[bytes | None, bytes]]:
    return [
        encode_edge(1, 2, produced_at=5.0),
        encode_edge(0, 0 + 7),
        encode_edge(3, -1),  # make a root
        encode_edge(2**62, 2**40),
        (None, encode_edge(4, 1)[1]),  # no key
        (b"5", _field(2, 0, _varint(6)) + _field(1, 0, _varint(5))),  # reordered, no time
        (b"6", encode_edge(6, 1)[1] + _field(2, 0, _varint(2)) + _bytes_field(9, b"x") + _field(10, 1, b"\0" * 8)),
    ]


def test_valid_edges_decode_like_protobuf_without_falling_back_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _valid_edges()
    _assert_edges_same_as_protobuf(messages)

    def no_fallback(*args: object) -> None:
        raise AssertionError("a valid edge went to the slow protobuf path")

    monkeypatch.setattr(codec, "decode_edge", no_fallback)
    edges, poison = decode_edges([k for k, _ in messages], [v for _, v in messages])
    assert not poison and edges.parents.tolist() == [2, 7, -1, 2**40, 1, 6, 2]


def test_each_kind_of_invalid_edge_gets_the_protobuf_verdict_and_reason() -> None:
    messages: list[tuple[bytes | None, bytes | None]] = [
        (b"1", None),
        (b"1", b"\xff\xff"),
        (b"1", CategoryEdge(parent=2).SerializeToString()),  # no child
        (b"1", CategoryEdge(child=1).SerializeToString()),  # no parent
        (b"-1", CategoryEdge(child=-1, parent=2).SerializeToString()),
        (b"1", CategoryEdge(child=1, parent=-2).SerializeToString()),
        (b"2", CategoryEdge(child=1, parent=3).SerializeToString()),  # key is not the child
        (b"1", _field(1, 2, _varint(1) + b"x") + _field(2, 0, _varint(3))),  # wrong wire type
    ]
    _assert_edges_same_as_protobuf(messages)
    _, poison = decode_edges([k for k, _ in messages], [v for _, v in messages])
    reasons = dict(poison)
    assert len(poison) == len(messages)
    assert "missing child" in reasons[2] and "missing parent" in reasons[3] and "-1 to make" in reasons[3]
    assert "negative" in reasons[4] and "-1 makes the child a root" in reasons[5]
    assert "does not match child" in reasons[6]


def test_randomly_damaged_edges_get_the_same_verdict_as_protobuf() -> None:
    rng = np.random.default_rng(11)
    valid = _valid_edges()
    messages: list[tuple[bytes | None, bytes | None]] = []
    for _ in range(3000):
        key, value = valid[rng.integers(len(valid))]
        data = bytearray(value)
        at = int(rng.integers(len(data) + 1))
        kind = rng.integers(3)
        if kind == 0 and at < len(data):
            data[at] = int(rng.integers(256))
        elif kind == 1:
            data = data[:at]
        else:
            data[at:at] = _field(int(rng.integers(1, 5)), int(rng.integers(6)), b"\x01\x01")
        messages.append((key, bytes(data)))
    _assert_edges_same_as_protobuf(messages)


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
    cat_values, cat_starts, cat_counts = np.zeros(len(value_bytes), np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    parse_changes(value_bytes, value_starts, value_lengths, key_bytes, key_starts, key_lengths, DIM, layout,
                  rows.view(np.uint8), op, ids, versions, time_us, status, MAX_ITEM_CATEGORIES, cat_values,
                  cat_starts, cat_counts)
    assert status.tolist() == [ACCEPTED, ACCEPTED, FLAGGED]
    assert op[:2].tolist() == [2, 1] and ids[:2].tolist() == [5, 6] and versions[:2].tolist() == [7, 8]
    assert time_us[0] == 11 and rows[0].tobytes() == row.tobytes()
    assert cat_values[:2].tolist() == [3, 4] and cat_counts[:2].tolist() == [2, 0]


def test_the_edge_decoder_reads_the_field_numbers_of_the_generated_code() -> None:
    numbers = tuple(CategoryEdge.DESCRIPTOR.fields_by_name[name].number for name in ("child", "parent", "producer_time_us"))
    assert numbers == codec.EDGE_LAYOUT


@pytest.mark.parametrize(("field", "new_type", "declared"), [
    ("id", descriptor_pb2.FieldDescriptorProto.TYPE_SINT64, "sint64"),  # zigzag: the parser would misread it
    ("version", descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64, "fixed64"),  # another wire type
    ("embedding", descriptor_pb2.FieldDescriptorProto.TYPE_STRING, "string"),
])
def test_a_field_type_the_decoder_cannot_read_is_refused_when_loaded(field: str, new_type: int, declared: str) -> None:
    variant = _catalog_variant({}, types={field: new_type})
    with pytest.raises(ValueError, match=rf"CatalogChange\.{field} is {declared} in the \.proto, .* update the decoder"):
        codec.wire_layout(variant.DESCRIPTOR)
