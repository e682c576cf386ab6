"""Launcher of the GPU search (kernels/hnsw_search.cu): a batch of queries, one warp
per query, as many queries per launch as the visited bitmaps' memory budget allows.

Per concurrent query ("slot") the device holds a visited bitmap (one bit per node
slot; the kernel clears the bits it set after each layer, O(touched)), a list of the
nodes it marked, and, when the per-query heaps do not fit in shared memory, their
scratch in global memory. Slots are reused launch after launch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtindex.core.gpu.mirror import DeviceMirror
from rtindex.core.gpu.nvrtc import OPTIONS, read_source
from rtindex.core.results import SearchResult

SHARED_LIMIT = 48 * 1024  # dynamic shared memory usable without an opt-in attribute
WARPS_PER_BLOCK = (4, 2, 1)


def scratch_words(dim: int, beam: int, cand_cap: int, max_degree0: int, k: int) -> int:
    """Per-query scratch in 4-byte words; the layout is documented in hnsw_search.cu."""
    return dim + 2 * cand_cap + 4 * beam + 2 * max_degree0 + k


class GpuSearcher:
    def __init__(self, mirror: DeviceMirror, dim: int, metric: int, max_degree0: int,
                 budget_bytes: int = 1 << 30) -> None:
        import cupy

        self._cp = cupy
        self.mirror = mirror
        self.dim = dim
        self.metric = metric
        self.max_degree0 = max_degree0
        self.budget_bytes = budget_bytes  # visited bitmaps + touched lists + global scratch
        module = cupy.RawModule(code=read_source("hnsw_search.cu"), options=OPTIONS)
        self._kernel = module.get_function("hnsw_search")
        self._gather = module.get_function("gather_rows")
        self._visited: Any = None
        self._touched: Any = None
        self._scratch: Any = None
        self.launches = 0
        self.queries = 0

    def _buffers(self, slots: int, words: int, touched_cap: int, scratch: int) -> tuple[Any, Any, Any]:
        cp = self._cp
        if self._visited is None or self._visited.shape != (slots, words):
            self._visited = cp.zeros((slots, words), np.uint32)  # the kernel leaves it zeroed
        if self._touched is None or self._touched.shape != (slots, touched_cap):
            self._touched = cp.empty((slots, touched_cap), np.int32)
        if scratch and (self._scratch is None or self._scratch.size < slots * scratch):
            self._scratch = cp.empty(slots * scratch, np.float32)
        return self._visited, self._touched, self._scratch if scratch else self._touched

    def search(self, queries: np.ndarray, k: int, ef: int, level_widths: np.ndarray, beam: int,
               graph: int = 0) -> SearchResult:
        """Same contract as rtindex.core.search.search_batch (queries float32[b, dim],
        already validated; results int64 / float32 [b, k], per-query stats)."""
        cp = self._cp
        m = self.mirror
        a = m.arrays
        b = queries.shape[0]
        n_nodes = int(a["links0"].shape[0])
        words = (n_nodes + 31) // 32
        cand_cap = 2 * beam + 2 * self.max_degree0 + 16
        touched_cap = int(min(words * 32, max(4096, 64 * beam)))
        per_warp = scratch_words(self.dim, beam, cand_cap, self.max_degree0, k)
        warps = next((w for w in WARPS_PER_BLOCK if w * per_warp * 4 <= SHARED_LIMIT), 0)
        use_shared = warps > 0
        warps = warps or 1
        per_slot = 4 * words + 4 * touched_cap + (0 if use_shared else 4 * per_warp)
        slots = int(max(1, min(b, self.budget_bytes // per_slot, 65536)))
        visited, touched, scratch = self._buffers(slots, words, touched_cap, 0 if use_shared else per_warp)
        half = m.half
        vectors16 = a["vectors16"] if half else a["vectors"]  # not read unless half
        with m.stream:
            none = cp.zeros(1, np.int32)  # for the kernel's unused array arguments
            d_queries = cp.asarray(queries)
            d_widths = cp.asarray(level_widths.astype(np.int32))
            out_ids = cp.empty((b, k), np.int64)
            out_scores = cp.empty((b, k), np.float32)
            out_stats = cp.empty((b, 2), np.int64)
            for lo in range(0, b, slots):
                n = min(slots, b - lo)
                grid = ((n + warps - 1) // warps,)
                self._kernel(
                    grid, (32 * warps,),
                    (
                        a["vectors"], vectors16, a["links0"], np.int32(a["links0"].shape[1]),
                        a["upper_links"], np.int32(a["upper_links"].shape[1]), a["upper_next"],
                        a["node_upper"], a["node_level"], a["node_state"], a["node_item"], a["item_ids"],
                        a["entry_node"], np.int32(n_nodes), np.int32(a["entry_node"].shape[0]),
                        none, np.int32(0), np.int32(a["vectors"].shape[0]),  # rows: the node's own
                        np.int32(self.dim), np.int32(self.metric), np.int32(1 if half else 0),
                        d_queries[lo : lo + n], np.int32(n), np.int32(graph), np.int32(k), np.int32(ef),
                        np.int32(0), none, none, none, none, np.int32(0),  # no lanes: one query per warp
                        d_widths, np.int32(len(level_widths)), np.int32(beam), np.int32(cand_cap),
                        visited, np.int64(words), touched, np.int32(touched_cap),
                        scratch, np.int32(per_warp), np.int32(1 if use_shared else 0),
                        out_ids[lo : lo + n], out_scores[lo : lo + n], out_stats[lo : lo + n],
                    ),
                    shared_mem=(warps * per_warp * 4) if use_shared else 0,
                )
                self.launches += 1
            ids, scores, stats = out_ids.get(), out_scores.get(), out_stats.get()
        self.queries += b
        return SearchResult(ids=ids, scores=scores, hops=stats[:, 0], evaluations=stats[:, 1])

    def candidate_rows(self, nodes: Any) -> Any:
        """float32[n, dim] rows of ``nodes`` (CuPy int32[n]) gathered on the device by one
        launch: what a neural scorer scores.

        Hook for TensorFlow scorers (not wired into the lock-step search yet): hand the
        array to TF without a host copy through DLPack,
        ``tf.experimental.dlpack.from_dlpack(rows.toDlpack())``, and take TF's scores back
        with ``cupy.from_dlpack(tf.experimental.dlpack.to_dlpack(scores))``. Both sides
        must use the same device; synchronize ``mirror.stream`` before TF reads."""
        cp = self._cp
        nodes = cp.ascontiguousarray(nodes, dtype=np.int32)
        with self.mirror.stream:
            out = cp.empty((nodes.shape[0], self.dim), np.float32)
            total = nodes.shape[0] * self.dim
            if total:
                blocks = min(4096, (total + 255) // 256)
                self._gather((blocks,), (256,), (self.mirror.arrays["vectors"], np.int32(self.dim), nodes,
                                                 np.int32(nodes.shape[0]), out))
        return out

    def nbytes(self) -> int:
        return sum(int(x.nbytes) for x in (self._visited, self._touched, self._scratch) if x is not None)
