"""Crash recovery and failover against the real broker: a server consuming a churn
stream is SIGKILLed at random moments (while applying, while writing a snapshot); each
restart restores its newest valid snapshot and replays Kafka from the offsets stored in
it; the end state equals the reference model. A standby started from a copy of the data
directory serves the same answers."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess
from streams import DIM, Model, assert_matches, mixed_stream, produce
from waiting import wait_until

from rtindex.client import IndexClient, IndexClientError
from rtindex.consumers.producer import CatalogProducer, ensure_topic
from rtindex.snapshots.store import MANIFEST, SnapshotStore

pytestmark = pytest.mark.kafka


def _flags(bootstrap: str, topic: str, group: str, data: Path) -> tuple[str, ...]:
    return ("--dim", str(DIM), "--metric", "ip", "--data-dir", str(data), "--kafka-bootstrap", bootstrap,
            "--topic", topic, "--group", group, "--kafka-ready-lag", "0", "--snapshot-interval-s", "0",
            "--snapshot-every-ops", "2500", "--kafka-batch", "500")


def _caught_up(server: ServerProcess, timeout: float = 180) -> IndexClient:
    client = IndexClient(server.target, timeout=30)
    try:
        client.wait_until_serving(timeout)  # SERVING once the lag reached 0
        wait_until(lambda: client.stats()["kafka_lag_total"] == 0, timeout, "the Kafka lag to reach 0 (catch-up)")
    except Exception as exc:
        counters = {}
        with contextlib.suppress(Exception):
            counters = {k: v for k, v in client.stats(timeout=5).items() if k.startswith(("kafka_", "items"))}
        raise AssertionError(f"{exc}\ncounters: {counters}\nthe server's last log lines:\n{server.tail()}") from exc
    return client


WATCH_S = 0.001  # poll period while waiting for a snapshot directory: short against a write of one


def _newest_seq(data: Path) -> int:
    """The highest snapshot number in ``data``, finished or not (a new write takes the next one)."""
    seqs = SnapshotStore(data).sequence_numbers()
    return seqs[-1] if seqs else 0


def _server_children(pid: int) -> list[int]:
    """Processes the server started: the snapshot helper and multiprocessing's resource tracker."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended since the listing
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # exited (a zombie nobody reaped yet)


def _request_snapshot(target: str) -> None:
    """The Snapshot RPC of a server about to be killed (its failure is the point)."""
    with contextlib.suppress(IndexClientError), IndexClient(target, timeout=60) as client:
        client.snapshot()


def _kill_during_a_snapshot_write(server: ServerProcess, data: Path) -> tuple[Path | None, int]:
    """Ask for a snapshot and SIGKILL the server the moment this server's write of it is
    seen on disk (a directory numbered past every one present before: not a leftover of
    an earlier kill). Returns (that directory if the kill landed before its manifest,
    checked once the helper is gone too, else None; the newest complete snapshot before it)."""
    newest_before = _newest_seq(data)
    store = SnapshotStore(data)
    children = _server_children(server.proc.pid)
    threading.Thread(target=_request_snapshot, args=(server.target,), daemon=True).start()
    path = store.path_of(newest_before + 1)
    deadline = time.monotonic() + 60
    while not path.is_dir():
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"the requested snapshot never started ({path} did not appear)")
        time.sleep(WATCH_S)
    server.kill()
    wait_until(lambda: all(_gone(pid) for pid in children), 30, "the snapshot helper to die with the server")
    landed = path.is_dir() and not (path / MANIFEST).exists()
    complete = [s for s in store.sequence_numbers() if s <= newest_before and (store.path_of(s) / MANIFEST).exists()]
    return (path if landed else None), max(complete, default=0)


def _check_restored_past(server: ServerProcess, seq: int, partial: Path) -> None:
    """The server started from snapshot ``seq``, having refused the partial one at ``partial``."""
    events = server.events()
    refused = [e for e in events if e.get("msg") == "snapshot unusable, trying the previous one"]
    assert any(e.get("seq") == int(partial.name) and "no manifest" in e.get("error", "") for e in refused), refused
    restored = [e.get("seq") for e in events if e.get("msg") == "restored"]
    assert restored == ([seq] if seq else []), (restored, seq)


def test_sigkill_at_random_moments_loses_no_update_and_resurrects_no_delete(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"rtindex-crash-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 4)
    ops = mixed_stream(40_000, seed=11)
    model = Model.of(ops)

    def paced() -> None:  # ~8 s of traffic, so the kills land mid-stream
        producer = CatalogProducer(kafka_bootstrap, topic, rate=5000)
        from rtindex.consumers.codec import encode

        for op in ops:
            producer.send(*encode(*op))
        producer.flush()

    producing = threading.Thread(target=paced)
    producing.start()
    data, log = tmp_path / "data", tmp_path / "server.log"
    flags = _flags(kafka_bootstrap, topic, f"g-{topic}", data)
    rng = np.random.default_rng(7)
    mid_snapshot_kills = 0
    expected_restore: tuple[int, Path] | None = None  # after a kill mid-write: (seq to load, partial dir)
    for attempt in range(12):  # at least 5 kills, more until one landed during a snapshot write
        if attempt >= 5 and mid_snapshot_kills >= 1:
            break
        server = ServerProcess(log, *flags)
        if expected_restore is not None:  # the previous kill left a partial snapshot behind
            try:
                _check_restored_past(server, *expected_restore)
            except AssertionError:
                server.kill()
                raise
            expected_restore = None
        if attempt % 2:
            partial, previous = _kill_during_a_snapshot_write(server, data)
            if partial is not None:
                mid_snapshot_kills += 1
                expected_restore = (previous, partial)
        else:
            time.sleep(float(rng.uniform(0.5, 2.5)))  # a random moment, not a synchronisation
            server.kill()
    producing.join()
    assert mid_snapshot_kills >= 1, "no kill landed during a snapshot write"

    server = ServerProcess(log, *flags)
    try:
        if expected_restore is not None:
            _check_restored_past(server, *expected_restore)
        with _caught_up(server) as client:
            assert client.stats()["restored_from_seq"] >= 1
            assert_matches(client, model)
    finally:
        server.kill()
    restored = [e for e in server.events() if e.get("msg") == "restored"]
    assert restored, "the last start did not restore from a snapshot"
    resumed = [e for e in server.events() if e.get("msg") == "partitions assigned, resuming from the index state"]
    # from the snapshot's offsets (a partition that had delivered nothing yet starts at the beginning, -2)
    assert any(offset > 0 for offset in resumed[0]["offsets"].values())


def test_a_standby_from_a_copy_of_the_data_dir_serves_the_same_answers(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"rtindex-failover-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 4)
    ops = mixed_stream(20_000, seed=12)
    first, more = ops[:15_000], ops[15_000:]
    model = Model.of(first)
    produce(kafka_bootstrap, topic, first)
    primary_dir, log = tmp_path / "primary", tmp_path / "server.log"
    primary = ServerProcess(log, *_flags(kafka_bootstrap, topic, "primary", primary_dir))
    queries = np.stack([v for _, v in list(model.live.values())[:200]])
    try:
        with _caught_up(primary) as client:
            assert_matches(client, model)
            answers = client.search(queries, k=10, ef=64)
        assert primary.terminate() == 0  # drains, commits, final snapshot
    finally:
        if primary.proc.poll() is None:
            primary.kill()
    standby_dir = tmp_path / "standby"
    shutil.copytree(primary_dir, standby_dir, ignore=shutil.ignore_patterns("LOCK"))
    standby = ServerProcess(log, *_flags(kafka_bootstrap, topic, "standby", standby_dir))
    try:
        with _caught_up(standby) as client:
            same = client.search(queries, k=10, ef=64)
            np.testing.assert_array_equal(answers.ids, same.ids)
            np.testing.assert_array_equal(answers.scores, same.scores)
            for op in more:
                model.apply(*op)
            produce(kafka_bootstrap, topic, more)
            end = time.monotonic() + 120
            while client.stats()["kafka_lag_total"] or client.stats()["kafka_consumed"] < len(more):
                assert time.monotonic() < end, "standby did not catch up"
                time.sleep(0.1)
            assert_matches(client, model)
    finally:
        standby.kill()
