"""``--snapshot-interval-s``: a server with a data directory writes snapshots by itself,
one per interval, and each of them restores the index it held (README: Snapshots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from waiting import wait_until

from rtindex import Index
from rtindex.client import IndexClient
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig
from rtindex.snapshots.store import SnapshotError, SnapshotStore

DIM = 8
WAIT = 60.0  # seconds the timer may take to write two snapshots before the test fails


def _finished_snapshots(store: SnapshotStore, items: int) -> list[int]:
    """Sequence numbers of snapshots whose manifest is written and holds ``items`` items."""
    out = []
    for seq in store.sequence_numbers():
        try:
            if store.info(seq).items == items:
                out.append(seq)
        except SnapshotError:  # being written (no manifest yet), or just pruned
            continue
    return out


def test_a_server_writes_a_snapshot_every_interval_by_itself_and_each_restores(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32)
    server = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", data_dir=str(tmp_path), snapshot_interval_s=1.0,
                                      snapshot_keep=5, log_level="warning"))
    server.start()
    server.mark_ready()
    store = SnapshotStore(tmp_path, keep=5)  # a reader beside the server; only the server writes
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
            client.upsert(np.arange(300), vectors)
            # nobody asks for one: the timer writes them
            # the manifest lands on disk a moment before the server counts the snapshot: wait for both
            wait_until(lambda: len(_finished_snapshots(store, 300)) >= 2 and client.stats()["snapshots_taken"] >= 2,
                       WAIT, "two periodic snapshots of the items, written and counted")
            # a periodic one (not the final one of the shutdown below) restores the index
            state, _ = store.load(_finished_snapshots(store, 300)[-1])
    finally:
        server.stop(grace=1)
    restored = Index.from_state(state)
    got = restored.get(np.arange(300))
    assert len(restored) == 300 and got.found.all()
    np.testing.assert_array_equal(got.vectors, vectors)
    restored.close()
