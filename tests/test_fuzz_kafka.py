"""Property-based tests of the Kafka edge: the consumer's decoders (``decode_batch`` for
CatalogChange, ``decode_edges`` for CategoryEdge) never raise, whatever bytes arrive;
each message is decoded or poison with a reason, exactly as the protobuf library and the
.proto's rules judge it; and what they and the row rules pass, the index takes (a value
the index would refuse at apply time would stop the consumer). One end-to-end test
sends fuzzed messages through a real broker: each lands in ``<topic>.dlq`` or is applied,
and the consumer carries on. Examples: tests/fuzzing.py (a fixed seed, a bounded count).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import example, given
from hypothesis import strategies as st

from rtindex import Index
from rtindex.api.v1.catalog_pb2 import CatalogChange, CategoryEdge
from rtindex.consumers import taxonomy
from rtindex.consumers.codec import (
    DELETE,
    UPSERT,
    Poison,
    decode,
    decode_batch,
    decode_edge,
    decode_edges,
    encode,
    reduce_batch,
    stamp,
)
from rtindex.core import validation
from rtindex.core.categories import MAX_ITEM_CATEGORIES, MAX_TAXONOMY_DEPTH

DIM = 8
I64 = (-(2**63), 2**63 - 1)
int64s = st.integers(*I64)


# ------------------------------------------------------------------ wire bytes
def _varint(value: int, padding: int = 0) -> bytes:
    """``value`` as a varint; ``padding`` > 0 adds that many redundant zero groups (still
    the same number to a lenient reader; protobuf refuses a tag or length over 5 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            if padding:
                return bytes(out + bytes([byte | 0x80]) + b"\x80" * (padding - 1) + b"\x00")
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


paddings = st.sampled_from([0, 0, 0, 0, 1, 5, 6])  # 5 or 6 make a 1-byte tag or length over 5 bytes


@st.composite
def wire_field(draw: st.DrawFn, numbers: tuple[int, ...]) -> bytes:
    """One field as protobuf encodes it — or not quite: a known or unknown field number,
    any wire type (groups and the invalid 6 and 7 too), a payload of the right size or not."""
    number = draw(st.one_of(st.sampled_from(numbers), st.sampled_from(numbers), st.integers(0, 2**29 - 1)))
    wire = draw(st.one_of(st.sampled_from([0, 0, 2, 2]), st.integers(0, 7)))
    if wire == 0:
        payload = _varint(draw(st.one_of(st.integers(-1, 20), int64s, st.integers(0, 2**64 - 1))), draw(paddings))
    elif wire == 1:
        payload = draw(st.binary(min_size=8, max_size=8))
    elif wire == 5:
        payload = draw(st.binary(min_size=4, max_size=4))
    elif wire == 2:
        body = draw(st.one_of(
            st.binary(max_size=4 * DIM + 4),
            st.builds(lambda v: np.array(v, "<f4").tobytes(), st.lists(st.floats(width=32), min_size=DIM,
                                                                         max_size=DIM)),
            st.builds(lambda v: b"".join(map(_varint, v)), st.lists(st.integers(-2, 70), max_size=8)),  # packed
        ))
        size = draw(st.one_of(st.just(len(body)), st.just(len(body)), st.integers(0, 2**35)))  # or a lie
        payload = _varint(size, draw(paddings)) + body
    else:
        payload = draw(st.binary(max_size=3))
    return _varint(number << 3 | wire, draw(paddings)) + payload


def message_bytes(numbers: tuple[int, ...]) -> st.SearchStrategy[bytes | None]:
    """Any bytes, None (a tombstone), or a run of fields (``wire_field``) maybe cut short."""
    fields = st.lists(wire_field(numbers), max_size=7).map(b"".join)
    cut = st.builds(lambda data, at: data[:at], fields, st.integers(0, 64))
    return st.one_of(fields, fields, cut, st.binary(max_size=48), st.none())


keys = st.one_of(st.none(), st.integers(-2, 20).map(lambda i: str(i).encode()), st.binary(max_size=6))


# ------------------------------------------------------------------ the protobuf path as the reference
def _verdict(key: bytes | None, value: bytes | None) -> tuple[str, Any]:
    """How the protobuf library and the .proto's rules (``codec.decode``) judge one message."""
    try:
        change = decode(key, value, DIM)
    except Poison as exc:
        return "poison", str(exc)
    upsert = change.op == UPSERT
    return "ok", (change.op, change.id, change.version, change.producer_time_us / 1e6,
                  change.embedding if upsert else None, sorted(set(change.categories)) if upsert else [])


def _decoded_like_protobuf(messages: list[tuple[bytes | None, bytes | None]]) -> None:
    """decode_batch returns each message once, decoded or poison with a non-empty reason,
    and agrees with the protobuf path on every one."""
    decoded, poison = decode_batch([k for k, _ in messages], [v for _, v in messages], DIM)
    reasons = dict(poison)
    assert len(reasons) == len(poison) and not set(reasons) & set(decoded.message.tolist())  # never both
    assert len(decoded.message) + len(poison) == len(messages)
    assert decoded.rows.shape == (len(decoded.ids), DIM) and decoded.rows.dtype == np.float32
    assert len(decoded.categories) == len(decoded.ids)
    at = {int(m): i for i, m in enumerate(decoded.message)}
    categories = decoded.categories.lists()
    for m, (key, value) in enumerate(messages):
        verdict, expected = _verdict(key, value)
        if verdict == "poison":
            assert reasons.get(m) == expected and expected.strip(), (m, key, value, reasons.get(m))
            continue
        assert m in at, (m, key, value, reasons.get(m))
        i = at[m]
        op, item_id, version, produced_at, embedding, item_categories = expected
        assert (decoded.op[i], decoded.ids[i], decoded.versions[i], decoded.produced_at[i]) == (
            op, item_id, version, produced_at), (m, key, value)
        assert categories[i] == item_categories, (m, value)
        if embedding is not None:
            assert decoded.rows[i].tobytes() == embedding, (m, value)


def _edge_verdict(key: bytes | None, value: bytes | None) -> tuple[str, Any]:
    try:
        edge = decode_edge(key, value)
    except Poison as exc:
        return "poison", str(exc)
    return "ok", (edge.child, edge.parent, edge.producer_time_us / 1e6)


# ------------------------------------------------------------------ valid-looking messages
def faults(*fields: str) -> st.SearchStrategy[frozenset[str]]:
    """Which fields of a message to break: none about half the time, else one or two."""
    return st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(fields), min_size=1, max_size=2))


SPECIAL = [math.nan, math.inf, -math.inf, 3.4e38, 65520.0, 0.0]  # all but 0.0 break a row rule (l2, float16)
good_ids = st.one_of(st.integers(0, 50), st.sampled_from([I64[1], 2**53 + 1]))
good_categories = st.lists(st.one_of(st.integers(0, 20), st.just(I64[1])), max_size=6)


@st.composite
def changes(draw: st.DrawFn) -> tuple[bytes | None, bytes, str | None]:
    """(key, value, what the .proto says is wrong or None) of a CatalogChange made with the
    generated class: valid, or with one or two fields wrong."""
    broken = draw(faults("op", "id", "version", "key", "embedding", "categories"))
    op = draw(st.sampled_from([UPSERT, DELETE]))
    change = CatalogChange(op=op, producer_time_us=draw(int64s))
    item_id = draw(good_ids)
    problem = None
    if "op" in broken:
        change.op = draw(st.sampled_from([0, 3, 7, -1, 2**31 - 1]))  # proto3 enums are open: kept as numbers
        problem = "unknown op"
    if "id" in broken:
        item_id = draw(st.one_of(st.none(), st.integers(I64[0], -1)))
        problem = problem or ("missing id" if item_id is None else "negative")
    if item_id is not None:
        change.id = item_id
    if "version" in broken:
        problem = problem or "missing version"
    else:
        change.version = draw(int64s)
    key: bytes | None = str(item_id).encode() if item_id is not None else draw(keys)
    if draw(st.integers(0, 4)) == 0:
        key = None  # a record without a key: nothing to match
    if "key" in broken:
        other = draw(st.one_of(st.binary(max_size=6), st.integers(0, 60).map(lambda i: str(i).encode()),
                               st.just(b"0" + str(item_id).encode()), st.just(b" " + str(item_id).encode())))
        if item_id is not None and other != str(item_id).encode():
            key = other
            problem = problem or "does not match id"
    rows = draw(st.lists(st.floats(-100, 100, width=32), min_size=DIM, max_size=DIM))
    if draw(st.integers(0, 3)) == 0:  # fine for the codec; the row rules refuse it (the consumer dead-letters it)
        rows[draw(st.integers(0, DIM - 1))] = draw(st.sampled_from(SPECIAL))
    embedding = np.array(rows, "<f4").tobytes()
    if "embedding" in broken:
        if change.op == DELETE:
            change.embedding = embedding[: draw(st.integers(1, 4 * DIM))]
            problem = problem or "carries no embedding"
        else:
            change.embedding = draw(st.sampled_from([b"", embedding[:4], embedding[:-1], embedding + b"\0" * 4]))
            problem = problem or "the index needs"
    elif change.op == UPSERT:
        change.embedding = embedding
    categories = draw(good_categories)
    if "categories" in broken:
        categories = draw(st.one_of(
            st.builds(lambda c, bad: [*c, bad], good_categories, st.integers(I64[0], -1)),
            st.builds(lambda n: list(range(n)), st.integers(MAX_ITEM_CATEGORIES + 1, MAX_ITEM_CATEGORIES + 3))))
        if change.op == UPSERT:  # a DELETE's categories are ignored
            problem = problem or ("negative" if min(categories) < 0 else "the limit is")
    change.categories.extend(categories)
    value = change.SerializeToString()
    if draw(st.integers(0, 4)) == 0:
        value = stamp(value, draw(st.floats(0, 2e9)))  # the producer's way: the time appended
    return key, value, problem


@fuzz(200)
@given(messages=st.lists(changes(), min_size=1, max_size=12))
def test_valid_looking_wrong_messages_are_poison_for_the_reason_the_proto_gives(
        messages: list[tuple[bytes | None, bytes, str | None]]) -> None:
    """The .proto's rules, written out here on their own, agree with the decoder; the
    reason says what was wrong."""
    pairs = [(k, v) for k, v, _ in messages]
    _decoded_like_protobuf(pairs)
    _, poison = decode_batch([k for k, _ in pairs], [v for _, v in pairs], DIM)
    reasons = dict(poison)
    for m, (key, value, problem) in enumerate(messages):
        if problem is None:
            assert m not in reasons, (key, value, reasons[m])
        else:
            assert m in reasons, (key, value, problem)
            assert problem in reasons[m], (problem, reasons[m])


@pytest.fixture(scope="module")
def index() -> Index:
    return Index(dim=DIM, metric="l2", traversal_precision="float16")


@fuzz(150)
@given(messages=st.lists(changes(), min_size=1, max_size=16))
def test_what_the_decoder_and_the_row_rules_pass_the_index_applies(
        index: Index, messages: list[tuple[bytes | None, bytes, str | None]]) -> None:
    """The consumer's steps after decoding (as consumers/ingest.py takes them): the latest
    change per id, the row rules per row, then the index — which must not refuse what
    got this far (a ValueError there would stop the consumer, not dead-letter a message)."""
    decoded, _ = decode_batch([k for k, _, _ in messages], [v for _, v, _ in messages], DIM)
    batch = reduce_batch(decoded)
    cfg = index.config
    bad = validation.row_problems(batch.upsert_rows, cfg.metric, cfg.traversal_precision == "float16")
    finite = np.isfinite(batch.upsert_rows).all(axis=1) & (np.abs(batch.upsert_rows) <= 65504).all(axis=1)
    assert sorted(bad) == np.flatnonzero(~finite).tolist()
    assert all(reason.strip() for reason in bad.values())
    keep = np.flatnonzero(finite)
    if len(keep):
        categories = batch.upsert_categories.take(keep)
        index.upsert_prepared(batch.upsert_ids[keep], validation.stored_rows(batch.upsert_rows[keep], cfg.metric),
                              batch.upsert_versions[keep],
                              categories=categories if len(categories.values) else None)
    if len(batch.delete_ids):
        index.delete_prepared(batch.delete_ids, batch.delete_versions)


@st.composite
def edges(draw: st.DrawFn) -> tuple[bytes | None, bytes, str | None]:
    """(key, value, what is wrong or None) of a CategoryEdge made with the generated class."""
    broken = draw(faults("child", "parent", "key"))
    child = draw(st.one_of(st.integers(0, 12), st.just(I64[1])))
    parent = draw(st.one_of(st.integers(-1, 12), st.just(I64[1])))
    edge = CategoryEdge(producer_time_us=draw(int64s))
    problem = None
    if "child" in broken:
        child = draw(st.one_of(st.none(), st.integers(I64[0], -1)))
        problem = "missing child" if child is None else "negative"
    if child is not None:
        edge.child = child
    if "parent" in broken:
        parent = draw(st.one_of(st.none(), st.integers(I64[0], -2)))
        problem = problem or ("missing parent" if parent is None else "negative")
    if parent is not None:
        edge.parent = parent
    key = str(child).encode() if child is not None else None
    if "key" in broken and child is not None:
        key = draw(st.one_of(st.just(b"0" + key), st.integers(13, 20).map(lambda i: str(i).encode()),  # type: ignore[operator]
                             st.binary(min_size=1, max_size=4).filter(lambda b: b != str(child).encode())))
        problem = problem or "does not match child"
    return key, edge.SerializeToString(), problem


@fuzz(200)
@given(messages=st.lists(edges(), min_size=1, max_size=10))
def test_valid_looking_wrong_edges_are_poison_or_refused_by_the_taxonomy_never_raised(
        index: Index, messages: list[tuple[bytes | None, bytes, str | None]]) -> None:
    """Decoded edges go to the taxonomy in order; a cycle (likely among 13 categories) or
    too deep a chain is refused with a reason (a dead letter), never raised."""
    decoded, poison = decode_edges([k for k, _, _ in messages], [v for _, v, _ in messages])
    reasons = dict(poison)
    for m, (key, value, problem) in enumerate(messages):
        assert (m in reasons) == (problem is not None), (key, value, problem, reasons.get(m))
        if problem is not None:
            assert problem in reasons[m], (problem, reasons[m])
    refused, _ = taxonomy.apply_in_order(index, decoded.children, decoded.parents)
    assert set(refused) <= set(range(len(decoded.children)))
    assert all(reason.strip() for reason in refused.values())
    parent_of = dict(zip(*(a.tolist() for a in index.category_parents()), strict=True))
    for child in parent_of:  # still a forest (no cycle), at most MAX_TAXONOMY_DEPTH levels deep
        node, levels = child, 1
        while node in parent_of:
            node, levels = parent_of[node], levels + 1
            assert levels <= MAX_TAXONOMY_DEPTH, (child, parent_of)


# ------------------------------------------------------------------ any bytes
CHANGE_FIELDS = tuple(f.number for f in CatalogChange.DESCRIPTOR.fields)
EDGE_FIELDS = tuple(f.number for f in CategoryEdge.DESCRIPTOR.fields)


@st.composite
def damaged(draw: st.DrawFn, source: st.SearchStrategy, numbers: tuple[int, ...]) -> tuple[bytes | None, bytes]:
    """A message of ``source`` (key, value, _) with fields appended or inserted
    anywhere, cut short or with a byte changed: mostly still valid protobuf, often still
    a valid change, or not quite."""
    key, value, _ = draw(source)
    data = bytearray(value)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["append", "append", "insert", "cut", "flip"]))
        at = draw(st.integers(0, len(data)))
        if kind == "append":
            data += draw(wire_field(numbers))
        elif kind == "insert":
            data[at:at] = draw(wire_field(numbers))
        elif kind == "cut":
            data = data[:at]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return key, bytes(data)


@fuzz(200)
@given(messages=st.lists(st.one_of(st.tuples(keys, message_bytes(CHANGE_FIELDS)), damaged(changes(), CHANGE_FIELDS)),
                         min_size=1, max_size=12))
@example(messages=[(b"5", encode(UPSERT, 5, 1, np.ones(DIM, np.float32))[1] + b"\xc8\x80\x80\x80\x80\x00\x01")])
def test_any_bytes_are_decoded_or_poisoned_with_a_reason_as_protobuf_judges_them(
        messages: list[tuple[bytes | None, bytes | None]]) -> None:
    _decoded_like_protobuf(messages)


@fuzz(200)
@given(messages=st.lists(st.one_of(st.tuples(keys, message_bytes(EDGE_FIELDS)), damaged(edges(), EDGE_FIELDS)),
                         min_size=1, max_size=12))
@example(messages=[(b"0", b"\x08\x00\x10\x01\x88\x80\x80\x80\x80\x00\x00")])  # a 6-byte tag: protobuf refuses it
def test_any_bytes_are_decoded_or_poisoned_as_taxonomy_edges_as_protobuf_judges_them(
        messages: list[tuple[bytes | None, bytes | None]]) -> None:
    edges, poison = decode_edges([k for k, _ in messages], [v for _, v in messages])
    reasons = dict(poison)
    assert len(edges.message) + len(poison) == len(messages) and not set(reasons) & set(edges.message.tolist())
    at = {int(m): i for i, m in enumerate(edges.message)}
    for m, (key, value) in enumerate(messages):
        verdict, expected = _edge_verdict(key, value)
        if verdict == "poison":
            assert reasons.get(m) == expected and expected.strip(), (m, key, value, reasons.get(m))
        else:
            i = at[m]
            assert (edges.children[i], edges.parents[i], edges.produced_at[i]) == expected, (m, key, value)


# ------------------------------------------------------------------ through a real broker
def _fuzzed_stream(n: int, seed: int) -> list[tuple[bytes | None, bytes | None]]:
    """n messages of every kind the properties above draw from: valid ones, wrong ones
    built from the generated class, damaged bytes; ids 1000 + i, so none supersedes
    another. (A plain seeded generator: hypothesis draws examples for tests, not data.)"""
    rng = np.random.default_rng(seed)
    row = rng.standard_normal(DIM).astype("<f4")
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n):
        item = 1000 + i
        key = str(item).encode()
        good = CatalogChange(op=UPSERT, id=item, version=int(rng.integers(1, 9)), embedding=row.tobytes(),
                             categories=[int(c) for c in rng.integers(0, 9, 2)])
        kind = i % 10
        if kind == 0:
            out.append((key, good.SerializeToString()))
        elif kind == 1:
            out.append((key, bytes(rng.integers(0, 256, int(rng.integers(0, 40)), np.uint8))))
        elif kind == 2:
            data = good.SerializeToString()
            out.append((key, data[: int(rng.integers(0, len(data)))]))
        elif kind == 3:
            nan = row.copy()
            nan[int(rng.integers(DIM))] = [np.nan, np.inf, 1e5][i % 3]
            out.append((key, CatalogChange(op=UPSERT, id=item, version=1, embedding=nan.tobytes()).SerializeToString()))
        elif kind == 4:
            out.append((key, CatalogChange(op=int(rng.integers(3, 100)), id=item, version=1).SerializeToString()))
        elif kind == 5:
            out.append((str(item + 1).encode(), good.SerializeToString()))
        elif kind == 6:
            good.categories.extend(range(100, 100 + MAX_ITEM_CATEGORIES))
            out.append((key, good.SerializeToString()))
        elif kind == 7:
            good.categories.append(-int(rng.integers(1, 2**62)))
            out.append((key, good.SerializeToString()))
        elif kind == 8:
            out.append((key, None))
        else:
            out.append((key, CatalogChange(op=DELETE, id=item, version=2).SerializeToString()))
    return out


@pytest.mark.kafka
def test_fuzzed_messages_through_a_broker_are_dead_lettered_or_applied_and_the_consumer_carries_on(
        kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer
    from waiting import wait_until

    from rtindex.consumers.ingest import KafkaIngestor, KafkaSettings
    from rtindex.consumers.producer import CatalogProducer, ensure_topic
    from rtindex.core.writer import Writer

    topic = f"rtindex-fuzz-{uuid.uuid4().hex[:10]}"
    ensure_topic(kafka_bootstrap, topic, 1)
    stream = _fuzzed_stream(60, seed=5)
    index = Index(dim=DIM, metric="l2", traversal_precision="float16")
    # what must happen to each: the codec's verdict, then the row rules
    decoded, poison = decode_batch([k for k, _ in stream], [v for _, v in stream], DIM)
    batch = reduce_batch(decoded)
    assert batch.superseded == 0
    bad_rows = validation.row_problems(batch.upsert_rows, "l2", True)
    dead = {m for m, _ in poison} | {int(batch.upsert_messages[i]) for i in bad_rows}
    assert 20 < len(dead) < len(stream)
    producer = CatalogProducer(kafka_bootstrap, topic)
    for key, value in stream:
        producer.send(key, value)  # type: ignore[arg-type]
    producer.send(*encode(UPSERT, 1, 1, np.ones(DIM, np.float32)))  # a valid change behind them all
    producer.flush()
    writer = Writer(index)
    ingestor = KafkaIngestor(index, writer, KafkaSettings(bootstrap=kafka_bootstrap, topic=topic, group=f"g-{topic}"))
    ingestor.start()
    try:
        def consumed() -> bool:
            assert ingestor.failed is None, ingestor.failed
            return ingestor.stats.consumed >= len(stream) + 1 and 1 in index

        wait_until(consumed, 120, "the fuzzed messages and the valid one behind them consumed")
    finally:
        ingestor.stop()
        writer.close()
    assert ingestor.failed is None and ingestor.stats.dead_letters == len(dead)
    for m, (_, value) in enumerate(stream):
        if m in dead:
            continue
        got = index.get([1000 + m])
        change = CatalogChange.FromString(value)  # type: ignore[arg-type]
        assert got.found[0] == (change.op == UPSERT), (m, change)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{topic}.dlq"])
    letters: list[tuple[bytes | None, bytes | None, str]] = []
    end = time.monotonic() + 60
    while len(letters) < len(dead) and time.monotonic() < end:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            letters.append((msg.key(), msg.value(), dict(msg.headers())["rtindex-reason"].decode()))
    consumer.close()
    assert sorted((k or b"", v or b"") for k, v, _ in letters) == sorted(
        (stream[m][0] or b"", stream[m][1] or b"") for m in dead)
    assert all(reason.strip() for _, _, reason in letters)
