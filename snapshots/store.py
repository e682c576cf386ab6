"""Snapshots of an index on disk: one RocksDB database (rocksdict) per snapshot, a
manifest with checksums written last.

Layout of a data directory::

    D/LOCK                       held (flock) by the one process that writes snapshots here
    D/snapshots/000042/          a RocksDB database: the arrays of an ``IndexState`` in
                                 chunks (key ``a/<name>/<chunk>``) and its JSON parts
                                 (``config``, ``meta``, ``extra``)
    D/snapshots/000042/RTINDEX-MANIFEST.json   written last, atomically (tmp + fsync +
                                 rename): dtype, shape and the CRC-32 of every chunk, and
                                 a CRC-32 of the manifest itself

A directory without a manifest (a writer died half-way) is never loaded. Loading checks
every chunk against the manifest; a snapshot that fails (truncated file, flipped bytes,
RocksDB refusing to open it) is logged and the previous valid one is used instead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rocksdict import AccessType, DBCompressionType, Options, Rdict, WriteOptions

from rtindex.core.results import IndexState

log = logging.getLogger("rtindex.snapshots")

MANIFEST = "RTINDEX-MANIFEST.json"
FORMAT = 1
CHUNK_BYTES = 4 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class SnapshotError(Exception):
    """A snapshot cannot be used: missing, partial or corrupted (the message says which and why)."""


@dataclass(frozen=True)
class SnapshotInfo:
    seq: int
    path: Path
    created: float  # unix time
    items: int
    bytes: int  # size on disk
    pause_seconds: float  # how long writes waited while the state was copied
    write_seconds: float  # copy to disk, checksums, flush
    extra: dict[str, Any]  # what was captured with the state (e.g. Kafka offsets)


def _options(create: bool) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.set_compression_type(DBCompressionType.none())  # embeddings do not compress
    opts.set_write_buffer_size(64 << 20)
    return opts


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """The snapshots of one data directory: write (keeping the last ``keep``), list,
    load the newest valid one, verify."""

    def __init__(self, data_dir: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"snapshot keep must be >= 1, got {keep}")
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "snapshots"
        self.keep = keep
        self._lock_file: Any = None

    # ------------------------------------------------------------------ ownership
    def lock(self) -> None:
        """Take the data directory for this process (two writers would overwrite each
        other's snapshots). Raises RuntimeError naming the problem when it is taken."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.data_dir / "LOCK", "a+")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(
                f"data directory {self.data_dir} is in use by another rtindex process; give each server its own "
                "--data-dir (a standby takes a copy of it)") from None
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ------------------------------------------------------------------ listing
    def sequence_numbers(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    def path_of(self, seq: int) -> Path:
        return self.root / f"{seq:06d}"

    def manifest(self, seq: int) -> dict[str, Any]:
        """The manifest of snapshot ``seq``; SnapshotError if it is missing or damaged."""
        path = self.path_of(seq) / MANIFEST
        try:
            doc = json.loads(path.read_text())
            body = doc["body"]
        except FileNotFoundError:
            raise SnapshotError(f"snapshot {seq} has no manifest: it was not finished (partial write)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"snapshot {seq}: manifest {path} is unreadable ({exc})") from None
        if _crc(json.dumps(body, sort_keys=True).encode()) != doc.get("crc32"):
            raise SnapshotError(f"snapshot {seq}: manifest checksum mismatch ({path} was altered or damaged)")
        if body.get("format") != FORMAT:
            raise SnapshotError(f"snapshot {seq}: format {body.get('format')} is not {FORMAT} (written by another "
                                "rtindex version)")
        return body

    def info(self, seq: int) -> SnapshotInfo:
        body = self.manifest(seq)
        return SnapshotInfo(seq=seq, path=self.path_of(seq), created=body["created"], items=body["items"],
                            bytes=body["bytes"], pause_seconds=body["pause_seconds"],
                            write_seconds=body["write_seconds"], extra=body["extra"])

    # ------------------------------------------------------------------ write
    def write(self, state: IndexState, progress: Progress | None = None) -> SnapshotInfo:
        """Write ``state`` as the next snapshot, then drop all but the last ``keep``."""
        seq = (self.sequence_numbers() or [0])[-1] + 1
        path = self.path_of(seq)
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        total = sum(a.nbytes for a in state.arrays.values())
        done = 0
        arrays: dict[str, Any] = {}
        db = Rdict(str(path), _options(create=True))
        try:
            write_opts = WriteOptions()
            write_opts.disable_wal = True  # the flush below persists everything before the manifest
            db.set_write_options(write_opts)
            for name, array in state.arrays.items():
                data = memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B")  # 1-D: a table may have 0 rows
                chunks = []
                for i, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                    piece = bytes(data[start : start + CHUNK_BYTES])
                    chunks.append(_crc(piece))
                    db[f"a/{name}/{i:08d}".encode()] = piece
                    done += len(piece)
                    if progress is not None:
                        progress(done, total)
                arrays[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "chunks": chunks}
            parts = {"config": state.config, "meta": state.meta, "extra": state.extra}
            blobs = {key: json.dumps(value, sort_keys=True).encode() for key, value in parts.items()}
            for key, blob in blobs.items():
                db[key.encode()] = blob
            db.flush(True)
        finally:
            db.close()
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        body = {
            "format": FORMAT, "seq": seq, "created": time.time(), "items": state.meta["items"], "bytes": size,
            "pause_seconds": state.meta["pause_seconds"], "write_seconds": time.perf_counter() - t0,
            "arrays": arrays, "parts": {key: _crc(blob) for key, blob in blobs.items()}, "extra": state.extra,
        }
        self._write_manifest(path, body)
        info = self.info(seq)
        self._prune(seq)
        return info

    def _write_manifest(self, path: Path, body: dict[str, Any]) -> None:
        doc = {"body": body, "crc32": _crc(json.dumps(body, sort_keys=True).encode())}
        tmp = path / (MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / MANIFEST)
        fsync_dir(path)

    def _prune(self, newest: int) -> None:
        """Keep the last ``keep`` valid snapshots; remove older ones and unfinished leftovers."""
        kept = 0
        for seq in reversed(self.sequence_numbers()):
            if seq > newest:
                continue
            valid = (self.path_of(seq) / MANIFEST).exists()
            if valid and kept < self.keep:
                kept += 1
                continue
            shutil.rmtree(self.path_of(seq), ignore_errors=True)
            log.info("snapshot removed", extra={"seq": seq, "reason": "beyond keep" if valid else "unfinished"})

    # ------------------------------------------------------------------ read
    def load(self, seq: int, progress: Progress | None = None) -> tuple[IndexState, SnapshotInfo]:
        """Read snapshot ``seq`` and check every chunk against its manifest."""
        body = self.manifest(seq)
        path = self.path_of(seq)
        total = sum(int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize for spec in body["arrays"].values())
        done = 0
        try:
            db = Rdict(str(path), _options(create=False), access_type=AccessType.read_only())
        except Exception as exc:  # rocksdict raises plain Exception for a damaged database
            raise SnapshotError(f"snapshot {seq}: RocksDB cannot open {path} ({exc})") from None
        try:
            arrays = {}
            for name, spec in body["arrays"].items():
                out = np.empty(spec["shape"], np.dtype(spec["dtype"]))
                view = memoryview(out).cast("B") if out.nbytes else memoryview(b"")
                offset = 0
                for i, expected in enumerate(spec["chunks"]):
                    piece = self._read(db, seq, f"a/{name}/{i:08d}".encode(), expected)
                    view[offset : offset + len(piece)] = piece
                    offset += len(piece)
                if offset != out.nbytes:
                    raise SnapshotError(f"snapshot {seq}: array {name} has {offset} bytes, expected {out.nbytes}")
                arrays[name] = out
                done += out.nbytes
                if progress is not None:
                    progress(done, total)
            parts = {key: json.loads(self._read(db, seq, key.encode(), crc)) for key, crc in body["parts"].items()}
        finally:
            db.close()
        state = IndexState(config=parts["config"], arrays=arrays, meta=parts["meta"], extra=parts["extra"])
        return state, self.info(seq)

    @staticmethod
    def _read(db: Rdict, seq: int, key: bytes, expected_crc: int) -> bytes:
        try:
            value = db.get(key)
        except Exception as exc:  # RocksDB's own block checksums
            raise SnapshotError(f"snapshot {seq}: reading {key.decode()} failed ({exc})") from None
        if value is None:
            raise SnapshotError(f"snapshot {seq}: {key.decode()} is missing")
        if _crc(value) != expected_crc:
            raise SnapshotError(f"snapshot {seq}: checksum mismatch in {key.decode()} (damaged on disk)")
        return value

    def load_newest(self, progress: Progress | None = None) -> tuple[IndexState, SnapshotInfo] | None:
        """The newest snapshot that loads and passes its checksums (older ones are tried
        in turn; each failure is logged). None if there is no usable snapshot."""
        for seq in reversed(self.sequence_numbers()):
            try:
                return self.load(seq, progress)
            except SnapshotError as exc:
                log.error("snapshot unusable, trying the previous one", extra={"seq": seq, "error": str(exc)})
        return None
