"""Categories through Kafka: an UPSERT's categories replace the item's, taxonomy edges come
through ``<topic>.taxonomy`` and are applied in order (refused ones dead-lettered), and
the taxonomy topic's position survives a snapshot. The edge-ordering rule is also tested
without a broker."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from waiting import wait_until

from rtindex import Index, datasets
from rtindex.consumers import taxonomy as taxonomy_module
from rtindex.consumers.codec import DELETE, UPSERT, encode
from rtindex.consumers.ingest import KafkaIngestor, KafkaSettings
from rtindex.consumers.producer import CatalogProducer, ensure_topic
from rtindex.consumers.taxonomy import apply_in_order, resume_offsets
from rtindex.core.categories import MAX_ITEM_CATEGORIES, MAX_TAXONOMY_DEPTH
from rtindex.core.writer import Writer
from rtindex.snapshots.restore import kafka_start_offsets
from rtindex.snapshots.store import SnapshotStore

DIM = 16
Edges = list[tuple[int, int]]


# ------------------------------------------------------------------ the edge order, without a broker
def _one_at_a_time(edges: Edges, index: Index | None = None) -> tuple[Index, list[int]]:
    """The reference: each edge in its own call; returns the index and the refused positions."""
    index = index if index is not None else Index(dim=4, metric="ip")
    refused = []
    for i, (child, parent) in enumerate(edges):
        try:
            index.set_category_parents([child], [parent])
        except ValueError:
            refused.append(i)
    return index, refused


def _forest(index: Index) -> dict[int, int]:
    children, parents = index.category_parents()
    return dict(zip(children.tolist(), parents.tolist(), strict=True))


def _in_polls(edges: Edges, cuts: list[int], index: Index | None = None) -> tuple[Index, list[int]]:
    index = index if index is not None else Index(dim=4, metric="ip")
    refused: list[int] = []
    bounds = sorted({0, len(edges), *cuts})
    for start, end in itertools.pairwise(bounds):
        part = np.array(edges[start:end], np.int64).reshape(-1, 2)
        got, _ = apply_in_order(index, part[:, 0], part[:, 1])
        refused += [start + i for i in sorted(got)]
    return index, refused


def test_edges_end_as_if_applied_one_at_a_time_wherever_polls_cut_the_stream() -> None:
    rng = np.random.default_rng(5)
    for _ in range(150):
        k = int(rng.integers(3, 10))
        edges = [(int(rng.integers(k)), int(rng.integers(-1, k))) for _ in range(int(rng.integers(1, 25)))]
        cuts = rng.integers(0, len(edges) + 1, size=int(rng.integers(0, 4))).tolist()
        expected, expected_refused = _one_at_a_time(edges)
        got, refused = _in_polls(edges, cuts)
        assert _forest(got) == _forest(expected), (edges, cuts)
        assert refused == expected_refused, (edges, cuts)


def test_a_chain_too_deep_is_cut_where_one_at_a_time_would_cut_it() -> None:
    chain = [(i, i + 1) for i in range(MAX_TAXONOMY_DEPTH + 5)]  # each new category hangs under a root
    expected, expected_refused = _one_at_a_time(chain)
    got, refused = _in_polls(chain, [])
    assert expected_refused and refused == expected_refused
    assert _forest(got) == _forest(expected)


def test_a_poll_of_new_categories_costs_one_index_call(monkeypatch: pytest.MonkeyPatch) -> None:
    index = Index(dim=4, metric="ip")
    calls = []
    original = index.set_category_parents
    monkeypatch.setattr(index, "set_category_parents", lambda c, p: calls.append(len(c)) or original(c, p))
    children = np.arange(1, 200, dtype=np.int64)
    parents = children // 2  # a binary tree under 0, new categories only
    assert apply_in_order(index, children, parents) == ({}, 0)
    assert calls == [len(children)]
    # a move (6 had parent 3) goes alone, between the runs of no-ops before and after it
    calls.clear()
    assert apply_in_order(index, np.array([5, 6, 7, 8]), np.array([2, 0, 3, 4]))[0] == {}
    assert calls == [1, 1, 2]
    assert _forest(index)[6] == 0


# ------------------------------------------------------------------ through a real broker
def _topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"rtindex-test-cat-{uuid.uuid4().hex[:10]}"
    ensure_topic(bootstrap, name, partitions)
    return name


def _ingest(bootstrap: str, topic: str, index: Index, writer: Writer, start_offsets: dict[int, int] | None = None,
            taxonomy_offsets: dict[int, int] | None = None) -> KafkaIngestor:
    settings = KafkaSettings(bootstrap=bootstrap, topic=topic, group=f"g-{topic}-{uuid.uuid4().hex[:6]}", batch=500,
                             ready_lag=0)
    ingestor = KafkaIngestor(index, writer, settings, start_offsets=start_offsets if start_offsets is not None else {},
                             taxonomy_offsets=taxonomy_offsets)
    ingestor.start()
    return ingestor


def _wait_applied(ingestor: KafkaIngestor, items: int, edges: int = 0, timeout: float = 90) -> None:
    """Until ``items`` item messages and ``edges`` taxonomy messages are done (applied or
    dead-lettered)."""
    def done() -> bool:
        assert ingestor.failed is None, ingestor.failed
        offsets = ingestor.applied_offsets()
        return (sum(offsets["offsets"].values()) >= items
                and sum(offsets["taxonomy"]["offsets"].values()) >= edges)

    wait_until(done, timeout, f"{items} item and {edges} taxonomy messages applied "
               f"(at the start: {ingestor.applied_offsets()})")


def _dead_letters(bootstrap: str, topic: str, n: int, timeout: float = 60) -> list[tuple[bytes | None, str, str]]:
    """(key, reason, source topic) of the first ``n`` messages of ``<topic>.dlq``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([f"{topic}.dlq"])
    found = []
    end = time.monotonic() + timeout
    while len(found) < n and time.monotonic() < end:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            headers = {k: v.decode() for k, v in msg.headers()}
            found.append((msg.key(), headers["rtindex-reason"], headers["rtindex-source-topic"]))
    consumer.close()
    return found


def _members(given: dict[int, list[int]], parents: dict[int, int], category: int) -> set[int]:
    """Items in ``category``: given it or one of its descendants."""
    def ancestors(c: int) -> set[int]:
        out = {c}
        while c in parents:
            c = parents[c]
            out.add(c)
        return out

    return {item for item, cats in given.items() if any(category in ancestors(c) for c in cats)}


@pytest.mark.kafka
def test_items_and_taxonomy_from_kafka_make_category_searches_return_only_members(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    rng = np.random.default_rng(1)
    n = 3000
    vectors = datasets.clustered(n + 50, DIM, clusters=20, seed=3)
    queries, vectors = vectors[:50], vectors[50:]
    leaves = [101, 102, 103, 201, 202, 301]
    parents = {101: 100, 102: 100, 103: 100, 201: 200, 202: 200, 100: 1000, 200: 1000}
    given = {i: sorted({int(c) for c in rng.choice(leaves, int(rng.integers(0, 3)))}) for i in range(n)}
    producer = CatalogProducer(kafka_bootstrap, topic)
    ids = np.arange(n)
    # half the items before the taxonomy exists (their memberships are rebuilt when it comes), half after
    producer.upsert(ids[: n // 2], vectors[: n // 2], np.ones(n // 2, np.int64), categories=[given[i] for i in ids[: n // 2]])
    producer.flush()
    index = Index(dim=DIM, metric="l2")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, n // 2)
        producer.set_category_parents(list(parents), list(parents.values()))
        producer.upsert(ids[n // 2:], vectors[n // 2:], np.ones(n - n // 2, np.int64),
                        categories=[given[i] for i in ids[n // 2:]])
        producer.flush()
        _wait_applied(ingestor, n, len(parents))
        assert ingestor.ready.wait(30)
    finally:
        ingestor.stop()
        writer.close()
    counters = ingestor.counters()
    assert ingestor.stats.dead_letters == 0 and counters["kafka_taxonomy_edges"] == len(parents)
    assert counters["kafka_taxonomy_items_rebuilt"] > 0  # the items that came before the edges moved with them
    assert _forest(index) == parents
    categories = [1000, 100, 101, 200, 301, 999]
    k = 10
    result = index.search(queries, k=k, ef=128, categories=categories)
    hits = total = 0
    for c, category in enumerate(categories):
        members = _members(given, parents, category)
        listed = result.ids[:, c]
        assert set(listed[listed >= 0].tolist()) <= members, category  # only members, ever
        if not members:
            assert (listed == -1).all()
            continue
        pool = np.array(sorted(members))
        distances = ((queries[:, None, :] - vectors[pool][None, :, :]) ** 2).sum(-1)
        truth = pool[np.argsort(distances, axis=1)[:, :k]]
        hits += sum(len(set(t.tolist()) & set(r.tolist())) for t, r in zip(truth, listed, strict=True))
        total += truth.size
    assert hits / total >= 0.95, hits / total


@pytest.mark.kafka
def test_an_item_reproduced_with_other_categories_leaves_the_old_ones_and_a_delete_leaves_all(
        kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    n = 400
    vectors = datasets.clustered(n, DIM, clusters=5, seed=4)
    producer = CatalogProducer(kafka_bootstrap, topic)
    producer.set_category_parents([11, 12], [10, 10])
    given = {i: [11] if i % 2 else [12, 20] for i in range(n)}
    producer.upsert(range(n), vectors, [1] * n, categories=[given[i] for i in range(n)])
    producer.flush()
    index = Index(dim=DIM, metric="l2")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, n, 2)
        moved = list(range(0, 100))  # re-produced with other categories (or none)
        new = {i: [20] if i % 3 else [] for i in moved}
        producer.upsert(moved, vectors[moved], [2] * len(moved), categories=[new[i] for i in moved])
        deleted = list(range(100, 150))
        for i in deleted:
            producer.send(*encode(DELETE, i, 2))
        producer.flush()
        _wait_applied(ingestor, n + len(moved) + len(deleted), 2)
    finally:
        ingestor.stop()
        writer.close()
    given.update(new)
    for i in deleted:
        del given[i]
    parents = {11: 10, 12: 10}
    categories = [10, 11, 12, 20]
    # every category is no larger than the beam: searched exhaustively, so exactly its members
    result = index.search(vectors[::7], k=n, ef=n, categories=categories)
    for c, category in enumerate(categories):
        members = _members(given, parents, category)
        for row in result.ids[:, c]:
            assert set(row[row >= 0].tolist()) == members, category
    assert not set(result.ids.ravel().tolist()) & set(deleted)


@pytest.mark.kafka
def test_bad_categories_are_dead_lettered_with_a_reason_and_the_rest_of_the_batch_applies(
        kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=1)
    row = np.ones(DIM, np.float32)
    producer = CatalogProducer(kafka_bootstrap, topic)
    producer.send(*encode(UPSERT, 1, 1, row, categories=[5, 5, 6]))
    producer.send(*encode(UPSERT, 2, 1, row, categories=[5, -3]))
    producer.send(*encode(UPSERT, 3, 1, row, categories=range(MAX_ITEM_CATEGORIES + 1)))
    producer.send(*encode(UPSERT, 4, 1, row, categories=[6]))
    producer.send(*encode(DELETE, 5, 1, categories=[-1]))  # a DELETE's categories are ignored
    producer.flush()
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, 5)
    finally:
        ingestor.stop()
        writer.close()
    assert 1 in index and 4 in index and 2 not in index and 3 not in index
    assert ingestor.stats.dead_letters == 2
    result = index.search(row[None], k=5, categories=[5, 6])
    assert sorted(result.ids[0, 0][result.ids[0, 0] >= 0].tolist()) == [1]
    assert sorted(result.ids[0, 1][result.ids[0, 1] >= 0].tolist()) == [1, 4]
    reasons = {key: reason for key, reason, _ in _dead_letters(kafka_bootstrap, topic, 2)}
    assert "category id -3 is negative" in reasons[b"2"]
    assert f"the limit is {MAX_ITEM_CATEGORIES}" in reasons[b"3"]


@pytest.mark.kafka
def test_a_taxonomy_edge_that_makes_a_cycle_is_dead_lettered_and_the_others_apply(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    producer = CatalogProducer(kafka_bootstrap, topic)
    producer.set_category_parents([1, 2, 3, 4], [2, 1, 1, 4])  # 2 -> 1 closes a cycle; 4 is its own parent
    producer.send(*encode(UPSERT, 7, 1, np.ones(DIM, np.float32), categories=[3]))
    producer.flush()
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, 1, 4)
    finally:
        ingestor.stop()
        writer.close()
    assert _forest(index) == {1: 2, 3: 1}
    result = index.search(np.ones((1, DIM), np.float32), k=3, categories=[2])
    assert result.ids[0, 0, 0] == 7  # 3 -> 1 -> 2
    letters = _dead_letters(kafka_bootstrap, topic, 2)
    reasons = {key: reason for key, reason, _ in letters}
    assert "cycle" in reasons[b"2"] and "own parent" in reasons[b"4"]
    assert {source for _, _, source in letters} == {f"{topic}.taxonomy"}


@pytest.mark.kafka
def test_a_replica_restored_from_a_snapshot_resumes_the_taxonomy_where_the_snapshot_stands(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = _topic(kafka_bootstrap)
    # 2 -> 1 is refused when first applied (1 is then under 2); replayed over the state
    # these edges leave (2 under 0 under 1, 1 a root) it is accepted: a replay differs
    first: Edges = [(1, 2), (2, 0), (2, 1), (1, -1), (0, 1)]
    then: Edges = [(5, 0), (1, 5), (6, 1)]  # 1 -> 5 makes a cycle (5 is under 0, under 1)
    replayed, _ = _one_at_a_time(first + then, _one_at_a_time(first)[0])
    expected, refused = _one_at_a_time(first + then)
    assert _forest(replayed) != _forest(expected)  # the test can tell a replay from a resume
    producer = CatalogProducer(kafka_bootstrap, topic)
    producer.set_category_parents(*zip(*first, strict=True))
    producer.upsert([1, 2], np.ones((2, DIM), np.float32), [1, 1], categories=[[0], [2]])
    producer.flush()
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, 2, len(first))
        state = index.export_state(capture_with=lambda: {"kafka": ingestor.applied_offsets()})
    finally:
        ingestor.stop()
        writer.close()
    store = SnapshotStore(tmp_path)
    store.write(state)
    restored_state, info = store.load_newest()  # type: ignore[misc]
    restored = Index.from_state(restored_state)
    start = kafka_start_offsets(info, topic)
    taxonomy = resume_offsets(info.extra.get("kafka"), f"{topic}.taxonomy")
    assert taxonomy == {0: len(first)}
    producer.set_category_parents(*zip(*then, strict=True))
    producer.flush()
    writer = Writer(restored)
    ingestor = _ingest(kafka_bootstrap, topic, restored, writer, start_offsets=start, taxonomy_offsets=taxonomy)
    try:
        _wait_applied(ingestor, 2, len(first) + len(then))
        assert ingestor.ready.wait(30)
    finally:
        ingestor.stop()
        writer.close()
    assert _forest(restored) == _forest(expected)
    assert ingestor.stats.dead_letters == sum(i >= len(first) for i in refused) == 1  # none of `first` again
    assert ingestor.counters()["kafka_taxonomy_edges"] == len(then) - 1


@pytest.mark.kafka
def test_without_a_taxonomy_topic_the_ingestor_serves_and_takes_the_topic_once_it_exists(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taxonomy_module, "TOPIC_CHECK_S", 0.2)
    topic = f"rtindex-test-cat-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    producer = CatalogProducer(kafka_bootstrap, topic)
    producer.upsert([1], np.ones((1, DIM), np.float32), [1], categories=[[11]])
    producer.flush()
    index = Index(dim=DIM, metric="ip")
    writer = Writer(index)
    ingestor = _ingest(kafka_bootstrap, topic, index, writer)
    try:
        _wait_applied(ingestor, 1)
        assert ingestor.ready.wait(30) and ingestor.counters()["kafka_taxonomy_assigned"] == 0
        ensure_topic(kafka_bootstrap, topic, 1)  # adds the taxonomy topic
        producer.set_category_parents([11], [10])
        producer.flush()
        _wait_applied(ingestor, 1, 1)
    finally:
        ingestor.stop()
        writer.close()
    assert ingestor.failed is None and _forest(index) == {11: 10}
    assert index.search(np.ones((1, DIM), np.float32), k=1, categories=[10]).ids[0, 0, 0] == 1
