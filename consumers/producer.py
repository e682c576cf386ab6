"""Producing catalog changes: ``CatalogProducer`` (one message per change, key = id; one
per taxonomy edge, key = child) and ``ensure_topic``. Used by ``rtindex produce``, the
tests and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rtindex.consumers.codec import DELETE, UPSERT, encode_body, encode_edge, stamp


def ensure_topic(bootstrap: str, topic: str, partitions: int = 4, timeout: float = 30.0,
                 taxonomy_topic: str = "") -> None:
    """Create ``topic``, ``<topic>.dlq`` and the taxonomy topic (``taxonomy_topic``,
    default ``<topic>.taxonomy``) unless they exist (explicitly: the broker does not
    auto-create topics). The taxonomy topic has one partition (every replica reads all
    of it, and one partition keeps its edges in the order they were produced) and keeps
    its messages for good: a new replica builds the taxonomy from all of them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [NewTopic(topic, num_partitions=partitions, replication_factor=1),
              NewTopic(f"{topic}.dlq", num_partitions=1, replication_factor=1),
              NewTopic(taxonomy_topic or f"{topic}.taxonomy", num_partitions=1, replication_factor=1,
                       config={"retention.ms": "-1", "retention.bytes": "-1"})]
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {name} on {bootstrap}: {exc}") from None


class CatalogProducer:
    """Sends CatalogChange messages to ``topic`` and CategoryEdge messages to
    ``taxonomy_topic`` (default ``<topic>.taxonomy``). ``rate`` (changes per second, 0 =
    as fast as possible) paces sending changes; ``flush()`` waits for every delivery.

    The producer is connected before the first send: a cold one holds its first
    messages for ~0.5 s (when the idempotent producer asks for its id before the broker
    connection is up it retries 500 ms later), which showed as produce -> searchable
    latency. A message's producer time is stamped after its pacing wait, when sent.
    ``linger.ms`` is 5: at 10k changes/s a 2 ms linger cost the broker ~10% of a core
    more (a produce request per 2 ms), for 3 ms of latency."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 0.0, connect_timeout: float = 10.0, *,
                 taxonomy_topic: str = "", **config: object) -> None:
        self.topic = topic
        self.taxonomy_topic = taxonomy_topic or f"{topic}.taxonomy"
        self.rate = rate
        self.sent = 0
        self.failed = 0
        self._connected = "stats_cb" in config  # the caller's own statistics: do not wait for ours
        self._idempotent = str(config.get("enable.idempotence", True)).lower() in ("true", "1")
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                                   "enable.idempotence": True, "statistics.interval.ms": 50,
                                   "stats_cb": self._on_stats, **config})
        deadline = time.monotonic() + connect_timeout
        with contextlib.suppress(KafkaException):  # unreachable: produce() queues and reports it
            self._producer.list_topics(topic, timeout=connect_timeout)
        while not self._connected and time.monotonic() < deadline:
            self._producer.poll(0.01)
        self._start = time.perf_counter()

    def _on_stats(self, payload: str) -> None:
        """Connected: a broker is up and, if idempotent, the producer id is assigned."""
        if self._connected:
            return
        stats = json.loads(payload)
        up = any(b.get("nodeid", -1) >= 0 and b.get("state") == "UP" for b in stats.get("brokers", {}).values())
        self._connected = up and (not self._idempotent or stats.get("eos", {}).get("idemp_state") == "Assigned")

    def _on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed += 1

    def _pace(self, slack: float = 0.001) -> None:
        """Wait for the next message's turn at ``rate``. Sleeps only once ``slack``
        seconds ahead (a sleep per message costs a wake-up each: at 5k/s a third of a
        core)."""
        if self.rate > 0:
            delay = self._start + self.sent / self.rate - time.perf_counter()
            if delay > slack:
                time.sleep(delay)

    def send(self, key: bytes, value: bytes) -> None:
        """Send a change as encoded (``encode``: its time is already in it), paced."""
        self._pace()
        self._produce(key, value)

    def send_stamped(self, key: bytes, body: bytes) -> float:
        """Send a change encoded without its time (``encode_body``), stamped when it is
        sent, after the pacing wait; returns that time (time.time())."""
        self._pace()
        now = time.time()
        self._produce(key, stamp(body, now))
        return now

    def _produce(self, key: bytes, value: bytes, topic: str = "") -> None:
        while True:
            try:
                self._producer.produce(topic or self.topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.sent += 1

    def upsert(self, ids: Iterable[int], rows: np.ndarray, versions: Iterable[int], *,
               categories: Sequence[Iterable[int] | None] | None = None) -> None:
        """categories: one list of category ids per item (None or [] for none); each
        applied upsert replaces the item's categories."""
        if categories is not None and len(categories) != len(rows):
            raise ValueError(f"upsert: {len(rows)} rows but {len(categories)} category lists; give one list per "
                             "item (None or [] for none)")
        given = categories if categories is not None else [None] * len(rows)
        for item_id, row, version, item_categories in zip(ids, rows, versions, given, strict=True):
            self.send_stamped(*encode_body(UPSERT, item_id, version, row, item_categories))

    def set_category_parents(self, children: Iterable[int], parents: Iterable[int]) -> None:
        """Send taxonomy edges: ``parents[i]`` becomes the parent of ``children[i]`` (-1:
        a root). Replicas apply them in this order, each as if alone (one that would make
        a cycle is refused, to the dead-letter topic). Not paced."""
        for child, parent in zip(children, parents, strict=True):
            self._produce(*encode_edge(child, parent), topic=self.taxonomy_topic)

    def delete(self, ids: Iterable[int], versions: Iterable[int]) -> None:
        for item_id, version in zip(ids, versions, strict=True):
            self.send_stamped(*encode_body(DELETE, item_id, version))

    def flush(self, timeout: float = 60.0) -> None:
        left = self._producer.flush(timeout)
        if left or self.failed:
            raise RuntimeError(f"{left} messages undelivered and {self.failed} failed after {timeout} s")
