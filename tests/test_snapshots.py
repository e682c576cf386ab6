"""RocksDB snapshots: exact restore, fallback past damaged snapshots, keep-K, snapshots
while searching, the Snapshot RPC and CLI, and restart from a data directory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess, clean_env

from rtindex import Index, datasets
from rtindex.client import FailedPrecondition, IndexClient
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig
from rtindex.snapshots.store import MANIFEST, SnapshotStore


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
    # a stale replay is still refused after the restore
    assert restored.upsert([3], rng.normal(size=(1, 128)).astype(np.float32), versions=[6]).skipped_stale in (0, 1)


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


def test_searches_go_on_while_a_snapshot_is_written(tmp_path: Path) -> None:
    x = datasets.clustered(20_000, 32, clusters=20, seed=4)
    idx = Index(dim=32, metric="ip", M=12, ef_construction=60)
    idx.upsert(np.arange(len(x)), x)
    stop, errors, done = threading.Event(), [], [0]

    def search() -> None:
        try:
            while not stop.is_set():
                res = idx.search(x[:32], k=10, ef=32)
                assert (res.ids >= 0).all()
                done[0] += 1
        except Exception as exc:  # reported below
            errors.append(exc)

    searcher = threading.Thread(target=search)
    searcher.start()
    try:
        store = SnapshotStore(tmp_path)
        before = done[0]
        info = store.write(idx.export_state())
        during = done[0] - before
    finally:
        stop.set()
        searcher.join()
    assert not errors
    assert during > 0  # searches completed while the snapshot was being written
    assert 0 <= info.pause_seconds < info.write_seconds


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
