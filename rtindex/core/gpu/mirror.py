"""Device mirror of the tables a GPU search reads.

The host tables (``GraphStore``) stay authoritative. The mirror holds CuPy copies of
the columns of the storage schema that have dirty sets (``MIRRORED``): of the node table
(float32 rows, the float16 copy when traversal_precision="float16", links0, node_state,
node_level, node_upper, node_item), the upper-level rows (upper_links, upper_next), the
items' external ids; and the entry points. Capacities
grow by doubling (at least to the host's), copying device to device. After each applied
write batch ``sync`` sends the dirty rows (``DirtyRows``) of every table in one packed
host-to-device copy and one ``scatter_rows`` launch (kernels/mirror_scatter.cu); nothing
is re-uploaded in full except at start-up or restore (``upload_all``).

Everything runs on the mirror's own stream, which the searches use too: a search
enqueued after a sync sees all of it, one enqueued before sees none of it (no torn
batches), and the device state a search reads is always a whole write batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtindex.core.gpu.nvrtc import OPTIONS, read_source
from rtindex.core.storage import COLUMNS, TABLES, Column, table_capacity
from rtindex.kernels.layout import GraphTables

# the arrays a GPU search reads, from the storage schema: each with its table, fill value
# and the dirty sets that feed it (its synced_by)
MIRRORED: dict[str, Column] = {name: column for name, column in COLUMNS.items() if column.synced_by}
# a table's device capacity is the row count of its first mirrored array
_CAPACITY_ARRAY = {table: next(name for name, c in MIRRORED.items() if c.table == table) for table in TABLES}
_ALIGN = 16


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass
class SyncStats:
    syncs: int = 0
    full_uploads: int = 0
    grows: int = 0
    rows: int = 0  # rows moved by syncs, all tables together
    bytes: int = 0  # bytes moved by syncs (packed buffer: indices, rows, job table)
    seconds: float = 0.0
    last_rows: int = 0
    last_bytes: int = 0
    last_seconds: float = 0.0
    last_rows_by_array: dict[str, int] | None = None


class DeviceMirror:
    def __init__(self, half: bool) -> None:
        import cupy

        self._cp = cupy
        self.half = half
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.arrays: dict[str, Any] = {}
        self.stats = SyncStats()
        module = cupy.RawModule(code=read_source("mirror_scatter.cu"), options=OPTIONS)
        self._scatter = module.get_function("scatter_rows")
        self._pinned: np.ndarray | None = None
        self._packed: Any = None

    # ------------------------------------------------------------------ capacity
    def capacity(self, table: str) -> int:
        name = _CAPACITY_ARRAY[table]
        return int(self.arrays[name].shape[0]) if name in self.arrays else 0

    def _ensure_capacity(self, tables: GraphTables) -> None:
        """Grow device tables to at least the host's capacities, by doubling."""
        cp = self._cp
        for table in TABLES:
            host_cap = table_capacity(tables, table)
            current = self.capacity(table)
            if host_cap <= current:
                continue
            new_cap = max(host_cap, 2 * current)
            for name, column in MIRRORED.items():
                if column.table != table:
                    continue
                old = self.arrays[name]
                grown = cp.full((new_cap, *old.shape[1:]), column.fill, dtype=old.dtype)
                grown[: old.shape[0]] = old  # device to device
                self.arrays[name] = grown
            self.stats.grows += 1

    # ------------------------------------------------------------------ transfers
    def upload_all(self, tables: GraphTables) -> None:
        """Full copy of the host tables (start-up, restore)."""
        cp = self._cp
        with self.stream:
            for name in MIRRORED:
                host = getattr(tables, name)
                if name == "vectors16" and not self.half:
                    host = host[:, :0]
                self.arrays[name] = cp.asarray(np.ascontiguousarray(host))
            self.arrays["entry_node"] = cp.asarray(tables.entry_node)
        self.stream.synchronize()
        self.stats.full_uploads += 1

    def sync(self, tables: GraphTables, dirty: dict[str, np.ndarray]) -> None:
        """Send the dirty rows of every mirrored array (one copy, one launch)."""
        t0 = time.perf_counter()
        cp = self._cp
        with self.stream:
            self._ensure_capacity(tables)
            jobs: list[tuple[Any, np.ndarray, np.ndarray]] = []
            by_array: dict[str, int] = {}
            for name, column in MIRRORED.items():
                sources = column.synced_by
                device = self.arrays[name]
                if device.ndim == 2 and device.shape[1] == 0:
                    continue
                parts = [dirty[s] for s in sources if len(dirty.get(s, ()))]
                if not parts:
                    continue
                rows = parts[0] if len(parts) == 1 else np.union1d(*parts) if len(parts) == 2 else np.unique(
                    np.concatenate(parts))
                host = getattr(tables, name)
                jobs.append((device, rows.astype(np.int32), np.ascontiguousarray(host[rows])))
                by_array[name] = len(rows)
            entry = tables.entry_node
            if self.arrays["entry_node"].shape[0] != entry.shape[0]:
                self.arrays["entry_node"] = cp.asarray(entry)
            else:
                jobs.append((self.arrays["entry_node"], np.arange(len(entry), dtype=np.int32), entry.copy()))
            total = self._pack(jobs)
            blocks = max(1, min(4096, max(r.nbytes for _, _, r in jobs) // (4 * 256) + 1))
            self._scatter((blocks, len(jobs)), (256,), (self._packed, np.int32(len(jobs))))
        self.stream.synchronize()
        seconds = time.perf_counter() - t0
        s = self.stats
        n_rows = sum(len(i) for _, i, _ in jobs)
        s.syncs += 1
        s.rows += n_rows
        s.bytes += total
        s.seconds += seconds
        s.last_rows, s.last_bytes, s.last_seconds, s.last_rows_by_array = n_rows, total, seconds, by_array

    def _pack(self, jobs: list[tuple[Any, np.ndarray, np.ndarray]]) -> int:
        """Job table + indices + rows in one pinned buffer, copied to the device."""
        import cupyx

        header = _aligned(32 * len(jobs))
        sizes = [_aligned(idx.nbytes) + _aligned(rows.nbytes) for _, idx, rows in jobs]
        total = header + sum(sizes)
        if self._pinned is None or self._pinned.nbytes < total:
            capacity = max(total, 2 * (0 if self._pinned is None else self._pinned.nbytes), 1 << 20)
            self._pinned = cupyx.empty_pinned(capacity, np.uint8)
            self._packed = self._cp.empty(capacity, np.uint8)
        buf = self._pinned
        table = np.zeros((len(jobs), 4), np.int64)
        offset = header
        for j, ((device, idx, rows), size) in enumerate(zip(jobs, sizes, strict=True)):
            row_bytes = rows.nbytes // max(1, len(idx))
            table[j] = (device.data.ptr, row_bytes, len(idx), offset)
            buf[offset : offset + idx.nbytes] = idx.view(np.uint8)
            start = offset + _aligned(idx.nbytes)
            buf[start : start + rows.nbytes] = rows.reshape(-1).view(np.uint8)
            offset += size
        buf[: table.nbytes] = table.view(np.uint8).reshape(-1)
        self._packed[:total].set(buf[:total], stream=self.stream)
        return total

    # ------------------------------------------------------------------ reads
    def gather_rows(self, nodes: Any) -> Any:
        """float32[n, dim] device rows of ``nodes`` (a CuPy int array): the candidates a
        neural scorer receives on the device."""
        with self.stream:
            return self.arrays["vectors"][nodes]

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values())) + (0 if self._packed is None else self._packed.nbytes)

    def report(self) -> dict[str, Any]:
        s = self.stats
        out = {
            "gpu_mirror_bytes": self.nbytes(),
            "gpu_node_capacity": self.capacity("node"),
            "gpu_upper_capacity": self.capacity("upper"),
            "gpu_item_capacity": self.capacity("item"),
            "gpu_syncs": s.syncs,
            "gpu_full_uploads": s.full_uploads,
            "gpu_grows": s.grows,
            "gpu_sync_rows_total": s.rows,
            "gpu_sync_bytes_total": s.bytes,
            "gpu_sync_seconds_total": round(s.seconds, 6),
            "gpu_sync_last_rows": s.last_rows,
            "gpu_sync_last_bytes": s.last_bytes,
            "gpu_sync_last_ms": round(1e3 * s.last_seconds, 3),
        }
        for name, n in (s.last_rows_by_array or {}).items():
            out[f"gpu_sync_last_rows_{name}"] = n
        return out

