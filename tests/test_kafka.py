"""Streaming ingestion against a real Apache Kafka broker (scripts/kafka.sh)."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer
from streams import DIM, Model, assert_matches, mixed_stream, produce
from waiting import wait_until

from rtindex import Index
from rtindex.api.v1.catalog_pb2 import CatalogChange
from rtindex.consumers.codec import DELETE, UPSERT, encode
from rtindex.consumers.ingest import KafkaIngestor, KafkaSettings
from rtindex.consumers.producer import CatalogProducer, ensure_topic
from rtindex.core.writer import Writer

pytestmark = pytest.mark.kafka


def _topic(bootstrap: str, partitions: int = 4) -> str:
    name = f"rtindex-test-{uuid.uuid4().hex[:10]}"
    ensure_topic(bootstrap, name, partitions)
    return name


def _ingest(bootstrap: str, topic: str, group: str, index: Index, writer: Writer) -> KafkaIngestor:
    ingestor = KafkaIngestor(index, writer, KafkaSettings(bootstrap=bootstrap, topic=topic, group=group, batch=5000))
    ingestor.start()
    return ingestor


def _consumed_at_least(ingestor: KafkaIngestor, n: int) -> bool:
    assert ingestor.failed is None, ingestor.failed
    return ingestor.stats.consumed >= n


def _wait_consumed(ingestor: KafkaIngestor, n: int, timeout: float = 120) -> None:
    def caught_up() -> bool:
        lag = ingestor.stats.lag
        return _consumed_at_least(ingestor, n) and bool(lag) and sum(lag.values()) == 0

    wait_until(caught_up, timeout, f"{n} messages consumed with no lag (consumed {ingestor.stats.consumed}, "
               f"lag {ingestor.stats.lag} when the wait began)")


def test_fifty_thousand_mixed_changes_end_in_exactly_the_reference_state(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    ops = mixed_stream(50_000, seed=1)
    model = Model.of(ops)
    produce(kafka_bootstrap, topic, ops)
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, f"g-{topic}", index, writer)
    try:
        _wait_consumed(ingestor, len(ops))
        assert ingestor.ready.wait(10)  # checked by the loop right after the batch that emptied the lag
    finally:
        ingestor.stop()
        writer.close()
    assert_matches(index, model)
    assert ingestor.stats.dead_letters == 0


def test_duplicated_and_replayed_messages_change_nothing(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    ops = mixed_stream(8_000, seed=2)
    model = Model.of(ops)
    rng = np.random.default_rng(3)
    replay = [ops[i] for i in rng.choice(len(ops), 4_000, replace=False)]  # old versions, any order
    produce(kafka_bootstrap, topic, ops + replay + ops[:1000])
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, f"g-{topic}", index, writer)
    try:
        _wait_consumed(ingestor, len(ops) + len(replay) + 1000)
    finally:
        ingestor.stop()
        writer.close()
    assert_matches(index, model)
    assert ingestor.stats.skipped_stale > 0


def _poison_messages() -> list[tuple[bytes | None, bytes | None, str]]:
    good = np.ones(DIM, "<f4")
    bad = []
    bad.append((b"1", b"\xff\xfe not protobuf", "not a CatalogChange"))
    bad.append((b"2", CatalogChange(op=7, id=2, version=1).SerializeToString(), "unknown op"))
    bad.append((b"3", CatalogChange(op=UPSERT, version=1, embedding=good.tobytes()).SerializeToString(), "missing id"))
    bad.append((b"4", CatalogChange(op=UPSERT, id=4, embedding=good.tobytes()).SerializeToString(), "missing version"))
    bad.append((b"5", CatalogChange(op=UPSERT, id=5, version=1, embedding=good[:3].tobytes()).SerializeToString(), "float32"))
    nan = good.copy()
    nan[2] = np.nan
    bad.append((b"6", CatalogChange(op=UPSERT, id=6, version=1, embedding=nan.tobytes()).SerializeToString(), "NaN"))
    bad.append((b"77", CatalogChange(op=DELETE, id=7, version=1).SerializeToString(), "does not match id"))
    bad.append((b"8", CatalogChange(op=DELETE, id=8, version=1, embedding=good.tobytes()).SerializeToString(), "carries no embedding"))
    bad.append((b"-9", CatalogChange(op=DELETE, id=-9, version=1).SerializeToString(), "negative"))
    bad.append((b"10", None, "empty message value"))
    return bad


def test_poison_messages_land_in_the_dead_letter_topic_with_their_reason(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=1)
    poison = _poison_messages()
    producer = CatalogProducer(kafka_bootstrap, topic)
    for key, value, _ in poison:
        producer.send(key, value)  # type: ignore[arg-type]
    producer.send(*encode(UPSERT, 100, 1, np.ones(DIM, np.float32)))
    producer.flush()
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, f"g-{topic}", index, writer)
    try:
        _wait_consumed(ingestor, len(poison) + 1)
    finally:
        ingestor.stop()
        writer.close()
    assert 100 in index and len(index) == 1  # the good message behind the poison was applied
    assert ingestor.stats.dead_letters == len(poison)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{topic}.dlq"])
    reasons: dict[bytes | None, str] = {}
    end = time.monotonic() + 60
    while len(reasons) < len(poison) and time.monotonic() < end:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            reasons[msg.key()] = dict(msg.headers())["rtindex-reason"].decode()
    consumer.close()
    for key, _, expected in poison:
        assert expected in reasons.get(key, "(missing)"), (key, reasons.get(key))


def test_a_restarted_consumer_resumes_from_its_committed_offsets(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    ops = mixed_stream(12_000, seed=4)
    model = Model.of(ops)
    group = f"g-{topic}"
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    producing = threading.Thread(target=produce, args=(kafka_bootstrap, topic, ops))
    producing.start()
    first = _ingest(kafka_bootstrap, topic, group, index, writer)
    wait_until(lambda: _consumed_at_least(first, 3_000), 120, "the first consumer to consume 3000 changes")
    first.stop()  # mid-stream
    consumed_first = first.stats.consumed
    second = _ingest(kafka_bootstrap, topic, group, index, writer)
    producing.join()
    try:
        _wait_consumed(second, len(ops) - consumed_first)
    finally:
        second.stop()
        writer.close()
    assert consumed_first + second.stats.consumed == len(ops)  # nothing lost, nothing read twice
    assert_matches(index, model)


def test_the_server_turns_serving_only_once_the_consumer_has_caught_up(kafka_bootstrap: str) -> None:
    from rtindex.client import IndexClient
    from rtindex.service.server import IndexServer
    from rtindex.service.settings import ServerConfig

    topic = _topic(kafka_bootstrap)
    ops = mixed_stream(30_000, seed=5)
    model = Model.of(ops)
    produce(kafka_bootstrap, topic, ops)
    server = IndexServer(ServerConfig(port=0, dim=DIM, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_ready_lag=0, log_level="warning"))
    server.start()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=10) as client:
            assert client.health() == "NOT_SERVING"  # 30k changes are still to be applied
            client.wait_until_serving(timeout=120)
            stats = client.stats()
            assert stats["kafka_lag_total"] == 0 and stats["kafka_consumed"] == len(ops)
            assert stats["kafka_apply_latency_p99_ms"] > 0 and "kafka_lag_partition_0" in stats
            assert stats["items"] == len(model.live)
    finally:
        server.stop(grace=2)
    assert_matches(server.index, model)


def test_a_missing_topic_is_reported_and_the_server_serves_once_it_exists(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    from rtindex.client import IndexClient
    from rtindex.service.server import IndexServer
    from rtindex.service.settings import ServerConfig

    topic = f"rtindex-test-missing-{uuid.uuid4().hex[:10]}"
    server = IndexServer(ServerConfig(port=0, dim=DIM, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_ready_lag=0, log_level="warning"))
    with caplog.at_level("ERROR", logger="rtindex"):
        server.start()
        try:
            with IndexClient(f"127.0.0.1:{server.port}", timeout=10) as client:
                wait_until(lambda: any("topic not available" in r.getMessage() for r in caplog.records), 30,
                           "a log line about the missing topic")
                assert client.health() == "NOT_SERVING"
                record = next(r for r in caplog.records if "topic not available" in r.getMessage())
                assert record.topic == topic and "create the topic" in record.fix  # type: ignore[attr-defined]
                ensure_topic(kafka_bootstrap, topic)
                client.wait_until_serving(timeout=60)
        finally:
            server.stop(grace=2)
