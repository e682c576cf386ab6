"""The write-ahead log of the server's durable writes (gRPC's; Kafka is its own log).

A write is appended and fsynced before it is applied and acknowledged (the writer
appends all durable writes of a batch at once: one fsync per batch, group commit), so
an acknowledged write survives ``kill -9``. At start-up the records a snapshot does not
cover (sequence number above its ``wal.seq``) are replayed on top of it; once every
snapshot kept covers a segment, the segment is removed.

Layout: ``<data_dir>/wal/<first seq, 20 digits>.wal`` segment files, each a run of
records; a new segment starts after ``segment_bytes`` and at each start of the server
(an old segment is never appended to). A record is a header ``<IIQI`` (magic, payload
length, sequence number, CRC-32 of sequence number and payload) and the payload
(``encode_record``). A crash while appending leaves a torn record at the end of the
newest segment: it was never acknowledged, so it is dropped (the file is cut there).
A bad record followed by a good one is damage, not a crash: opening refuses the log.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rtindex.core.categories import ItemCategories
from rtindex.core.writer import Writer, WriteRecord
from rtindex.snapshots.store import SnapshotError, SnapshotInfo, SnapshotStore, fsync_dir

log = logging.getLogger("rtindex.wal")

MAGIC = 0x4C415752  # b"RWAL" little-endian
HEADER = struct.Struct("<IIQI")  # magic, payload bytes, seq, crc32(seq + payload)
PAYLOAD = struct.Struct("<BBxxII")  # kind, flags, n, dim
KINDS = {"upsert": 1, "delete": 2, "taxonomy": 3}
KIND_NAMES = {code: name for name, code in KINDS.items()}
HAS_VERSIONS, HAS_CATEGORIES = 1, 2
SUFFIX = ".wal"
SEGMENT_BYTES = 64 << 20


class WalCorrupted(Exception):
    """The log is damaged where a crash cannot have damaged it (the message says where
    and what to do)."""


class WalMetrics(Protocol):
    """What the log reports to (the server's metrics registry)."""

    def observe_append(self, nbytes: int, fsync_seconds: float, records: int) -> None: ...

    def observe_replay(self, records: int) -> None: ...

    def set_size(self, nbytes: int) -> None: ...


@dataclass
class WalStats:
    records: int = 0  # appended since start
    bytes: int = 0  # appended since start
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    dropped_tail_bytes: int = 0  # of a torn record cut at start-up
    segments_removed: int = 0


# ---------------------------------------------------------------------- records
def encode_record(record: WriteRecord) -> bytes:
    """The payload of one record: kind, flags, n, dim, then the arrays little-endian:
    ids int64[n], versions int64[n] if any; upserts: rows float32[n, dim], categories
    (offsets int64[n + 1], values int64[m]) if any; taxonomy: parents int64[n]."""
    ids = np.ascontiguousarray(record.ids, "<i8")
    n, dim = len(ids), 0
    flags = 0
    parts = [ids.tobytes()]
    if record.versions is not None:
        flags |= HAS_VERSIONS
        parts.append(np.ascontiguousarray(record.versions, "<i8").tobytes())
    if record.kind == "upsert":
        assert record.rows is not None
        dim = record.rows.shape[1]
        parts.append(np.ascontiguousarray(record.rows, "<f4").tobytes())
        if record.categories is not None:
            flags |= HAS_CATEGORIES
            parts.append(np.ascontiguousarray(record.categories.offsets, "<i8").tobytes())
            parts.append(np.ascontiguousarray(record.categories.values, "<i8").tobytes())
    elif record.kind == "taxonomy":
        assert record.parents is not None
        parts.append(np.ascontiguousarray(record.parents, "<i8").tobytes())
    return PAYLOAD.pack(KINDS[record.kind], flags, n, dim) + b"".join(parts)


def decode_record(payload: bytes | memoryview) -> WriteRecord:
    """``encode_record`` reversed (arrays are read-only views of ``payload``). Raises
    ValueError on a payload that does not add up."""
    kind_code, flags, n, dim = PAYLOAD.unpack_from(payload, 0)
    kind = KIND_NAMES.get(kind_code)
    if kind is None:
        raise ValueError(f"unknown record kind {kind_code}")
    at = PAYLOAD.size

    def take(count: int, dtype: str) -> np.ndarray:
        nonlocal at
        size = count * np.dtype(dtype).itemsize
        if at + size > len(payload):
            raise ValueError(f"record too short: {len(payload)} bytes")
        out = np.frombuffer(payload, dtype, count, at)
        at += size
        return out

    ids = take(n, "<i8")
    versions = take(n, "<i8") if flags & HAS_VERSIONS else None
    record = WriteRecord(kind, ids, versions=versions)
    if kind == "upsert":
        record.rows = take(n * dim, "<f4").reshape(n, dim)
        if flags & HAS_CATEGORIES:
            offsets = take(n + 1, "<i8")
            record.categories = ItemCategories(offsets, take(int(offsets[-1]), "<i8"))
    elif kind == "taxonomy":
        record.parents = take(n, "<i8")
    if at != len(payload):
        raise ValueError(f"record has {len(payload) - at} bytes too many")
    return record


def _crc(seq: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(seq.to_bytes(8, "little"))) & 0xFFFFFFFF


def frame(seq: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), seq, _crc(seq, payload)) + payload


def _records_in(data: bytes, start: int = 0) -> Iterator[tuple[int, int, memoryview]]:
    """(offset, seq, payload) of each intact record from ``start`` on, until the first
    one that is not (end of data, torn or damaged)."""
    view = memoryview(data)
    at = start
    while at + HEADER.size <= len(data):
        magic, size, seq, crc = HEADER.unpack_from(data, at)
        end = at + HEADER.size + size
        if magic != MAGIC or end > len(data):
            return
        payload = view[at + HEADER.size : end]
        if _crc(seq, payload) != crc:
            return
        yield at, seq, payload
        at = end


def _intact_end(data: bytes) -> tuple[int, int | None]:
    """(bytes of intact records from the start, the last intact seq or None)."""
    end, last = 0, None
    for at, seq, payload in _records_in(data):
        end, last = at + HEADER.size + len(payload), seq
    return end, last


def _intact_record_after(data: bytes, start: int) -> int | None:
    """Offset of an intact record somewhere after ``start`` (damage, not a torn tail),
    or None."""
    magic = MAGIC.to_bytes(4, "little")
    at = data.find(magic, start + 1)
    while at >= 0:
        if next(_records_in(data, at), None) is not None:
            return at
        at = data.find(magic, at + 1)
    return None


@dataclass
class _Segment:
    first_seq: int
    path: Path


class WriteAheadLog:
    """The log of one data directory (``<data_dir>/wal``). Opening checks every segment,
    cuts a torn tail off the newest and refuses damage (``WalCorrupted``). ``covered``:
    the sequence number the loaded snapshot covers; new records are numbered past it
    and past every record in the log. One appender at a time (the server's writer)."""

    def __init__(self, directory: str | Path, covered: int = 0, segment_bytes: int = SEGMENT_BYTES,
                 metrics: WalMetrics | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.metrics = metrics
        self.stats = WalStats()
        self._segments = self._list()
        self.last_seq = self._check()
        self.first_seq = self._segments[0].first_seq if self._segments else self.last_seq + 1
        if self._segments and covered + 1 < self.first_seq:
            log.error("write-ahead log starts after the snapshot: acknowledged writes between them are lost", extra={
                "snapshot_covers": covered, "log_starts_at": self.first_seq, "directory": str(self.directory),
                "why": "the snapshots that covered them are gone or unusable (see the restore log lines)"})
        self.next_seq = max(self.last_seq, covered) + 1
        self._fd: int | None = None
        self._fd_bytes = 0
        self._report_size()

    # ------------------------------------------------------------------ opening
    def _list(self) -> list[_Segment]:
        segments = []
        for path in self.directory.iterdir():
            if path.suffix == SUFFIX and path.stem.isdigit():
                segments.append(_Segment(int(path.stem), path))
        return sorted(segments, key=lambda s: s.first_seq)

    def _check(self) -> int:
        """Every record intact, in order; the newest segment's torn tail cut. Returns
        the last sequence number in the log (0 if none)."""
        last = 0
        for i, segment in enumerate(self._segments):
            data = segment.path.read_bytes()
            end, seg_last = _intact_end(data)
            if end < len(data):
                damage = _intact_record_after(data, end)
                if damage is not None or i < len(self._segments) - 1:
                    raise WalCorrupted(
                        f"write-ahead log segment {segment.path} is damaged at byte {end} (of {len(data)}) with "
                        f"{'intact records after it' if damage is not None else 'newer segments after it'}: not a "
                        "torn write of a crash. Restore the data directory from a backup, or move the segment away "
                        "to start without the records in it (acknowledged writes are then lost)")
                self._cut(segment.path, end, len(data))
            if seg_last is not None:
                if seg_last < segment.first_seq or (last and segment.first_seq <= last):
                    raise WalCorrupted(f"write-ahead log segment {segment.path} holds records out of order (up to "
                                       f"{seg_last}; the previous segment ends at {last}); move the misplaced file "
                                       "away or restore the data directory from a backup")
                last = seg_last
        return last

    def _cut(self, path: Path, end: int, size: int) -> None:
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        self.stats.dropped_tail_bytes += size - end
        log.warning("write-ahead log: torn record at the end dropped (a write cut short by a crash, never "
                    "acknowledged)", extra={"segment": str(path), "bytes_dropped": size - end})

    # ------------------------------------------------------------------ reading
    def records(self, after: int = 0) -> Iterator[tuple[int, WriteRecord]]:
        """(seq, record) of every record numbered above ``after``, in order."""
        for i, segment in enumerate(self._segments):
            following = self._segments[i + 1].first_seq if i + 1 < len(self._segments) else None
            if following is not None and following <= after + 1:
                continue  # every record of it is covered
            data = segment.path.read_bytes()
            for _, seq, payload in _records_in(data):
                if seq > after:
                    try:
                        yield seq, decode_record(payload)
                    except ValueError as exc:  # intact checksum, impossible content: written by another version
                        raise WalCorrupted(f"write-ahead log record {seq} in {segment.path} cannot be read "
                                           f"({exc}); was it written by another rtindex version?") from None

    # ------------------------------------------------------------------ appending
    def append(self, records: Sequence[WriteRecord]) -> list[int]:
        """Write ``records`` (one write, one fsync); returns their sequence numbers.
        Raises OSError when the disk refuses (nothing may be acknowledged then)."""
        seqs = list(range(self.next_seq, self.next_seq + len(records)))
        buffer = b"".join(frame(seq, encode_record(r)) for seq, r in zip(seqs, records, strict=True))
        if self._fd is None or self._fd_bytes >= self.segment_bytes:
            self._roll(seqs[0])
        assert self._fd is not None
        try:
            view = memoryview(buffer)
            while view:
                view = view[os.write(self._fd, view) :]
            t0 = time.perf_counter()
            os.fdatasync(self._fd)
            seconds = time.perf_counter() - t0
        except OSError:
            # what was written may be partial: start over in a fresh segment (opening cuts
            # this one's torn tail) so that later records are not written after damage
            self._close_segment()
            raise
        self.next_seq = seqs[-1] + 1
        self.last_seq = seqs[-1]
        self._fd_bytes += len(buffer)
        self.stats.records += len(records)
        self.stats.bytes += len(buffer)
        self.stats.fsyncs += 1
        self.stats.fsync_seconds += seconds
        if self.metrics is not None:
            self.metrics.observe_append(len(buffer), seconds, len(records))
            self.metrics.set_size(self.size_bytes())
        return seqs

    def _roll(self, first_seq: int) -> None:
        self._close_segment()
        path = self.directory / f"{first_seq:020d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fd_bytes = 0
        fsync_dir(self.directory)  # the new file's name is durable too
        self._segments.append(_Segment(first_seq, path))

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ truncating
    def truncate_through(self, seq: int) -> int:
        """Remove the segments whose every record is numbered ``seq`` or below (a
        snapshot covers them). Returns how many were removed."""
        removed = 0
        while self._segments:
            segment = self._segments[0]
            following = self._segments[1].first_seq if len(self._segments) > 1 else None
            last = following - 1 if following is not None else self.last_seq
            if last > seq or (following is None and self.next_seq <= segment.first_seq):
                break  # holds records not covered yet (or is the fresh, empty one)
            if following is None:
                self._close_segment()  # the open segment: the next append starts a new one
            segment.path.unlink(missing_ok=True)
            self._segments.pop(0)
            removed += 1
        if removed:
            fsync_dir(self.directory)
            self.first_seq = self._segments[0].first_seq if self._segments else self.next_seq
            self.stats.segments_removed += removed
            log.info("write-ahead log truncated", extra={"covered_through": seq, "segments_removed": removed})
        self._report_size()
        return removed

    def size_bytes(self) -> int:
        return sum(s.path.stat().st_size for s in self._segments if s.path.exists())

    def _report_size(self) -> None:
        if self.metrics is not None:
            self.metrics.set_size(self.size_bytes())

    def close(self) -> None:
        self._close_segment()


# ---------------------------------------------------------------------- with snapshots
def covered_by(info: SnapshotInfo | None) -> int:
    """The last log record a snapshot's state holds (0: none, or no snapshot)."""
    return int((info.extra.get("wal") or {}).get("seq", 0)) if info is not None else 0


def covered_by_every_kept(store: SnapshotStore) -> int:
    """The last record every usable snapshot in ``store`` holds: what the log may drop
    (a restore falls back to an older snapshot when a newer one is damaged, and then
    needs the records after it)."""
    covered = []
    for seq in store.sequence_numbers():
        try:
            covered.append(covered_by(store.info(seq)))
        except SnapshotError:
            continue  # unusable: never restored from
    return min(covered, default=0)


def replay(wal: WriteAheadLog, writer: Writer, after: int) -> tuple[int, int]:
    """Apply the records numbered above ``after`` through ``writer`` (which merges them
    into batches as it does live writes) and wait for them. A record the index rejects
    was rejected when it was sent too (the client got the error): skipped. Returns
    (records applied, records rejected)."""
    t0 = time.perf_counter()
    futures = [writer.replay(seq, record) for seq, record in wal.records(after)]
    rejected = 0
    for future in futures:
        if future.exception() is not None:
            rejected += 1
    if wal.metrics is not None:
        wal.metrics.observe_replay(len(futures))
    if futures:
        log.info("write-ahead log replayed", extra={"records": len(futures), "rejected": rejected, "after": after,
                                                    "seconds": round(time.perf_counter() - t0, 3)})
    return len(futures) - rejected, rejected
