"""Start-up from a data directory: the newest valid snapshot becomes the index, and the
Kafka offsets it reflects become the consumer's starting point."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rtindex.core.index import Index
from rtindex.snapshots.store import Progress, SnapshotInfo, SnapshotStore

log = logging.getLogger("rtindex.snapshots")

RUNTIME_SETTINGS = ("threads", "ef_search", "device")  # taken from the server's settings, not the snapshot


@dataclass
class Restored:
    index: Index
    info: SnapshotInfo
    seconds: float


def restore_newest(store: SnapshotStore, runtime: dict[str, Any] | None = None, dim: int = 0,
                   progress: Progress | None = None) -> Restored | None:
    """The index of the newest valid snapshot (None if there is none). The index
    settings come from the snapshot; ``runtime`` overrides threads / ef_search; a
    ``dim`` other than 0 must match the snapshot's (ValueError otherwise)."""
    t0 = time.perf_counter()
    loaded = store.load_newest(progress)
    if loaded is None:
        return None
    state, info = loaded
    if dim and dim != state.config["dim"]:
        raise ValueError(
            f"--dim {dim} does not match the index in {store.data_dir} (dim {state.config['dim']}, snapshot "
            f"{info.seq}); drop --dim to use the snapshot, or point --data-dir at another directory")
    state.config.update({k: v for k, v in (runtime or {}).items() if k in RUNTIME_SETTINGS})
    index = Index.from_state(state)
    seconds = time.perf_counter() - t0
    log.info("restored", extra={"seq": info.seq, "items": len(index), "seconds": round(seconds, 3),
                                "path": str(info.path)})
    return Restored(index, info, seconds)


def kafka_start_offsets(info: SnapshotInfo | None, topic: str) -> dict[int, int]:
    """Partition -> next offset to apply, from a snapshot's capture (empty: replay the
    topic from its beginning, which is right for an index that starts empty)."""
    if info is None:
        return {}
    kafka = info.extra.get("kafka") or {}
    if kafka.get("topic") != topic:
        if kafka:
            log.warning("snapshot offsets are for another topic; replaying from the beginning",
                        extra={"snapshot_topic": kafka.get("topic"), "topic": topic})
        return {}
    return {int(p): int(o) for p, o in kafka.get("offsets", {}).items()}
