"""RocksDB snapshots: exact restore, fallback past damaged snapshots, keep-K, snapshots
while searching, the Snapshot RPC and CLI, and restart from a data directory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess, clean_env
from waiting import wait_until

from rtindex import Index, datasets
from rtindex.client import FailedPrecondition, IndexClient
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig
from rtindex.snapshots.restore import restore_newest
from rtindex.snapshots.store import MANIFEST, SnapshotStore
from rtindex.snapshots.writer_process import SnapshotWriterProcess


def _churned_index(sift5k: datasets.Dataset) -> Index:
    base = sift5k.base
    idx = Index(dim=base.shape[1], metric="l2", M=16, ef_construction=100, seed=5)
    idx.upsert(np.arange(len(base)), base)
    rng = np.random.default_rng(0)
    idx.delete(rng.choice(len(base), 500, replace=False))
    refresh = rng.choice(len(base), 300, replace=False)
    idx.upsert(refresh, base[refresh] + rng.normal(0, 1, (300, base.shape[1])).astype(np.float32),
               versions=np.full(300, 7))
    return idx


def test_a_restored_index_answers_exactly_like_the_original(sift5k: datasets.Dataset, tmp_path: Path) -> None:
    idx = _churned_index(sift5k)
    store = SnapshotStore(tmp_path)
    info = store.write(idx.export_state())
    state, loaded = store.load(info.seq)
    restored = Index.from_state(state)
    assert loaded.items == len(idx) == len(restored)
    a, b = idx.search(sift5k.queries, k=10, ef=64), restored.search(sift5k.queries, k=10, ef=64)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert idx.stats()["deleted_versions_kept"] == restored.stats()["deleted_versions_kept"]
    # the same writes after the restore keep both identical (free slots, levels, versions)
    rng = np.random.default_rng(1)
    fresh = sift5k.queries[:100].repeat(4, 0) + rng.normal(0, 2, (400, 128)).astype(np.float32)
    for target in (idx, restored):
        target.upsert(np.arange(10_000, 10_400), fresh)
        target.delete(np.arange(0, 5000, 7))
    a, b = idx.search(sift5k.queries, k=10, ef=64), restored.search(sift5k.queries, k=10, ef=64)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    # a stale replay of a refreshed item (stored at version 7) is still refused after the restore
    got = restored.get(np.arange(5000))
    refreshed = int(np.flatnonzero(got.found & (got.versions == 7))[0])
    replay = restored.upsert([refreshed], rng.normal(size=(1, 128)).astype(np.float32), versions=[6])
    assert replay.skipped_stale == 1 and replay.refreshed == 0
    np.testing.assert_array_equal(restored.get([refreshed]).vectors[0], got.vectors[refreshed])



def test_stale_replays_of_a_deleted_and_a_refreshed_item_are_refused_after_a_restore(tmp_path: Path) -> None:
    """Versions travel through the server's snapshot path (shared memory, helper process)
    and start-up restore: replaying the older ops of a stream after a restore resurrects
    nothing and brings no old vector back."""
    rng = np.random.default_rng(3)
    dim, n = 16, 400
    x = rng.standard_normal((n, dim)).astype(np.float32)
    idx = Index(dim=dim, metric="l2", M=8, ef_construction=40, seed=2)
    idx.upsert(np.arange(n), x, versions=np.full(n, 5))
    gone, refreshed = 7, 11
    assert idx.delete([gone], versions=[9]).deleted == 1
    newer = rng.standard_normal((1, dim)).astype(np.float32)
    assert idx.upsert([refreshed], newer, versions=[8]).refreshed == 1
    store = SnapshotStore(tmp_path)
    writer = SnapshotWriterProcess()
    try:
        writer.write(store, idx, None)
    finally:
        writer.close()
    loaded = restore_newest(store)
    assert loaded is not None
    restored = loaded.index
    assert restored.stats()["deleted_versions_kept"] == idx.stats()["deleted_versions_kept"] == 1

    # the stream replayed from before both ops: the original inserts (version 5), the
    # delete's own version again, and a delete older than the refresh
    replay = restored.upsert([gone, refreshed], x[[gone, refreshed]], versions=[5, 5])
    assert (replay.inserted, replay.refreshed, replay.skipped_stale) == (0, 0, 2)
    again = restored.upsert([gone], x[[gone]], versions=[9])
    assert (again.inserted, again.skipped_stale) == (0, 1)
    old_delete = restored.delete([refreshed], versions=[6])
    assert (old_delete.deleted, old_delete.skipped_stale) == (0, 1)

    got = restored.get([gone, refreshed])
    assert got.found.tolist() == [False, True]
    assert got.versions[1] == 8
    np.testing.assert_array_equal(got.vectors[1], newer[0])
    res = restored.search(np.concatenate([x[[gone]], newer]), k=10, ef=64)
    assert gone not in res.ids
    assert res.ids[1, 0] == refreshed and res.scores[1, 0] == 0.0  # found at its new vector
    # the refusal is by version: a genuinely newer insert of the deleted id applies
    assert restored.upsert([gone], x[[gone]], versions=[10]).inserted == 1
    assert restored.get([gone]).found[0]


def _damage(path: Path, how: str) -> None:
    if how == "no-manifest":
        (path / MANIFEST).unlink()
    elif how == "manifest-edited":
        doc = json.loads((path / MANIFEST).read_text())
        doc["body"]["items"] += 1
        (path / MANIFEST).write_text(json.dumps(doc))
    else:
        sst = max(path.glob("*.sst"), key=lambda f: f.stat().st_size)
        data = bytearray(sst.read_bytes())
        if how == "truncated":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
        sst.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped-bytes", "no-manifest", "manifest-edited"])
def test_a_damaged_newest_snapshot_is_skipped_for_the_previous_one(
        how: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = datasets.clustered(3000, 16, clusters=10, seed=2)
    idx = Index(dim=16, metric="ip", M=8, ef_construction=40)
    idx.upsert(np.arange(2000), x[:2000])
    store = SnapshotStore(tmp_path)
    first = store.write(idx.export_state())
    idx.upsert(np.arange(2000, 3000), x[2000:])
    second = store.write(idx.export_state())
    _damage(second.path, how)
    with caplog.at_level(logging.ERROR, logger="rtindex"):
        state, info = store.load_newest()  # type: ignore[misc]
    assert info.seq == first.seq and len(Index.from_state(state)) == 2000
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].seq == second.seq  # type: ignore[attr-defined]
    assert str(second.seq) in errors[0].error  # type: ignore[attr-defined]


def test_only_the_last_k_snapshots_are_kept_and_unfinished_ones_are_removed(tmp_path: Path) -> None:
    idx = Index(dim=8, metric="l2")
    idx.upsert(np.arange(100), np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    store = SnapshotStore(tmp_path, keep=2)
    store.write(idx.export_state())
    (store.path_of(2)).mkdir()  # a writer that died half-way
    for _ in range(3):
        last = store.write(idx.export_state())
    assert store.sequence_numbers() == [last.seq - 1, last.seq]


# poll period of the snapshot directory watch: short against a write (hundreds of ms), and long enough
# that the watch (in the server's process) takes little of the GIL from the searches it measures
WATCH_S = 0.005


@dataclass(frozen=True)
class _Timed:
    start: float  # perf_counter seconds
    end: float
    correct: bool


def _search_until(stop: threading.Event, target: str, queries: np.ndarray, expected: np.ndarray,
                  out: list[_Timed], errors: list[BaseException]) -> None:
    """One client searching back to back, recording each call's span and correctness."""
    try:
        with IndexClient(target, timeout=30) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                res = client.search(queries, k=10, ef=32)
                out.append(_Timed(t0, time.perf_counter(), bool(np.array_equal(res.ids, expected))))
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def _helper_write_window(path: Path, timeout: float) -> tuple[float, float]:
    """(first instant the snapshot directory was seen, last instant its manifest was still
    missing): a span inside the helper process's write (it creates the directory when it
    opens the RocksDB database and renames the manifest in last)."""
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(WATCH_S)
    start = last_missing = time.perf_counter()
    while not (path / MANIFEST).exists():
        last_missing = time.perf_counter()
        assert time.monotonic() < deadline, f"{path} got no manifest"
        time.sleep(WATCH_S)
    return start, last_missing


def test_searches_go_on_at_their_pace_while_the_helper_process_writes_a_snapshot(tmp_path: Path) -> None:
    """The server's path (Snapshot RPC: copy into shared memory, helper process writes):
    searches over gRPC keep completing, correct and at about their usual latency, while
    the helper is seen writing."""
    x = datasets.clustered(100_000, 64, clusters=50, seed=4)
    idx = Index(dim=64, metric="ip", M=8, ef_construction=32, seed=1)
    idx.upsert(np.arange(len(x)), x)
    queries = x[:16]
    expected = idx.search(queries, k=10, ef=32).ids
    server = IndexServer(ServerConfig(port=0, dim=64, data_dir=str(tmp_path), snapshot_interval_s=0,
                                      log_level="warning"), index=idx)
    server.start()
    target = f"127.0.0.1:{server.port}"
    stop, errors = threading.Event(), []
    logs: list[list[_Timed]] = [[], []]
    searchers = [threading.Thread(target=_search_until, args=(stop, target, queries, expected, log, errors))
                 for log in logs]
    windows: list[tuple[float, float]] = []
    try:
        for t in searchers:
            t.start()
        wait_until(lambda: errors or min(len(log) for log in logs) >= 100, 120, "100 searches per client")
        store = SnapshotStore(tmp_path)
        with IndexClient(target, timeout=120) as client, ThreadPoolExecutor(1) as pool:
            for seq in range(1, 5):  # several writes: a longer window to measure in
                snapshot = pool.submit(client.snapshot)
                windows.append(_helper_write_window(store.path_of(seq), 120))
                assert snapshot.result(120)["seq"] == seq
    finally:
        stop.set()
        for t in searchers:
            t.join()
        server.stop(grace=1)
    assert not errors, errors
    done = [call for log in logs for call in log]
    assert all(call.correct for call in done)
    during = [c.end - c.start for c in done if any(lo <= c.start and c.end <= hi for lo, hi in windows)]
    # outside: before the first write and between writes (not the same minute's load
    # compared with another's)
    baseline = [c.end - c.start for c in done if not any(c.start <= hi and lo <= c.end for lo, hi in windows)]
    write_seconds = sum(hi - lo for lo, hi in windows)
    assert len(during) >= 20, f"{len(during)} searches finished inside {write_seconds:.3f} s of helper writes"
    # p90, not the median: a writer holding the server's GIL (rocksdict does, hence the
    # helper process) shows as stalls in the tail; written in-process it measured
    # 2.2-3.0x here, the helper 1.1-1.4x
    ratio = float(np.percentile(during, 90) / np.percentile(baseline, 90))
    assert ratio <= 2.0, (f"p90 search latency {ratio:.2f}x the one outside the writes while the helper wrote "
                          f"({len(during)} searches inside {write_seconds:.3f} s of writes, {len(baseline)} outside)")


def test_snapshot_rpc_needs_a_data_dir_and_a_data_dir_has_one_owner(tmp_path: Path) -> None:
    server = IndexServer(ServerConfig(port=0, dim=8, log_level="warning"))
    server.start()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=10) as client, \
                pytest.raises(FailedPrecondition, match="--data-dir"):
            client.snapshot()
    finally:
        server.stop(grace=1)
    owner = IndexServer(ServerConfig(port=0, dim=8, data_dir=str(tmp_path), log_level="warning"))
    try:
        with pytest.raises(RuntimeError, match="in use by another rtindex process"):
            IndexServer(ServerConfig(port=0, dim=8, data_dir=str(tmp_path), log_level="warning"))
    finally:
        owner.stop(grace=0)


def test_a_server_restarts_from_its_data_dir_after_a_crash_with_identical_answers(
        sift5k: datasets.Dataset, tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    flags = ("--data-dir", str(data), "--metric", "l2", "--snapshot-interval-s", "0")
    first = ServerProcess(log, "--dim", "128", *flags)
    try:
        with IndexClient(first.target, timeout=60) as client:
            client.wait_until_serving(60)
            client.upsert(np.arange(len(sift5k.base)), sift5k.base)
            client.delete(np.arange(0, 5000, 10))
            seen: list[tuple[int, int]] = []
            info = client.snapshot(lambda done, total: seen.append((done, total)))
            before = client.search(sift5k.queries, k=10, ef=64)
            stats = client.stats()
        assert info["items"] == 4500 and info["seq"] == 1 and info["size_bytes"] > 0
        assert seen and seen[-1][0] == seen[-1][1]  # progress reached 100 %
        assert stats["snapshots_taken"] == 1 and stats["snapshot_last_pause_ms"] >= 0
        cli = subprocess.run([sys.executable, "-m", "rtindex", "snapshot", "--target", first.target],
                             capture_output=True, text=True, timeout=120, env=clean_env())
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["seq"] == 2
    finally:
        first.kill()  # SIGKILL: no final snapshot; the ones above must do

    out = subprocess.run([sys.executable, "-m", "rtindex", "restore", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=120, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert "snapshot 2 verified" in out.stdout and "4,500 items" in out.stdout

    second = ServerProcess(log, *flags)  # no --dim: the snapshot says what the index is
    try:
        with IndexClient(second.target, timeout=60) as client:
            client.wait_until_serving(60)
            after = client.search(sift5k.queries, k=10, ef=64)
            assert client.stats()["restored_from_seq"] == 2
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_array_equal(before.scores, after.scores)
        assert second.terminate() == 0  # SIGTERM: drain, then a final snapshot
    finally:
        if second.proc.poll() is None:
            second.kill()
    assert SnapshotStore(data).sequence_numbers() == [1, 2, 3]
    assert any(e.get("msg") == "restored" and e.get("seq") == 2 for e in second.events())
