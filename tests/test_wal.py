"""The write-ahead log (README: Durability): an acknowledged gRPC write survives
``kill -9``; a torn record at the end of the log (a crash mid-append) is dropped, damage
elsewhere is refused; snapshots let the log drop what they cover; ``--wal off`` refuses
to start over records no snapshot holds."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess

from rtindex.client import IndexClient, IndexClientError
from rtindex.core.categories import ItemCategories
from rtindex.core.writer import WriteRecord
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig
from rtindex.snapshots.wal import HEADER, SUFFIX, WalCorrupted, WriteAheadLog, decode_record, encode_record

DIM = 8


def _upsert(ids: list[int], seed: int, versions: bool = False, categories: bool = False) -> WriteRecord:
    rows = np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype(np.float32)
    cats = ItemCategories.from_lists([[i % 3, 7] for i in ids], "test") if categories else None
    return WriteRecord("upsert", np.asarray(ids, np.int64), rows,
                       np.asarray(ids, np.int64) + 10 if versions else None, cats)


def _same(a: WriteRecord, b: WriteRecord) -> None:
    assert a.kind == b.kind
    for name in ("ids", "rows", "versions", "parents"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert (a.categories is None) == (b.categories is None)
    if a.categories is not None:
        assert a.categories.lists() == b.categories.lists()


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


# ---------------------------------------------------------------------- the log itself
def test_every_kind_of_write_reads_back_as_written_across_segments_and_restarts(tmp_path: Path) -> None:
    records = [_upsert(list(range(100, 400)), 2, categories=True), _upsert([1, 2, 3], 0),
               _upsert([4], 1, versions=True, categories=True),
               WriteRecord("delete", np.array([2], np.int64)),
               WriteRecord("delete", np.array([9, 4], np.int64), versions=np.array([50, 60], np.int64)),
               WriteRecord("taxonomy", np.array([7, 1], np.int64), parents=np.array([-1, 7], np.int64))]
    for record in records:
        _same(decode_record(encode_record(record)), record)
    wal = WriteAheadLog(tmp_path, segment_bytes=4096)  # small: several segments
    seqs = [s for record in records for s in wal.append([record])]
    assert seqs == list(range(1, len(records) + 1))
    wal.close()
    reopened = WriteAheadLog(tmp_path, segment_bytes=4096)
    assert len(_segments(tmp_path)) >= 2 and reopened.last_seq == len(records)
    got = list(reopened.records(after=0))
    assert [seq for seq, _ in got] == seqs
    for (_, back), record in zip(got, records, strict=True):
        _same(back, record)
    assert [seq for seq, _ in reopened.records(after=4)] == [5, 6]
    assert reopened.append([_upsert([5], 3)]) == [len(records) + 1]  # numbering goes on in a new segment
    reopened.close()


@pytest.mark.parametrize("cut", ["header", "payload", "last byte"])
def test_a_record_torn_by_a_crash_is_dropped_and_the_log_goes_on(tmp_path: Path, cut: str) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(5):
        wal.append([_upsert([i], i)])
    wal.close()
    (segment,) = _segments(tmp_path)
    size = segment.stat().st_size
    last = len(encode_record(_upsert([4], 4))) + HEADER.size
    keep = {"header": size - last + 7, "payload": size - last // 2, "last byte": size - 1}[cut]
    os.truncate(segment, keep)
    reopened = WriteAheadLog(tmp_path)
    assert reopened.last_seq == 4 and reopened.stats.dropped_tail_bytes == keep - (size - last)
    assert segment.stat().st_size == size - last  # cut at the last whole record
    assert reopened.append([_upsert([9], 9)]) == [5]
    assert [seq for seq, _ in reopened.records()] == [1, 2, 3, 4, 5]
    reopened.close()


def test_damage_before_intact_records_is_refused_not_dropped(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(5):
        wal.append([_upsert([i], i)])
    wal.close()
    (segment,) = _segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped bit in the second record: three intact ones follow
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorrupted, match=r"damaged at byte .* intact records after it"):
        WriteAheadLog(tmp_path)


def test_segments_every_snapshot_covers_are_removed_and_numbering_survives(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=1)  # a segment per append
    for i in range(6):
        wal.append([_upsert([i], i)])
    assert len(_segments(tmp_path)) == 6
    assert wal.truncate_through(3) == 3
    assert [seq for seq, _ in wal.records()] == [4, 5, 6]
    wal.truncate_through(6)
    assert _segments(tmp_path) == []
    wal.close()
    # the snapshot that covered them tells the next start where numbering goes on
    assert WriteAheadLog(tmp_path, covered=6).append([_upsert([1], 1)]) == [7]


# ---------------------------------------------------------------------- through the server
def _server(data: Path, **settings: object) -> IndexServer:
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", data_dir=str(data), snapshot_interval_s=0,
                                      log_level="warning", warm_up="off", **settings))
    server.start()
    server.mark_ready()
    return server


def _crash(server: IndexServer) -> None:
    """Stop without a final snapshot or drain: what a SIGKILL leaves on disk (the writes
    acknowledged were applied and logged; nothing else happens)."""
    server.grpc_server.stop(0).wait()
    server.writer.close()
    if server.snapshotter is not None:
        server.snapshotter.close(final=False)
    server.wal.close()
    server.store.unlock()


def test_acknowledged_writes_and_taxonomy_changes_are_replayed_on_top_of_the_snapshot(tmp_path: Path) -> None:
    rows = np.random.default_rng(1).standard_normal((40, DIM)).astype(np.float32)
    server = _server(tmp_path)
    with IndexClient(f"127.0.0.1:{server.port}") as client:
        client.upsert(np.arange(20), rows[:20], categories=[[1]] * 20)
        client.snapshot()  # covers the first 20
        client.upsert(np.arange(20, 40), rows[20:], categories=[[2]] * 20)
        client.delete([0, 25])
        client.set_category_parents([2], [1])  # category 1 now holds the items of 2 as well
    _crash(server)
    again = _server(tmp_path)
    try:
        with IndexClient(f"127.0.0.1:{again.port}") as client:
            got = client.get(np.arange(40))
            expected = np.ones(40, bool)
            expected[[0, 25]] = False
            np.testing.assert_array_equal(got.found, expected)
            np.testing.assert_array_equal(got.vectors[expected], rows[expected])
            assert client.category_parents() == ([2], [1])
            in_one = client.search(rows[30:31], k=40, ef=64, categories=[1]).ids[0, 0]
            assert set(in_one[in_one >= 0].tolist()) == set(range(1, 40)) - {25}
            assert client.stats()["items"] == 38
    finally:
        again.stop(grace=1)


def test_wal_off_refuses_to_start_over_writes_no_snapshot_holds(tmp_path: Path) -> None:
    server = _server(tmp_path)
    with IndexClient(f"127.0.0.1:{server.port}") as client:
        client.upsert([1, 2], np.ones((2, DIM), np.float32))
    _crash(server)
    with pytest.raises(RuntimeError, match=r"1 acknowledged write\(s\) the newest snapshot lacks.*--wal on"):
        IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", data_dir=str(tmp_path), wal="off",
                                 log_level="warning", warm_up="off"))
    again = _server(tmp_path)  # with the log on they are replayed; the clean stop's snapshot covers them
    again.stop(grace=1)
    assert list((tmp_path / "wal").glob(f"*{SUFFIX}")) == []  # covered by every snapshot kept: dropped
    off = _server(tmp_path, wal="off")
    try:
        with IndexClient(f"127.0.0.1:{off.port}") as client:
            assert client.get([1, 2]).found.all()
    finally:
        off.stop(grace=1)


def test_a_write_the_disk_refuses_is_unavailable_and_not_applied(tmp_path: Path) -> None:
    server = _server(tmp_path)

    def full_disk(records: object) -> list[int]:
        raise OSError(28, "No space left on device")

    try:
        with IndexClient(f"127.0.0.1:{server.port}") as client:
            client.upsert([1], np.ones((1, DIM), np.float32))
            server.wal.append = full_disk  # type: ignore[method-assign]
            with pytest.raises(IndexClientError, match=r"UNAVAILABLE.*write-ahead log could not be written.*retry"):
                client.upsert([2], np.ones((1, DIM), np.float32))
            assert client.get([1, 2]).found.tolist() == [True, False]
    finally:
        server.stop(grace=1)


# ---------------------------------------------------------------------- kill -9
ROUNDS = int(os.environ.get("RTINDEX_WAL_CRASH_ROUNDS", "8"))
THREADS, IDS_PER_THREAD = 4, 50
NEVER_WRITTEN = np.arange(10_000, 10_050)


class _Client(threading.Thread):
    """Sequential upserts and deletes on its own ids; what was acknowledged is the model,
    the one write in flight when the server died may or may not have been applied."""

    def __init__(self, target: str, first_id: int, model: dict[int, np.ndarray | None], seed: int,
                 acked: threading.Event) -> None:
        super().__init__(daemon=True)
        self.target, self.ids = target, np.arange(first_id, first_id + IDS_PER_THREAD)
        self.model, self.rng, self.acked = model, np.random.default_rng(seed), acked
        self.in_flight: tuple[int, np.ndarray | None] | None = None
        self.acks = 0

    def run(self) -> None:
        with IndexClient(self.target, timeout=10) as client:
            while True:
                i = int(self.rng.choice(self.ids))
                new = None if self.rng.random() < 0.25 else self.rng.standard_normal(DIM).astype(np.float32)
                self.in_flight = (i, new)
                try:
                    if new is None:
                        client.delete([i])
                    else:
                        client.upsert([i], new[None])
                except IndexClientError:
                    return  # the server is gone: this write is in flight
                self.model[i] = new
                self.in_flight = None
                self.acks += 1
                self.acked.set()


def _check_and_settle(client: IndexClient, model: dict[int, np.ndarray | None], clients: list[_Client]) -> None:
    """Every acknowledged write is there and nothing else; the write each client had in
    flight is either there or not, and the model takes what the server holds."""
    in_flight = {c.in_flight[0]: c.in_flight[1] for c in clients if c.in_flight is not None}
    ids = np.array(sorted(model), np.int64)
    got = client.get(ids)
    for i, found, vector in zip(ids.tolist(), got.found, got.vectors, strict=True):
        allowed = [model[i]] + ([in_flight[i]] if i in in_flight else [])
        ok = any((a is None and not found) or (a is not None and found and np.array_equal(a, vector))
                 for a in allowed)
        assert ok, f"id {i}: server has {vector if found else 'nothing'}; acknowledged {model[i]}" + (
            f", in flight {in_flight[i]}" if i in in_flight else "")
        model[i] = vector.copy() if found else None
    assert not client.get(NEVER_WRITTEN).found.any(), "an id never written exists"
    assert client.stats()["items"] == sum(v is not None for v in model.values())


@pytest.mark.slow
@pytest.mark.timeout(120 + 30 * ROUNDS)
def test_kill_9_right_after_acknowledgements_loses_no_write_and_invents_none(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    flags = ("--dim", str(DIM), "--metric", "l2", "--data-dir", str(data), "--warm-up", "off",
             "--snapshot-interval-s", "0", "--snapshot-every-ops", "400", "--wal-segment-mb", "1")
    model: dict[int, np.ndarray | None] = {i: None for i in range(THREADS * IDS_PER_THREAD)}
    rnd = random.Random(7)
    acks = 0
    for round_ in range(ROUNDS):
        server = ServerProcess(log, *flags)
        try:
            with IndexClient(server.target, timeout=60) as client:
                client.wait_until_serving(60)
                if round_:
                    _check_and_settle(client, model, clients)  # noqa: F821 - the previous round's
            acked = threading.Event()
            clients = [_Client(server.target, t * IDS_PER_THREAD, model, rnd.randrange(1 << 30), acked)
                       for t in range(THREADS)]
            for c in clients:
                c.start()
            time.sleep(rnd.uniform(0.2, 1.5))
            acked.clear()
            acked.wait(10)  # SIGKILL the moment a write was acknowledged
        finally:
            server.kill()
        for c in clients:
            c.join(30)
        acks += sum(c.acks for c in clients)
    server = ServerProcess(log, *flags)
    try:
        with IndexClient(server.target, timeout=60) as client:
            client.wait_until_serving(60)
            _check_and_settle(client, model, clients)
    finally:
        server.kill()
    print(f"{ROUNDS} rounds of kill -9, {acks} acknowledged writes, 0 lost, 0 phantom")
    assert acks > ROUNDS  # the rounds did write
