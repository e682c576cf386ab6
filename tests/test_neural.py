"""The neural scorer (NANN): beam search on the embedding graph under a SavedModel MLP
finds that model's brute-force top-k; the SavedModel contract and the query features
are checked with messages a user can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _import_tensorflow() -> Any:
    """TensorFlow, or a skip without it; with RTINDEX_REQUIRE_TF=1 (scripts/test.sh installs
    the tf extra) its absence is an error instead, so CI cannot go green without these tests."""
    try:
        import tensorflow
    except ImportError as exc:
        message = f"TensorFlow does not import ({exc}): pip install -e '.[tf]' (scripts/test.sh installs it)"
        if os.environ.get("RTINDEX_REQUIRE_TF") == "1":
            pytest.fail(f"RTINDEX_REQUIRE_TF=1: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return tensorflow


tf = _import_tensorflow()

from rtindex import Index, datasets  # noqa: E402
from rtindex.core.neural import SavedModelScorer, export_random_mlp  # noqa: E402

DIM, QUERY_DIM, N_ITEMS = 32, 16, 5000


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "random_mlp"
    export_random_mlp(path, QUERY_DIM, DIM, hidden=(64, 32), seed=0)
    return path


@pytest.fixture(scope="module")
def catalog() -> tuple[Index, np.ndarray, np.ndarray]:
    items = datasets.clustered(N_ITEMS, DIM, clusters=30, seed=1)
    index = Index(dim=DIM, metric="ip", M=16, ef_construction=200)
    index.upsert(np.arange(N_ITEMS), items)
    queries = np.random.default_rng(2).normal(size=(150, QUERY_DIM)).astype(np.float32)
    return index, items, queries


class CountingScorer(SavedModelScorer):
    calls = 0
    rows = 0

    def score(self, state: Any, query_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows += len(rows)
        return super().score(state, query_index, rows)


def test_beam_search_finds_the_brute_force_top_k_of_the_model(mlp_path: Path, catalog: tuple) -> None:
    index, items, queries = catalog
    scorer = CountingScorer(mlp_path, DIM)
    truth, truth_scores = scorer.top_k_exhaustive({"query": queries}, items, 50)
    scorer.calls = scorer.rows = 0
    res = index.search({"query": queries}, k=50, ef=128, scorer=scorer)
    assert datasets.recall_at_k(res.ids, truth, 10) >= 0.93
    assert datasets.recall_at_k(res.ids, truth, 50) >= 0.92
    # scores are the model's own: the best found equals the brute-force best where ids agree
    same = res.ids[:, 0] == truth[:, 0]
    np.testing.assert_allclose(res.scores[same, 0], truth_scores[same, 0], rtol=1e-4, atol=1e-5)
    assert res.evaluations.mean() < 0.2 * N_ITEMS
    # one model call per expansion step for the whole batch, not one per query
    assert scorer.calls <= res.hops.max() + 12
    assert scorer.rows == res.evaluations.sum()


def test_level_ef_widens_the_upper_levels_and_keeps_recall(mlp_path: Path, catalog: tuple) -> None:
    index, items, queries = catalog
    scorer = SavedModelScorer(mlp_path, DIM)
    truth, _ = scorer.top_k_exhaustive({"query": queries}, items, 10)
    greedy = index.search({"query": queries}, k=10, ef=96, scorer=scorer)
    wide = index.search({"query": queries}, k=10, ef=96, level_ef=[8, 4, 2], scorer=scorer)
    assert wide.evaluations.mean() > greedy.evaluations.mean()
    assert datasets.recall_at_k(wide.ids, truth, 10) >= 0.93
    assert datasets.recall_at_k(wide.ids, truth, 10) >= datasets.recall_at_k(greedy.ids, truth, 10) - 0.01


def test_jit_compile_and_bfloat16_score_like_float32(mlp_path: Path, catalog: tuple) -> None:
    _, items, queries = catalog
    rng = np.random.default_rng(3)
    query_index = rng.integers(0, len(queries), 777).astype(np.int32)  # not a bucket size: padded
    rows = items[rng.integers(0, N_ITEMS, 777)]
    results = {}
    for precision, jit in (("float32", False), ("float32", True), ("bfloat16", False)):
        scorer = SavedModelScorer(mlp_path, DIM, precision=precision, jit_compile=jit)
        state = scorer.prepare({"query": queries})
        results[precision, jit] = scorer.score(state, query_index, rows)
        assert results[precision, jit].shape == (777,) and results[precision, jit].dtype == np.float32
    reference = results["float32", False]
    np.testing.assert_allclose(results["float32", True], reference, rtol=1e-4, atol=1e-4)
    scale = np.abs(reference).mean()
    assert np.abs(results["bfloat16", False] - reference).max() < 0.1 * scale


def test_invalid_precision_or_dim_is_refused(mlp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        SavedModelScorer(mlp_path, DIM, precision="int8")
    with pytest.raises(ValueError, match=r"'items' input has dimension 32, the index has dim=64"):
        SavedModelScorer(mlp_path, 64)


def test_a_directory_without_a_saved_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        SavedModelScorer(tmp_path, DIM)


def _save(path: Path, module: tf.Module, **signatures: Any) -> Path:
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def test_a_model_without_the_score_signature_is_refused(tmp_path: Path) -> None:
    module = tf.Module()
    module.query_state = tf.function(
        lambda query: {"state": query * 2.0}, input_signature=[tf.TensorSpec([None, 8], tf.float32, name="query")]
    )
    path = _save(tmp_path / "m", module, query_state=module.query_state)
    with pytest.raises(ValueError, match=r"lacks signature\(s\) \['score'\]"):
        SavedModelScorer(path, 8)


def _head(state_size: int, dim: int, second: str = "items") -> tf.Module:
    module = tf.Module()
    module.query_state = tf.function(
        lambda query: {"state": tf.tile(query[:, :1], [1, 4])},
        input_signature=[tf.TensorSpec([None, 8], tf.float32, name="query")],
    )
    module.score = tf.function(
        lambda state, items: {"scores": tf.reduce_sum(state, 1) + tf.reduce_sum(items, 1)},
        input_signature=[tf.TensorSpec([None, state_size], tf.float32, name="state"),
                         tf.TensorSpec([None, dim], tf.float32, name=second)],
    )
    return module


def test_wrong_score_inputs_or_state_sizes_are_refused(tmp_path: Path) -> None:
    module = _head(4, 8, second="embeddings")
    path = _save(tmp_path / "names", module, query_state=module.query_state, score=module.score)
    with pytest.raises(ValueError, match=r"exactly the inputs 'state' and 'items'"):
        SavedModelScorer(path, 8)
    module = _head(6, 8)
    path = _save(tmp_path / "sizes", module, query_state=module.query_state, score=module.score)
    with pytest.raises(ValueError, match="query_state returns state of size 4 but score takes state of size 6"):
        SavedModelScorer(path, 8)
    module = _head(4, 8)
    path = _save(tmp_path / "good", module, query_state=module.query_state, score=module.score)
    assert SavedModelScorer(path, 8).state_size == 4


@pytest.fixture(scope="module")
def two_feature_scorer(tmp_path_factory: pytest.TempPathFactory) -> SavedModelScorer:
    """A model with an integer id feature and a float vector feature."""
    module = tf.Module()
    module.table = tf.Variable(np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    module.query_state = tf.function(
        lambda user_id, history: {"state": tf.gather(module.table, user_id) + history},
        input_signature=[tf.TensorSpec([None], tf.int64, name="user_id"),
                         tf.TensorSpec([None, 8], tf.float32, name="history")],
    )
    module.score = tf.function(
        lambda state, items: {"scores": tf.reduce_sum(tf.nn.relu(state * items), 1)},
        input_signature=[tf.TensorSpec([None, 8], tf.float32, name="state"),
                         tf.TensorSpec([None, 8], tf.float32, name="items")],
    )
    path = _save(tmp_path_factory.mktemp("models") / "two", module, query_state=module.query_state, score=module.score)
    return SavedModelScorer(path, 8)


def test_feature_spec_describes_the_query_inputs(two_feature_scorer: SavedModelScorer) -> None:
    assert two_feature_scorer.feature_spec == {"user_id": (np.dtype(np.int64), ()), "history": (np.dtype(np.float32), (8,))}


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"user_id": np.arange(3)}, r"missing \['history'\]"),
        ({"user_id": np.arange(3), "history": np.zeros((3, 8)), "age": np.ones(3)}, r"unexpected \['age'\]"),
        ({"user_id": np.arange(3), "history": np.zeros((3, 7))}, r"'history' has shape \(3, 7\), the model takes float32\[b, 8\]"),
        ({"user_id": np.arange(3.0), "history": np.zeros((3, 8))}, "'user_id' must be integers"),
        ({"user_id": np.arange(3), "history": np.zeros((4, 8))}, "different batch sizes"),
        ({"user_id": np.arange(3), "history": np.where(np.eye(3, 8) > 0, np.nan, 0.0)}, r"NaN or infinity in rows \[0, 1, 2\]"),
        (np.zeros((3, 8)), "must be a mapping name -> array"),
    ],
)
def test_bad_query_features_are_refused(two_feature_scorer: SavedModelScorer, features: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        two_feature_scorer.prepare(features)


def test_bad_query_features_fail_the_search_not_the_index(two_feature_scorer: SavedModelScorer) -> None:
    index = Index(dim=8, metric="l2")
    items = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    index.upsert(np.arange(300), items)
    with pytest.raises(ValueError, match="different batch sizes"):
        index.search({"user_id": np.arange(2), "history": np.zeros((3, 8))}, k=5, scorer=two_feature_scorer)
    res = index.search({"user_id": np.arange(2), "history": np.zeros((2, 8), np.float32)}, k=5, scorer=two_feature_scorer)
    assert res.ids.shape == (2, 5) and (res.ids >= 0).all()


def test_a_server_with_a_neural_scorer_takes_query_features_over_grpc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rtindex.client import IndexClient, InvalidArgument
    from rtindex.core.neural import export_random_mlp
    from rtindex.service.server import IndexServer
    from rtindex.service.settings import ServerConfig

    dim, query_dim = 16, 8
    export_random_mlp(tmp_path / "model", query_dim=query_dim, dim=dim, hidden=(32, 16), seed=3)
    server = IndexServer(ServerConfig(port=0, dim=dim, metric="l2", scorer=f"savedmodel:{tmp_path / 'model'}",
                                      log_level="warning"))
    server.start()
    server.mark_ready()
    try:
        rng = np.random.default_rng(0)
        items = rng.normal(size=(2000, dim)).astype(np.float32)
        queries = {"query": rng.normal(size=(5, query_dim)).astype(np.float32)}
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.upsert(np.arange(2000), items)
            remote = client.search(features=queries, k=10, ef=200, level_ef=[8])
            local = server.index.search(queries, k=10, ef=200, level_ef=[8], scorer=server.servicer.scorer)
            np.testing.assert_array_equal(remote.ids, local.ids)
            assert (remote.evaluations > 0).all()
            with pytest.raises(InvalidArgument, match="features"):
                client.search(items[:2], k=3)  # vectors to a neural server
            with pytest.raises(InvalidArgument, match="query"):
                client.search(features={"wrong": queries["query"]}, k=3)
    finally:
        server.stop(grace=1)
