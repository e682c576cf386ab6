"""The taxonomy topic (``<topic>.taxonomy``): CategoryEdge messages, read in full by every
replica and applied to the index in stream order.

Items are partitioned by id, so a shard sees only its items; an edge keyed by category
would reach one shard only, while every shard needs the whole taxonomy. Hence a topic of
its own that each replica takes all of with ``assign`` (no group: a replica's position in
it belongs to its index, like the item topic's offsets in a snapshot).

``apply_in_order`` gives the edges of a poll the meaning of applying them one at a time:
an edge is refused when, after the edges before it, it would make a cycle or a taxonomy
too deep. That meaning does not depend on where polls cut the stream, so every replica
ends with the same taxonomy and refuses the same edges. It still costs one index call for
most polls (see there).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from rtindex.core.index import Index

log = logging.getLogger("rtindex.kafka")

TOPIC_CHECK_S = 10.0  # how often a missing taxonomy topic is looked for again


def resume_offsets(captured: dict[str, Any] | None, topic: str) -> dict[int, int] | None:
    """Where to resume the taxonomy topic over a restored state: partition -> next offset,
    from what ``KafkaIngestor.applied_offsets()`` captured with it (``captured``: that
    dict, as a snapshot stores it). None (replay from the beginning) when nothing was
    captured or it was for another topic."""
    taxonomy = (captured or {}).get("taxonomy") or {}
    if taxonomy.get("topic") != topic:
        if taxonomy:
            log.warning("snapshot taxonomy offsets are for another topic; replaying it from the beginning",
                        extra={"snapshot_topic": taxonomy.get("topic"), "topic": topic})
        return None
    return {int(p): int(o) for p, o in taxonomy.get("offsets", {}).items()}


def apply_in_order(index: Index, children: np.ndarray, parents: np.ndarray) -> tuple[dict[int, str], int]:
    """Apply taxonomy edges i = 0..n-1 (``parents[i]`` becomes the parent of
    ``children[i]``, -1: a root) as if one at a time, in order. Returns (refused: edge
    position -> the index's reason, items whose memberships were rebuilt).

    Edges go to ``Index.set_category_parents`` in runs that one call applies exactly as
    one at a time would: no child twice, and every edge either a no-op or giving a parent
    to a category that is a root. Every intermediate state of such a run then has each
    category's parent either as at the end or none, so its chains are pieces of the final
    chains: when the final state is a valid forest, so is each intermediate one, and the
    call succeeds exactly when every edge would have. An edge that moves a category that
    has a parent goes alone. A run the index refuses is retried edge by edge, so only the
    refused edges are dropped (rare: bad input)."""
    refused: dict[int, str] = {}
    rebuilt = 0
    n = len(children)
    if n == 0:
        return refused, rebuilt
    known_children, known_parents = _sorted(*index.category_parents())
    previous = _previous_occurrence(children)
    start = 0
    while start < n:
        now = _parents_of(known_children, known_parents, children[start:])
        moves = (now >= 0) & (now != parents[start:])
        if moves[0]:
            end = start + 1
        else:
            breaks = np.flatnonzero((previous[start + 1:] >= start) | moves[1:])
            end = start + 1 + int(breaks[0]) if len(breaks) else n
        try:
            rebuilt += index.set_category_parents(children[start:end], parents[start:end])
            applied = np.arange(start, end)
        except ValueError as exc:
            if end - start == 1:
                refused[start] = str(exc)
                applied = np.zeros(0, np.int64)
            else:
                applied, moved = _one_by_one(index, children, parents, start, end, refused)
                rebuilt += moved
        known_children, known_parents = _with_edges(known_children, known_parents, children[applied], parents[applied])
        start = end
    return refused, rebuilt


def _one_by_one(index: Index, children: np.ndarray, parents: np.ndarray, start: int, end: int,
                refused: dict[int, str]) -> tuple[np.ndarray, int]:
    """Edges start..end-1 in separate calls; the refused ones into ``refused``. Returns
    (positions applied, items rebuilt)."""
    applied, rebuilt = [], 0
    for i in range(start, end):
        try:
            rebuilt += index.set_category_parents(children[i : i + 1], parents[i : i + 1])
            applied.append(i)
        except ValueError as exc:
            refused[i] = str(exc)
    return np.array(applied, np.int64), rebuilt


def _sorted(children: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(children, kind="stable")
    return children[order], parents[order]


def _parents_of(known_children: np.ndarray, known_parents: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Parent of each id (-1: a root, or a category not seen yet)."""
    if len(known_children) == 0:
        return np.full(len(ids), -1, np.int64)
    at = np.minimum(np.searchsorted(known_children, ids), len(known_children) - 1)
    return np.where(known_children[at] == ids, known_parents[at], -1)


def _with_edges(known_children: np.ndarray, known_parents: np.ndarray, children: np.ndarray,
                parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edge lists after the (distinct) children got these parents."""
    keep = ~np.isin(known_children, children)
    linked = parents >= 0
    return _sorted(np.concatenate([known_children[keep], children[linked]]),
                   np.concatenate([known_parents[keep], parents[linked]]))


def _previous_occurrence(values: np.ndarray) -> np.ndarray:
    """Position of the previous occurrence of values[i] (-1: none)."""
    order = np.argsort(values, kind="stable")
    same = values[order][1:] == values[order][:-1]
    previous = np.full(len(values), -1, np.int64)
    previous[order[1:][same]] = order[:-1][same]
    return previous


@dataclass
class TaxonomyStats:
    edges: int = 0  # applied (refused ones are dead letters)
    rebuilt: int = 0  # items whose memberships moved with their categories
    lag: dict[int, int] = field(default_factory=dict)


class TaxonomyFeed:
    """The taxonomy topic's consumer: every partition of it, from ``start_offsets``
    (partition -> next offset to apply; others from the beginning). A topic that does
    not exist yet is looked for again every ``TOPIC_CHECK_S``; meanwhile the index has
    no taxonomy from Kafka. Used by the ingestion thread only."""

    def __init__(self, bootstrap: str, topic: str, group: str, start_offsets: dict[int, int] | None,
                 client_config: dict[str, Any]) -> None:
        self.topic = topic
        self.stats = TaxonomyStats()
        self._applied: dict[int, int] = dict(start_offsets or {})
        self._targets: dict[int, int] | None = None  # where the topic ended when assigned: caught up there
        self._low: dict[int, int] = {}
        self._checked_at = -np.inf
        self._looked = False  # whether the topic was looked for once
        self._partitions: list[int] = []
        # a group id is required by the client; nothing joins it or commits to it
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{group}.taxonomy", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False, "statistics.interval.ms": 500,
            "stats_cb": self._on_stats, "fetch.wait.max.ms": 50, **client_config})

    @property
    def assigned(self) -> bool:
        return bool(self._partitions)

    def applied(self) -> dict[int, int]:
        """Partition -> next offset whose edge is not yet applied."""
        return dict(self._applied)

    def fetch(self, max_messages: int, timeout: float = 0.0) -> list[Any]:
        """What has arrived (up to ``max_messages``), waiting at most ``timeout``; first
        assigns the topic once it exists."""
        if not self._partitions:
            self._assign()
            if not self._partitions:
                time.sleep(timeout)  # as a poll of an empty topic would wait
                return []
        return self._consumer.consume(num_messages=max_messages, timeout=timeout)

    def record_applied(self, messages: list[Any]) -> None:
        """These messages (applied or dead-lettered) are done."""
        applied = dict(self._applied)
        for msg in messages:
            applied[msg.partition()] = max(applied.get(msg.partition(), 0), msg.offset() + 1)
        self._applied = applied  # replaced whole: readers never see a half-updated dict

    def caught_up(self) -> bool:
        """Every edge that was in the topic when it was assigned is applied (true also
        when there is no topic, or its end could not be read). False until the topic was
        looked for once."""
        if not self._looked:
            return False
        if self._targets is None:
            return True
        return all(max(self._applied.get(p, 0), self._low.get(p, 0)) >= end for p, end in self._targets.items())

    def close(self) -> None:
        self._consumer.close()

    def _assign(self) -> None:
        if time.monotonic() - self._checked_at < TOPIC_CHECK_S:
            return
        self._checked_at = time.monotonic()
        try:
            meta = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        except KafkaException as exc:
            log.warning("kafka taxonomy topic not checked; trying again", extra={
                "topic": self.topic, "reason": str(exc), "retry_s": TOPIC_CHECK_S})
            return
        if meta is None or meta.error is not None or not meta.partitions:
            if not self._looked:
                log.info("no kafka taxonomy topic: categories stay roots unless set otherwise; looked for again "
                         "periodically", extra={"topic": self.topic, "retry_s": TOPIC_CHECK_S,
                                                "fix": "rtindex produce creates it; or kafka-topics.sh --create"})
            self._looked = True
            return
        partitions = sorted(meta.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, self._applied.get(p, OFFSET_BEGINNING))
                               for p in partitions])
        self._partitions = partitions
        self._targets = self._ends(partitions)
        self._looked = True
        log.info("kafka taxonomy topic assigned", extra={"topic": self.topic, "offsets": self._applied,
                                                         "ends": self._targets})

    def _ends(self, partitions: list[int]) -> dict[int, int] | None:
        """Each partition's end now (None if the broker does not say: readiness then
        does not wait for the taxonomy). Asked once, before any fetch is in flight."""
        ends = {}
        try:
            for p in partitions:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
                self._low[p], ends[p] = low, high
        except KafkaException as exc:
            log.warning("kafka taxonomy topic's end unknown; readiness does not wait for it",
                        extra={"topic": self.topic, "reason": str(exc)})
            return None
        return ends

    def _on_stats(self, payload: str) -> None:
        """Lag per partition = high watermark - next offset to apply (librdkafka's
        statistics; this consumer never commits, so its own lag figure is unset)."""
        partitions = json.loads(payload).get("topics", {}).get(self.topic, {}).get("partitions", {})
        lag = {}
        for key, p in partitions.items():
            if int(key) in self._partitions and p.get("hi_offset", -1) >= 0:
                start = max(self._applied.get(int(key), 0), p.get("lo_offset", 0))
                lag[int(key)] = max(0, p["hi_offset"] - start)
        self.stats.lag = lag
