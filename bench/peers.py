"""Uniform adapters over rtindex and its peers (hnswlib, faiss HNSW, usearch) so every
benchmark measures each library through the same code. Each adapter uses the library's
documented API the way its users would, with the same M / ef_construction / threads."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from rtindex import Index


@dataclass
class Params:
    dim: int
    metric: str = "ip"  # "ip" (unit vectors) or "l2"
    M: int = 16
    ef_construction: int = 200
    threads: int = 2


class Peer:
    name = "?"
    supports_churn = True

    def build(self, ids: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        raise NotImplementedError

    def search_one(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.search(q[None, :], k, ef)[0]

    def insert(self, ids: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def refresh(self, ids: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def delete(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def memory_bytes(self) -> int:
        raise NotImplementedError


class RtindexPeer(Peer):
    """rtindex with its defaults (float16 traversal, float32 rescoring)."""

    name = "rtindex"
    precision = "float16"

    def __init__(self, p: Params, capacity: int) -> None:
        self.index = Index(
            dim=p.dim, metric=p.metric, M=p.M, ef_construction=p.ef_construction, threads=p.threads,
            traversal_precision=self.precision,
        )

    def build(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.upsert(ids, x)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.index.search(q, k=k, ef=max(ef, k)).ids

    def insert(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.upsert(ids, x)

    refresh = insert

    def delete(self, ids: np.ndarray) -> None:
        self.index.delete(ids)

    def memory_bytes(self) -> int:
        return int(self.index.stats()["memory_bytes"])


class RtindexFloat32Peer(RtindexPeer):
    """rtindex walking the graph on the float32 rows (traversal_precision="float32":
    less memory, the same traffic per row as hnswlib)."""

    name = "rtindex-f32"
    precision = "float32"


class RtindexLockstepPeer(Peer):
    """The same rtindex index searched with the lock-step batch engine (all queries
    advance together, one scorer call per step) instead of per-query kernels."""

    name = "rtindex-lockstep"
    supports_churn = False

    def __init__(self, shared: RtindexPeer) -> None:
        self.index = shared.index

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        return self.index.search(q, k=k, ef=max(ef, k), execution="lockstep").ids

    def memory_bytes(self) -> int:
        return int(self.index.stats()["memory_bytes"])


class HnswlibPeer(Peer):
    """hnswlib with bounded memory under churn: mark_deleted, then inserts reuse deleted
    slots (replace_deleted=True); an existing label is updated in place (updatePoint)."""

    name = "hnswlib"

    def __init__(self, p: Params, capacity: int) -> None:
        import hnswlib

        self.p = p
        self.index = hnswlib.Index(space="ip" if p.metric == "ip" else "l2", dim=p.dim)
        self.index.init_index(max_elements=capacity, M=p.M, ef_construction=p.ef_construction, allow_replace_deleted=True)
        self.index.set_num_threads(p.threads)

    def build(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_items(x, ids, num_threads=self.p.threads)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.set_ef(max(ef, k))
        return self.index.knn_query(q, k, num_threads=self.p.threads)[0].astype(np.int64)

    def search_one(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.set_ef(max(ef, k))
        return self.index.knn_query(q, k, num_threads=1)[0][0]

    def insert(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_items(x, ids, num_threads=self.p.threads, replace_deleted=True)

    def refresh(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_items(x, ids, num_threads=self.p.threads)

    def delete(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.index.mark_deleted(i)

    def memory_bytes(self) -> int:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "h.bin")
            self.index.save_index(path)
            return os.path.getsize(path)


class FaissPeer(Peer):
    """faiss IndexHNSWFlat behind an IndexIDMap. faiss HNSW cannot remove vectors, so it
    takes part in build and search only."""

    name = "faiss-hnsw"
    supports_churn = False

    def __init__(self, p: Params, capacity: int) -> None:
        import faiss

        self.faiss = faiss
        faiss.omp_set_num_threads(p.threads)
        metric = faiss.METRIC_INNER_PRODUCT if p.metric == "ip" else faiss.METRIC_L2
        self.hnsw = faiss.IndexHNSWFlat(p.dim, p.M, metric)
        self.hnsw.hnsw.efConstruction = p.ef_construction
        self.index = faiss.IndexIDMap(self.hnsw)

    def build(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, ids)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.hnsw.hnsw.efSearch = max(ef, k)
        return self.index.search(q, k)[1]

    def search_one(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.hnsw.hnsw.efSearch = max(ef, k)
        threads = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(1)
        try:
            return self.index.search(q[None, :], k)[1][0]
        finally:
            self.faiss.omp_set_num_threads(threads)

    def memory_bytes(self) -> int:
        return int(self.faiss.serialize_index(self.index).nbytes)


class UsearchPeer(Peer):
    """usearch (f32, no quantization, so the comparison is like for like); a refresh is
    remove + add, as its API has no in-place update."""

    name = "usearch"

    def __init__(self, p: Params, capacity: int) -> None:
        from usearch.index import Index as UIndex

        self.p = p
        self.index = UIndex(
            ndim=p.dim, metric="ip" if p.metric == "ip" else "l2sq", dtype="f32",
            connectivity=p.M, expansion_add=p.ef_construction, expansion_search=64,
        )

    def build(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add(ids, x, threads=self.p.threads)

    def search(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = max(ef, k)
        return np.asarray(self.index.search(q, k, threads=self.p.threads).keys, dtype=np.int64)

    def search_one(self, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        self.index.expansion_search = max(ef, k)
        return np.asarray(self.index.search(q, k, threads=1).keys, dtype=np.int64)

    def insert(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add(ids, x, threads=self.p.threads)

    def refresh(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.remove(ids)
        self.index.add(ids, x, threads=self.p.threads)

    def delete(self, ids: np.ndarray) -> None:
        self.index.remove(ids)

    def memory_bytes(self) -> int:
        return int(self.index.memory_usage)


ALL_PEERS = {cls.name: cls for cls in (RtindexPeer, RtindexFloat32Peer, HnswlibPeer, FaissPeer, UsearchPeer)}
