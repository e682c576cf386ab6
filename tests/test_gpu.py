"""GPU backend: NVRTC compile check (no GPU needed), backend choice, dirty-row tracking
(checked on the CPU against a full table comparison), and, with a device (marker
``gpu``), GPU search equal to the CPU path, dirty-row syncs and growth by doubling."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from rtindex import Index
from rtindex.core.gpu import GpuUnavailable, probe
from rtindex.core.gpu.dirty import DirtyRows
from rtindex.core.gpu.nvrtc import compile_source, kernel_sources
from rtindex.core.storage import COLUMNS

HAS_GPU = probe()[0] > 0
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason=f"no CUDA device: {probe()[1]}")


def _need_nvrtc() -> None:
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        if os.environ.get("RTINDEX_REQUIRE_NVRTC") == "1":  # scripts/test.sh installs the gpu extra
            raise
        pytest.skip(f"CuPy/NVRTC not installed (pip install 'rtindex[gpu]'): {exc}")


def test_there_are_cuda_sources() -> None:
    names = {p.name for p in kernel_sources()}
    assert {"hnsw_search.cu", "mirror_scatter.cu"} <= names


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", kernel_sources(), ids=lambda p: p.name)
def test_every_cuda_source_compiles_with_nvrtc(source, arch: str) -> None:
    _need_nvrtc()
    cubin = compile_source(source, arch)
    assert len(cubin) > 1000


# ------------------------------------------------------------------ backend choice
def test_invalid_device_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        Index(dim=4, device="tpu")


def test_cpu_device_never_builds_a_mirror() -> None:
    idx = Index(dim=4, device="cpu")
    assert idx.device == "cpu"
    assert idx._engine.gpu is None and idx._engine.dirty is None
    assert idx.stats()["device"] == "cpu"


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(GpuUnavailable, match=r"device='cuda' was requested.*rtindex\[gpu\].*device='auto'"):
        Index(dim=4, device="cuda")


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_auto_without_a_gpu_is_the_cpu_and_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="rtindex.gpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    auto = Index(dim=8, metric="l2", seed=1)
    cpu = Index(dim=8, metric="l2", seed=1, device="cpu")
    for idx in (auto, cpu):
        idx.upsert(np.arange(300), x)
    assert auto.device == "cpu"
    assert any("search backend: cpu" in r.getMessage() for r in caplog.records)
    q = rng.standard_normal((20, 8)).astype(np.float32)
    np.testing.assert_array_equal(auto.search(q, k=5).ids, cpu.search(q, k=5).ids)


def test_snapshots_do_not_store_the_device() -> None:
    idx = Index(dim=4, device="cpu")
    idx.upsert([1], np.ones((1, 4), np.float32))
    assert "device" not in idx.export_state().config


# ------------------------------------------------------------------ dirty rows (CPU)
_TABLE_SETS = {
    "vectors": ("node",), "vectors16": ("node",), "links0": ("node", "links0"), "node_state": ("node", "state"),
    "node_level": ("node",), "node_upper": ("node",), "node_item": ("node",),
    "upper_links": ("upper",), "upper_next": ("upper",), "item_ids": ("item",),
}


_FILL = {name: column.fill for name, column in COLUMNS.items()}


def _snapshot(idx: Index) -> dict[str, np.ndarray]:
    t = idx._engine.store.tables
    return {name: getattr(t, name).copy() for name in _TABLE_SETS}


def _changed_rows(before: np.ndarray, after: np.ndarray, fill: float) -> np.ndarray:
    n = min(len(before), len(after))
    diff = before[:n] != after[:n]
    if diff.ndim > 1:
        diff = diff.reshape(n, -1).any(axis=1)
    changed = list(np.flatnonzero(diff))
    if len(after) > n:  # grown: rows past the old capacity that hold anything but the fill value
        tail = after[n:]
        differs = (tail != fill).reshape(len(tail), -1).any(axis=1)
        changed += list(n + np.flatnonzero(differs))
    return np.array(changed, np.int64)


def _check_covered(idx: Index, before: dict[str, np.ndarray], dirty: dict[str, np.ndarray]) -> int:
    """Every row that differs from ``before`` is in the dirty sets of its array."""
    after = _snapshot(idx)
    total = 0
    for name, sets in _TABLE_SETS.items():
        changed = _changed_rows(before[name], after[name], _FILL[name])
        marked = np.unique(np.concatenate([dirty[s] for s in sets]))
        missing = np.setdiff1d(changed, marked)
        assert len(missing) == 0, f"{name}: rows {missing[:10]} changed but were not reported dirty"
        total += len(marked)
    return total


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_write_paths_report_every_row_they_change(metric: str) -> None:
    """The dirty-row hooks are sound: after each kind of write, a full comparison of the
    mirrored tables finds no changed row that was not reported (so a GPU mirror synced
    from them equals the host), and a small batch reports a small fraction of rows."""
    rng = np.random.default_rng(3)
    dim = 16
    idx = Index(dim=dim, metric=metric, M=8, ef_construction=40, initial_capacity=256, seed=2, device="cpu",
                repair_fraction=0.05)
    tracker = DirtyRows()
    idx._engine.dirty = tracker
    live: set[int] = set()
    next_id = 0
    for round_ in range(12):
        before = _snapshot(idx)
        kind = round_ % 3
        if kind == 0 or len(live) < 200:  # inserts (the tables grow along the way)
            n = 150
            ids = np.arange(next_id, next_id + n)
            next_id += n
            idx.upsert(ids, rng.standard_normal((n, dim)).astype(np.float32))
            live.update(ids.tolist())
        elif kind == 1:  # refreshes of existing ids
            ids = rng.choice(sorted(live), 40, replace=False)
            idx.upsert(ids, rng.standard_normal((40, dim)).astype(np.float32))
        else:  # deletes, enough to trigger consolidation
            ids = rng.choice(sorted(live), 60, replace=False)
            idx.delete(ids)
            live.difference_update(ids.tolist())
        _check_covered(idx, before, tracker.take())
    before = _snapshot(idx)
    idx.delete(rng.choice(sorted(live), 30, replace=False))
    idx.consolidate()
    _check_covered(idx, before, tracker.take())
    # a small batch on a larger index marks few level-0 rows, not the table
    before = _snapshot(idx)
    idx.upsert([10**9], rng.standard_normal((1, dim)).astype(np.float32))
    dirty = tracker.take()
    _check_covered(idx, before, dirty)
    assert len(np.union1d(dirty["node"], dirty["links0"])) <= 4 * 8 + 1
    assert tracker.pending() == 0


# ------------------------------------------------------------------ on a device
def _clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 20) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    return (centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def _churned(metric: str, precision: str, n: int = 4000, dim: int = 64, **options: object) -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(7)
    idx = Index(dim=dim, metric=metric, M=12, ef_construction=80, traversal_precision=precision, seed=5,
                device="cuda", **options)
    x = _clustered(rng, n, dim)
    idx.upsert(np.arange(n), x)
    for r in range(4):
        gone = rng.choice(n, n // 10, replace=False)
        idx.delete(gone)
        back = gone[: len(gone) // 2]
        idx.upsert(back, _clustered(rng, len(back), dim))
        refresh = rng.choice(np.setdiff1d(np.arange(n), gone), n // 20, replace=False)
        idx.upsert(refresh, _clustered(rng, len(refresh), dim))
        if r == 1:
            idx.consolidate()
    return idx, _clustered(rng, 300, dim)


def _assert_same_as_cpu(idx: Index, queries: np.ndarray, k: int, ef: int, level_ef: list[int] | None = None) -> None:
    gpu = idx.search(queries, k=k, ef=ef, level_ef=level_ef)  # execution="auto": the GPU
    cpu = idx.search(queries, k=k, ef=ef, level_ef=level_ef, execution="per_query")
    same = (gpu.ids == cpu.ids).all(axis=1)
    # the two backends sum dot products in different orders (last-bit differences), so
    # a query may differ where candidates tie within rounding: allow very few, and only
    # with equal scores
    assert same.mean() >= 0.995, f"{(~same).sum()} of {len(same)} queries differ"
    np.testing.assert_allclose(gpu.scores[same], cpu.scores[same], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.sort(gpu.scores[~same]), np.sort(cpu.scores[~same]), rtol=1e-3, atol=1e-3)
    assert (gpu.hops > 0).all() and (gpu.evaluations > 0).all()
    # the same algorithm step for step (README): the same expansions and scored rows per
    # query, except where a rounding-level tie took the walk another way
    steps = (gpu.hops == cpu.hops) & (gpu.evaluations == cpu.evaluations)
    assert steps.mean() >= 0.99, f"{(~steps).sum()} of {len(steps)} queries took other steps than on the CPU"
    assert abs(int(gpu.hops.sum()) - int(cpu.hops.sum())) <= 0.005 * int(cpu.hops.sum())
    assert abs(int(gpu.evaluations.sum()) - int(cpu.evaluations.sum())) <= 0.005 * int(cpu.evaluations.sum())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gpu_returns_the_cpu_ids_on_a_churned_index(metric: str, precision: str) -> None:
    idx, queries = _churned(metric, precision)
    assert idx.device == "cuda"
    for k, ef in ((1, 16), (10, 64), (10, 200)):
        _assert_same_as_cpu(idx, queries, k, ef)
    _assert_same_as_cpu(idx, queries, 10, 64, level_ef=[4, 2])


@pytest.mark.gpu
@needs_gpu
def test_gpu_sync_moves_only_the_dirty_rows() -> None:
    idx, queries = _churned("ip", "float16")
    s0 = idx.stats()
    assert s0["gpu_full_uploads"] == 1
    rng = np.random.default_rng(11)
    new = _clustered(rng, 10, idx.config.dim)
    idx.upsert(np.arange(10**6, 10**6 + 10), new)
    s1 = idx.stats()
    assert s1["gpu_syncs"] == s0["gpu_syncs"] + 1 and s1["gpu_full_uploads"] == 1
    assert s1["gpu_sync_last_rows_vectors"] == 10  # the new nodes' rows, nothing else
    assert 10 <= s1["gpu_sync_last_rows_links0"] <= 10 * (1 + 2 * idx.config.M)
    assert s1["gpu_sync_last_rows"] < 0.05 * s1["gpu_node_capacity"]
    assert s1["gpu_sync_last_bytes"] < 0.05 * s1["gpu_mirror_bytes"]
    # new items are found at once; deleted ones never come back
    res = idx.search(new, k=1, ef=64)
    assert (res.ids[:, 0] == np.arange(10**6, 10**6 + 10)).mean() >= 0.9
    idx.delete(np.arange(10**6, 10**6 + 10))
    assert not np.isin(idx.search(new, k=10, ef=64).ids, np.arange(10**6, 10**6 + 10)).any()
    _assert_same_as_cpu(idx, queries, 10, 64)


@pytest.mark.gpu
@needs_gpu
def test_gpu_mirror_grows_by_doubling() -> None:
    rng = np.random.default_rng(2)
    idx = Index(dim=32, metric="l2", M=8, ef_construction=60, initial_capacity=64, seed=1, device="cuda")
    caps = []
    for lo in range(0, 3000, 250):
        idx.upsert(np.arange(lo, lo + 250), _clustered(rng, 250, 32))
        s = idx.stats()
        caps.append(s["gpu_node_capacity"])
        assert s["gpu_node_capacity"] >= s["node_capacity"]
    assert s["gpu_grows"] > 0 and s["gpu_full_uploads"] == 1
    distinct = sorted(set(caps))
    assert all(b >= 2 * a for a, b in itertools.pairwise(distinct)), caps  # at least doubling
    _assert_same_as_cpu(idx, _clustered(rng, 200, 32), 10, 64)


@pytest.mark.gpu
@needs_gpu
def test_candidate_rows_on_the_device_match_the_host_rows() -> None:
    import cupy

    idx, _ = _churned("ip", "float32", n=1000)
    nodes = np.array([0, 5, 17, 999], np.int32)
    rows = idx._engine.gpu.candidate_rows(cupy.asarray(nodes))
    idx._engine.gpu.mirror.stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(rows), idx._engine.store.tables.vectors[nodes])


def _launch_plan(idx: Index, ef: int, k: int) -> tuple[bool, int]:
    """(global scratch?, bytes per query slot) the launcher will use for ``ef`` on ``idx``
    (rtindex/core/gpu/search.py's own formulas, so the test follows its thresholds)."""
    from rtindex.core.gpu.search import SHARED_LIMIT, WARPS_PER_BLOCK, scratch_words

    degree0 = idx.config.max_degree0
    per_warp = scratch_words(idx.config.dim, ef, 2 * ef + 2 * degree0 + 16, degree0, k)
    use_global = not any(w * per_warp * 4 <= SHARED_LIMIT for w in WARPS_PER_BLOCK)
    words = (idx.stats()["gpu_node_capacity"] + 31) // 32
    touched = min(words * 32, max(4096, 64 * ef))
    return use_global, 4 * words + 4 * touched + (4 * per_warp if use_global else 0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gpu_batches_past_one_launch_return_the_cpu_answers(precision: str) -> None:
    """More queries than one launch holds (the 65536-slot cap): the queries of every
    launch get their own answers, visited bitmaps reused launch after launch."""
    idx, _ = _churned("ip", precision)
    from rtindex.core.gpu.search import GpuSearcher

    searcher: GpuSearcher = idx._engine.gpu.searcher
    queries = _clustered(np.random.default_rng(21), 70_000, idx.config.dim)
    before = searcher.launches
    _assert_same_as_cpu(idx, queries, 10, 64)
    assert searcher.launches - before >= 2  # more than one launch served the batch


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gpu_beams_too_wide_for_shared_memory_use_global_scratch_across_launches(metric: str, precision: str) -> None:
    """A beam whose per-query heaps exceed shared memory runs on global scratch; with a
    small memory budget the batch also spans several launches reusing that scratch."""
    idx, queries = _churned(metric, precision, n=6000)
    ef = next(ef for ef in (256, 512, 1024, 1536, 2048) if _launch_plan(idx, ef, 10)[0])
    assert ef <= len(idx) // 2  # still a beam search, not a scan of the whole graph
    searcher = idx._engine.gpu.searcher
    searcher.budget_bytes = 64 * _launch_plan(idx, ef, 10)[1]  # 64 queries per launch
    before = searcher.launches
    _assert_same_as_cpu(idx, queries, 10, ef)
    assert searcher.launches - before == -(-len(queries) // 64)
    searcher.budget_bytes = 1 << 30
    _assert_same_as_cpu(idx, queries[:50], 10, ef)  # and in one launch
    for narrower in (512, 1024):  # shared memory with 2 and 1 warps per block (the README case is 4)
        _assert_same_as_cpu(idx, queries[:100], 10, narrower)


def _assert_mirror_equals_host(idx: Index) -> None:
    """Every array the GPU search reads holds the host's rows (the float16 copy too)."""
    import cupy

    from rtindex.core.gpu.mirror import MIRRORED

    backend = idx._engine.gpu
    backend.mirror.stream.synchronize()
    t = idx._engine.store.tables
    assert "vectors16" in MIRRORED
    for name in MIRRORED:
        if name == "vectors16" and not backend.mirror.half:
            continue  # not mirrored under float32 traversal
        host = getattr(t, name)
        device = cupy.asnumpy(backend.mirror.arrays[name][: len(host)])
        np.testing.assert_array_equal(device, host, err_msg=f"device {name} differs from the host")
    np.testing.assert_array_equal(cupy.asnumpy(backend.mirror.arrays["entry_node"]), t.entry_node)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gpu_mirror_equals_the_host_tables_after_every_kind_of_write(precision: str) -> None:
    idx, _ = _churned("l2", precision)
    assert idx._engine.gpu.mirror.half == (precision == "float16")
    assert idx.stats()["gpu_full_uploads"] == 1  # what follows came by dirty-row syncs only
    _assert_mirror_equals_host(idx)
    rng = np.random.default_rng(5)
    dim = idx.config.dim
    idx.upsert(np.arange(10**6, 10**6 + 50), _clustered(rng, 50, dim))  # inserts
    _assert_mirror_equals_host(idx)
    idx.upsert(np.arange(0, 400, 8), _clustered(rng, 50, dim))  # refreshes (ids 0..399 may be deleted: re-inserts)
    _assert_mirror_equals_host(idx)
    idx.delete(np.arange(10**6, 10**6 + 50))
    idx.consolidate()
    _assert_mirror_equals_host(idx)
    assert idx.stats()["gpu_full_uploads"] == 1
