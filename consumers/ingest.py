"""The Kafka ingestion loop: consume a batch, apply it through the single writer, then
commit. A change is committed only once it is searchable, so a crash never loses a
committed change, and replaying uncommitted ones is harmless (versions).

- Invalid messages go to ``<topic>.dlq`` (same key and value, the reason in the
  ``rtindex-reason`` header) and the loop carries on; the DLQ is flushed before the
  offsets that skipped them are committed.
- An UPSERT carries the item's categories, which replace its previous ones.
- Taxonomy: every partition of ``<topic>.taxonomy`` is read too (``consumers/taxonomy``),
  its edges applied before the item changes fetched in the same round, so an item's
  categories arrive with their ancestors when both were produced before it. Its offsets
  are part of ``applied_offsets()`` (hence of snapshots); a refused edge (a cycle, too
  deep) is a dead letter like an invalid change. Readiness also waits until the edges
  that were in the topic at start are applied.
- Latency: a batch is whatever has been fetched when the loop comes round (no waiting
  for a batch to fill); while one is applied the next accumulates, so batches grow
  with the rate. Commits are asynchronous and at most every ``commit_ms``.
- Rebalance: a batch is applied before the next poll, so a revoke (which happens
  inside a poll) finds nothing pending and commits what was applied, synchronously.
- Lag per partition (high watermark minus position) and apply latency (producer time
  to searchable) are in ``stats()``; ``on_ready`` fires once, when the lag first drops
  under ``ready_lag`` after the partitions were assigned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from rtindex.consumers.codec import Decoded, decode_batch, decode_edges, reduce_batch
from rtindex.consumers.taxonomy import TaxonomyFeed, apply_in_order
from rtindex.core import validation
from rtindex.core.index import Index
from rtindex.core.writer import Overloaded, Writer

log = logging.getLogger("rtindex.kafka")


@dataclass
class KafkaSettings:
    bootstrap: str
    topic: str
    group: str = "rtindex"
    batch: int = 2_000  # most messages applied in one batch
    batch_ms: int = 20  # how long an idle poll waits for the first message (a batch is what is already fetched)
    commit_ms: int = 100  # offsets are committed at most this often (and whenever the stream goes idle)
    ready_lag: int = 1_000  # health turns SERVING once the total lag is below this
    dlq_topic: str = ""  # default "<topic>.dlq"
    taxonomy_topic: str = ""  # CategoryEdge messages, read in full by every replica; default "<topic>.taxonomy"
    partitions: list[int] = field(default_factory=list)  # a shard's partitions (server mode); empty = all
    # extra librdkafka properties (SASL/SSL...: ServerConfig.kafka_config); may hold passwords, so not in repr
    client_config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    @property
    def category_topic(self) -> str:
        return self.taxonomy_topic or f"{self.topic}.taxonomy"


@dataclass
class IngestStats:
    consumed: int = 0
    batches: int = 0
    upserts: int = 0
    deletes: int = 0
    skipped_stale: int = 0
    superseded: int = 0
    dead_letters: int = 0
    commits: int = 0
    lag: dict[int, int] = field(default_factory=dict)
    # per batch of the last 10 s: (applied at, produced -> searchable seconds of its
    # changes). An array per batch, not a tuple per change: counters() is read often
    latencies: deque = field(default_factory=deque)


class IngestObserver(Protocol):
    """Told of every batch of changes once it is searchable, on the ingestion thread (so:
    quick): how the server's metrics (``rtindex.service.metrics.KafkaMetrics``) see the
    ingestor without it importing them."""

    def changes_applied(self, latencies_s: np.ndarray) -> None:
        """latencies_s: float64[n], seconds from each change's production (the producer
        time it carries) until it was searchable."""


class KafkaIngestor:
    def __init__(self, index: Index, writer: Writer, settings: KafkaSettings,
                 on_ready: Callable[[], None] | None = None, start_offsets: dict[int, int] | None = None,
                 taxonomy_offsets: dict[int, int] | None = None) -> None:
        """start_offsets: where the index's state stands (partition -> next offset to
        apply; partitions not named start at the beginning). Given, the consumer assigns
        itself the topic's partitions (``settings.partitions``, default all) and resumes
        from the state, ignoring the group's committed offsets: what a server that starts
        empty or from a snapshot must do. None: join the group (subscribe, rebalances)
        and resume from its committed offsets (a consumer restarted over an index that
        kept its state, or several consumers sharing the partitions).

        taxonomy_offsets: likewise for the taxonomy topic (``applied_offsets()["taxonomy"]
        ["offsets"]`` of the state), in both modes: its position belongs to the index, so
        it is never taken from the group. None: from the beginning, right for an empty
        index; over an index that kept its taxonomy, replaying edges it applied can
        differ from the first time only where an edge was refused."""
        self.index = index
        self.writer = writer
        self.settings = settings
        self.on_ready = on_ready
        self.stats = IngestStats()
        self.observer: IngestObserver | None = None  # told of every batch applied (the server's metrics)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._partitions: set[int] = set()  # assigned to this consumer
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rtindex-kafka", daemon=True)
        self._from_state = start_offsets is not None
        # partition -> next offset whose change is not yet applied (every change before
        # it is searchable): what a snapshot taken now reflects
        self._applied: dict[int, int] = dict(start_offsets or {})
        self._taxonomy_offsets = taxonomy_offsets
        self._taxonomy: TaxonomyFeed | None = None  # made on the ingestion thread

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, commit, leave the group."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def failed(self) -> BaseException | None:
        return self._error

    def _consumer(self) -> Consumer:
        s = self.settings
        config = {
            "bootstrap.servers": s.bootstrap,
            "group.id": s.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "statistics.interval.ms": 500,
            "stats_cb": self._on_stats,
            # a fetch returns once 16 KiB are there or after 5 ms: at most ~200 fetches/s
            # whatever the rate (fetch.min.bytes=1 answers every produce request, a fetch
            # and a tiny batch per few messages, which costs the broker and the index far
            # more CPU than the <= 5 ms it saves); the default 500 ms wait only matters
            # when idle, and a batch is applied as soon as it is fetched (_next_batch)
            "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 16_384,
        }
        if not self._from_state:
            config["group.protocol"] = "consumer"  # KIP-848: a restarted member rejoins without waiting out a session
        config.update(s.client_config)
        consumer = Consumer(config)
        if not self._from_state:
            consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _assign_from_state(self, consumer: Consumer, partitions: list[int]) -> None:
        """A server's index owns its offsets: it takes every partition of the topic
        itself (no group membership, so a restart after a crash does not wait for the
        dead member's session to expire) and starts each where the state stands. The
        group still receives commits, for lag tools."""
        wanted = self.settings.partitions or partitions
        missing = sorted(set(wanted) - set(partitions))
        if missing:
            raise ValueError(f"topic {self.settings.topic} has no partition(s) {missing} (it has {len(partitions)})")
        assignment = [TopicPartition(self.settings.topic, p, self._applied.get(p, OFFSET_BEGINNING)) for p in wanted]
        consumer.assign(assignment)
        self._partitions = set(wanted)
        log.info("partitions assigned, resuming from the index state",
                 extra={"offsets": {tp.partition: tp.offset for tp in assignment}})
        self._assigned.set()

    def _run(self) -> None:
        s = self.settings
        consumer = self._consumer()
        dlq = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5, **{
            k: v for k, v in s.client_config.items()
            if k.startswith(("security.", "sasl.", "ssl.", "enable.ssl."))}})
        self._taxonomy = TaxonomyFeed(s.bootstrap, s.category_topic, s.group, self._taxonomy_offsets,
                                      s.client_config)
        try:
            partitions = self._wait_for_topic(consumer)
            if self._from_state and partitions:
                self._assign_from_state(consumer, partitions)
            self._catch_up_taxonomy(dlq)
            last_commit, uncommitted = time.monotonic(), False
            while not self._stop.is_set():
                messages = self._next_batch(consumer)
                # edges that came meanwhile go first: an item's categories then meet the
                # ancestors that were produced before it (else it is rebuilt when they come)
                self._apply_taxonomy(self._taxonomy.fetch(s.batch), dlq)
                if messages:
                    self._apply(messages, dlq)
                    uncommitted = True
                # applied, hence searchable: commit, at most every commit_ms (a commit per
                # small batch is a broker round trip per few messages) and when idle.
                # Asynchronously: a lost or late commit only means a harmless replay;
                # revoke and shutdown commit synchronously
                if uncommitted and (not messages or time.monotonic() - last_commit >= s.commit_ms / 1000):
                    consumer.commit(asynchronous=True)
                    self.stats.commits += 1
                    last_commit, uncommitted = time.monotonic(), False
                self._check_ready()
        except Exception as exc:  # the loop must not die silently: stats and health show it
            self._error = exc
            log.exception("kafka ingestion stopped")
        finally:
            with contextlib.suppress(KafkaException):  # nothing consumed since the last commit
                consumer.commit(asynchronous=False)
            consumer.close()
            self._taxonomy.close()
            dlq.flush(10)

    def _next_batch(self, consumer: Consumer) -> list[Any]:
        """Everything already fetched (up to ``batch`` messages), without waiting; when
        nothing is, wait up to ``batch_ms`` for the first message and take what came
        with it. Waiting for a batch to fill (``consume`` with a timeout returns only
        when it is full or the timeout ran out) would add up to that timeout to every
        change; batches grow by themselves while the previous one is being applied."""
        s = self.settings
        messages = consumer.consume(num_messages=s.batch, timeout=0)
        if messages:
            return messages
        first = consumer.poll(s.batch_ms / 1000)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=s.batch - 1, timeout=0)] if s.batch > 1 else [first]

    def _wait_for_topic(self, consumer: Consumer) -> list[int]:
        """A missing topic is the usual start-up mistake: say so clearly (once a minute)
        and wait for it, NOT_SERVING, instead of logging fetch errors."""
        topic, last_log = self.settings.topic, -np.inf
        while not self._stop.is_set():
            try:
                meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    return sorted(meta.partitions)
                reason = str(meta.error) if meta is not None and meta.error is not None else "no partitions"
            except KafkaException as exc:
                reason = f"broker unreachable: {exc}"
            if time.monotonic() - last_log >= 60:
                last_log = time.monotonic()
                log.error("kafka topic not available; health stays NOT_SERVING until it is", extra={
                    "topic": topic, "bootstrap": self.settings.bootstrap, "reason": reason,
                    "fix": "create the topic (rtindex produce creates it; or kafka-topics.sh --create) "
                           "or pass the right --topic / --kafka-bootstrap"})
            self._stop.wait(2.0)
        return []

    def _record_applied(self, ends: dict[int, int]) -> None:
        """ends: partition -> 1 + the last offset of a batch now applied."""
        applied = dict(self._applied)
        for partition, end in ends.items():
            applied[partition] = max(applied.get(partition, 0), end)
        self._applied = applied  # replaced whole: readers never see a half-updated dict

    def applied_offsets(self) -> dict[str, Any]:
        """The topic and, per partition, the next offset not yet applied; under
        "taxonomy", the same for the taxonomy topic (start a later ingestor over this
        state with ``start_offsets`` and ``taxonomy_offsets`` from here). Read it while
        writes are excluded (``Index.export_state(capture_with=...)``) and it matches the
        state: offsets are recorded only once their batch is searchable (a snapshot taken
        in between replays the batch: versions make that harmless for items; for edges,
        see ``taxonomy_offsets``)."""
        taxonomy = self._taxonomy.applied() if self._taxonomy is not None else dict(self._taxonomy_offsets or {})
        return {"topic": self.settings.topic, "offsets": dict(self._applied),
                "taxonomy": {"topic": self.settings.category_topic, "offsets": taxonomy}}

    # ------------------------------------------------------------------ taxonomy
    def _catch_up_taxonomy(self, dlq: Producer, patience_s: float = 60.0) -> None:
        """Before the first item changes: the edges already in the taxonomy topic (items
        then get their ancestors' nodes when inserted, instead of being rebuilt when the
        edges come). Gives up waiting after ``patience_s`` (the loop goes on with them)."""
        assert self._taxonomy is not None
        deadline = time.monotonic() + patience_s
        while not self._stop.is_set() and not self._taxonomy.caught_up() and time.monotonic() < deadline:
            self._apply_taxonomy(self._taxonomy.fetch(self.settings.batch, timeout=0.1), dlq)
        if not self._taxonomy.caught_up() and not self._stop.is_set():
            log.warning("kafka taxonomy not caught up at start; item changes go on meanwhile",
                        extra={"topic": self._taxonomy.topic, "lag": self._taxonomy.stats.lag})

    def _apply_taxonomy(self, messages: list[Any], dlq: Producer) -> None:
        """Decode the edges, apply them in order (``apply_in_order``), dead-letter the
        invalid and refused ones, then record the offsets."""
        if not messages:
            return
        assert self._taxonomy is not None
        fetched = [msg for msg in messages if msg.error() is None]
        for msg in messages:
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka taxonomy message error", extra={"error": str(err)})
        keys = [msg.key() for msg in fetched]
        values = [msg.value() for msg in fetched]
        edges, poison = decode_edges(keys, values)
        refused, rebuilt = apply_in_order(self.index, edges.children, edges.parents)
        rejected = poison + [(int(edges.message[i]), reason) for i, reason in refused.items()]
        for m, reason in rejected:
            msg = fetched[m]
            self._dead_letter(dlq, msg.key(), msg.value(), reason, _source(msg), partition=msg.partition(),
                              offset=msg.offset())
        if rejected:
            dlq.flush(30)  # in the DLQ before its offset is recorded
        stats = self._taxonomy.stats
        stats.edges += len(edges.children) - len(refused)
        stats.rebuilt += rebuilt
        self._taxonomy.record_applied(fetched)

    # ------------------------------------------------------------------ one batch
    def _apply(self, messages: list[Any], dlq: Producer) -> None:
        """Decode, apply through the writer, wait until searchable, record the offsets."""
        fetched = [msg for msg in messages if msg.error() is None]
        if len(fetched) < len(messages):
            for msg in messages:
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka message error", extra={"error": str(err)})
        partitions = np.array([msg.partition() for msg in fetched], np.int64)
        offsets = np.array([msg.offset() for msg in fetched], np.int64)
        keys = [msg.key() for msg in fetched]
        values = [msg.value() for msg in fetched]
        decoded, poison = decode_batch(keys, values, self.index.config.dim)
        dead_before = self.stats.dead_letters
        for i, reason in poison:
            self._dead_letter(dlq, keys[i], values[i], reason, _source(fetched[i]),
                              partition=int(partitions[i]), offset=int(offsets[i]))
        self.stats.consumed += len(messages)
        if len(decoded.ids):
            self._apply_changes(decoded, fetched, dlq)
        if self.stats.dead_letters > dead_before:
            dlq.flush(30)  # a skipped message is in the DLQ before its offset is recorded or committed
        # 1 + the last offset of each partition (offsets rise within a partition)
        self._record_applied({int(p): int(offsets[partitions == p].max()) + 1 for p in np.unique(partitions)})

    def _apply_changes(self, changes: Decoded, fetched: list[Any], dlq: Producer) -> None:
        cfg = self.index.config
        batch = reduce_batch(changes)
        self.stats.superseded += batch.superseded
        # the stream's edge: the codec checked ids, versions and sizes; these are the
        # index's row rules, per row, so one bad message does not sink the batch
        bad = validation.row_problems(batch.upsert_rows, cfg.metric, cfg.traversal_precision == "float16")
        if bad:
            keep = np.ones(len(batch.upsert_ids), bool)
            keep[list(bad)] = False
            for i, reason in bad.items():
                msg = fetched[int(batch.upsert_messages[i])]
                self._dead_letter(dlq, msg.key(), msg.value(), reason, _source(msg), id=int(batch.upsert_ids[i]))
            batch.upsert_ids, batch.upsert_rows = batch.upsert_ids[keep], batch.upsert_rows[keep]
            batch.upsert_versions = batch.upsert_versions[keep]
            batch.upsert_categories = batch.upsert_categories.take(np.flatnonzero(keep))
        pending = []
        if len(batch.upsert_ids):
            ids, versions = batch.upsert_ids, batch.upsert_versions
            rows = validation.stored_rows(batch.upsert_rows, cfg.metric)  # checked above: not twice
            # a freshness deadline once serving (the writer narrows the insert beam when
            # behind it); catching up at start-up, nobody reads yet: full quality
            since = float(batch.produced_at.min()) if self.ready.is_set() else None
            given = batch.upsert_categories if len(batch.upsert_categories.values) else None  # None: none for any
            pending.append(self._submit(lambda: self.writer.upsert(ids, rows, versions, since, categories=given)))
        if len(batch.delete_ids):
            pending.append(self._submit(lambda: self.writer.delete(batch.delete_ids, batch.delete_versions)))
        for future in pending:
            result = future.result()
            self.stats.skipped_stale += result.skipped_stale
            if hasattr(result, "inserted"):
                self.stats.upserts += result.inserted + result.refreshed
            else:
                self.stats.deletes += result.deleted
        now = time.time()
        latencies = self.stats.latencies
        latencies.append((now, now - batch.produced_at))
        while latencies[0][0] < now - 10.0:  # only the last 10 s are reported
            latencies.popleft()
        self.stats.batches += 1
        if self.observer is not None:
            self.observer.changes_applied(latencies[-1][1])

    def _submit(self, submit: Callable[[], Any]) -> Any:
        """Hand a batch to the writer; a full queue means wait (Kafka is the buffer)."""
        while True:
            try:
                return submit()
            except Overloaded:
                if self._stop.is_set():
                    raise
                time.sleep(0.01)

    def _dead_letter(self, dlq: Producer, key: bytes | None, value: bytes | None, reason: str,
                     source: dict[str, Any], **where: Any) -> None:
        """Send to ``<topic>.dlq`` with the reason (and where it came from) in headers."""
        headers = [("rtindex-reason", reason.encode())] + [(k, str(v).encode()) for k, v in source.items()]
        dlq.produce(self.settings.dead_letter_topic, key=key, value=value, headers=headers)
        self.stats.dead_letters += 1
        log.warning("dead letter", extra={"reason": reason, **where})

    # ------------------------------------------------------------------ group, lag
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})
        self._partitions |= {p.partition for p in partitions}
        self._assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})
        with contextlib.suppress(KafkaException):  # nothing new to commit
            consumer.commit(asynchronous=False)
        for p in partitions:
            self.stats.lag.pop(p.partition, None)
        self._partitions -= {p.partition for p in partitions}

    def _on_stats(self, payload: str) -> None:
        """librdkafka's statistics (every 0.5 s, on the consumer thread, no broker round
        trip): lag per partition = high watermark - next offset to consume. Asking the
        broker for watermarks instead queued behind long-polling fetches and stalled
        the loop for seconds."""
        partitions = json.loads(payload).get("topics", {}).get(self.settings.topic, {}).get("partitions", {})
        lag = {}
        for key, p in partitions.items():
            if key == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                continue  # not assigned to us
            if p["consumer_lag"] >= 0:
                lag[int(key)] = p["consumer_lag"]
            elif p["hi_offset"] >= 0 and p["lo_offset"] >= 0:  # nothing consumed yet: all of it
                lag[int(key)] = max(0, p["hi_offset"] - max(p["lo_offset"], self._applied.get(int(key), 0)))
            # else: watermarks not fetched yet, the lag is unknown (and readiness waits)
        self.stats.lag = lag

    def _check_ready(self) -> None:
        if self.ready.is_set() or not self._assigned.is_set() or not self._partitions <= set(self.stats.lag):
            return  # not every assigned partition has a known lag yet
        if self._taxonomy is not None and not self._taxonomy.caught_up():
            return
        if sum(self.stats.lag.values()) <= self.settings.ready_lag:
            self.ready.set()
            log.info("caught up", extra={"lag": sum(self.stats.lag.values())})
            if self.on_ready is not None:
                self.on_ready()

    def counters(self) -> dict[str, float]:
        s = self.stats
        horizon = time.time() - 10.0
        recent = [lat for at, lat in list(s.latencies) if at >= horizon]
        lat = np.concatenate(recent) * 1e3 if recent else np.zeros(1)
        out: dict[str, float] = {
            "kafka_consumed": s.consumed, "kafka_batches": s.batches, "kafka_upserts": s.upserts,
            "kafka_deletes": s.deletes, "kafka_skipped_stale": s.skipped_stale, "kafka_superseded": s.superseded,
            "kafka_dead_letters": s.dead_letters, "kafka_commits": s.commits,
            "kafka_lag_total": sum(s.lag.values()), "kafka_ready": float(self.ready.is_set()),
            "kafka_failed": float(self._error is not None),
            # produced -> searchable, changes applied in the last 10 s
            "kafka_apply_latency_p50_ms": float(np.percentile(lat, 50)),
            "kafka_apply_latency_p99_ms": float(np.percentile(lat, 99)),
        }
        out.update({f"kafka_lag_partition_{p}": v for p, v in sorted(s.lag.items())})
        taxonomy = self._taxonomy
        if taxonomy is not None:
            out.update(kafka_taxonomy_edges=taxonomy.stats.edges, kafka_taxonomy_items_rebuilt=taxonomy.stats.rebuilt,
                       kafka_taxonomy_lag_total=sum(taxonomy.stats.lag.values()),
                       kafka_taxonomy_assigned=float(taxonomy.assigned))
        return out


def _source(msg: Any) -> dict[str, Any]:
    """Where a dead letter came from (its DLQ headers)."""
    return {"rtindex-source-topic": msg.topic(), "rtindex-source-partition": msg.partition(),
            "rtindex-source-offset": msg.offset()}
