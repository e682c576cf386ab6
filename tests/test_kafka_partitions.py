"""Who consumes which partitions, against the real broker (README: Kafka ingestion,
Snapshots/failover): two consumers of one group rebalance without losing or re-reading a
change, and a shard's server (``--kafka-partitions``) consumes only its partitions."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer
from streams import DIM, Model, assert_matches, mixed_stream, produce
from waiting import wait_until

from rtindex import Index
from rtindex.client import IndexClient
from rtindex.consumers.codec import UPSERT, encode
from rtindex.consumers.ingest import KafkaIngestor, KafkaSettings
from rtindex.consumers.producer import CatalogProducer, ensure_topic
from rtindex.core.writer import Writer
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

pytestmark = pytest.mark.kafka
PARTITIONS = 4
WAIT = 120.0  # seconds consumption may take before the test fails


def _topic(bootstrap: str) -> str:
    name = f"rtindex-test-{uuid.uuid4().hex[:10]}"
    ensure_topic(bootstrap, name, PARTITIONS)
    return name


def _produce_paced(bootstrap: str, topic: str, ops: list, rate: float) -> None:
    producer = CatalogProducer(bootstrap, topic, rate=rate)
    for op, item, version, row in ops:
        producer.send(*encode(op, item, version, row))
    producer.flush()


def test_a_second_consumer_joining_the_group_takes_over_partitions_without_loss_or_rereading(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic(kafka_bootstrap)
    ops = mixed_stream(12_000, seed=11)
    model = Model.of(ops)
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    settings = KafkaSettings(bootstrap=kafka_bootstrap, topic=topic, group=f"g-{topic}", batch=500)
    produce(kafka_bootstrap, topic, ops[:4_000])
    # the rest flows while the group rebalances (a member learns of it at its next
    # heartbeat, seconds), so the first consumer is revoked partitions mid-stream
    producing = threading.Thread(target=_produce_paced, args=(kafka_bootstrap, topic, ops[4_000:], 1_000))
    first = KafkaIngestor(index, writer, settings)  # no start offsets: group membership, rebalances
    second = KafkaIngestor(index, writer, settings)
    with caplog.at_level("INFO", logger="rtindex.kafka"):
        first.start()
        try:
            wait_until(lambda: first.stats.consumed >= 2_000, WAIT, "the first consumer to be mid-stream")
            producing.start()
            second.start()

            def both_done() -> bool:
                assert first.failed is None and second.failed is None, first.failed or second.failed
                lags = [first.stats.lag, second.stats.lag]
                return (first.stats.consumed + second.stats.consumed >= len(ops) and all(lags)
                        and set(first.stats.lag) | set(second.stats.lag) == set(range(PARTITIONS))
                        and sum(sum(lag.values()) for lag in lags) == 0)

            wait_until(both_done, WAIT, "both consumers to share the partitions and catch up")
            owners = set(first.stats.lag), set(second.stats.lag)
            revoked = [r for r in caplog.records if r.getMessage() == "partitions revoked"]
        finally:
            producing.join()
            second.stop()
            first.stop()
            writer.close()
    assert revoked and not owners[0] & owners[1]  # the first gave partitions up; each has one owner
    assert second.stats.consumed > 0  # the second took over partitions with changes still to come
    assert first.stats.consumed + second.stats.consumed == len(ops)  # nothing lost, nothing read twice
    assert_matches(index, model)


def _produce_to_partitions(bootstrap: str, topic: str, n: int) -> np.ndarray:
    """Upserts of ids 0..n-1, item i keyed by its id and sent to partition i % PARTITIONS;
    returns the rows."""
    rows = np.random.default_rng(5).standard_normal((n, DIM)).astype(np.float32)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        key, value = encode(UPSERT, i, 1, rows[i])
        producer.produce(topic, key=key, value=value, partition=i % PARTITIONS)
    assert producer.flush(60) == 0
    return rows


def test_a_shard_server_consumes_only_its_kafka_partitions(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    n = 400
    rows = _produce_to_partitions(kafka_bootstrap, topic, n)
    server = IndexServer(ServerConfig(port=0, dim=DIM, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_partitions="1,3", kafka_ready_lag=0,
                                      log_level="warning"))
    server.start()
    ids = np.arange(n)
    mine = np.isin(ids % PARTITIONS, [1, 3])
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.wait_until_serving(WAIT)  # caught up with its partitions
            stats = client.stats()
            got = client.get(ids)
    finally:
        server.stop(grace=1)
    assert stats["kafka_consumed"] == mine.sum() and stats["items"] == mine.sum()
    np.testing.assert_array_equal(got.found, mine)
    np.testing.assert_array_equal(got.vectors[mine], rows[mine])
    assert sorted(k for k in stats if k.startswith("kafka_lag_partition_")) == [
        "kafka_lag_partition_1", "kafka_lag_partition_3"]
