"""Neural scorer (NANN, DESIGN.md §6): a TensorFlow SavedModel scores the candidates of
the lock-step beam search; the HNSW graph itself is built on the item embeddings.

TensorFlow is imported lazily (``pip install 'rtindex[tf]'``; tensorflow-cpu 2.21).

SavedModel contract
-------------------
Two signatures (``tf.saved_model.save(module, path, signatures={...})``):

``query_state``
    inputs: the query features, one named tensor each, batch first
    (e.g. ``user_id`` int64[b], ``history`` float32[b, 20]); any dtype TensorFlow
    has, shapes after the batch dimension fixed or ``None``.
    output: ``state`` float32[b, S] — everything the head needs about the query.
    Run once per search batch (``prepare``).
``score``
    inputs: ``state`` float32[n, S] and ``items`` float32[n, dim] (``dim`` = the
    index's dimension: the graph is built on these embeddings).
    output: ``scores`` float32[n] — similarity of items[i] to the query whose state
    is state[i]; higher is better. Run once per expansion step for all candidates
    of all queries of the batch.

Make the head cheap per candidate: fold the query's share of the first layer into the
state (``state = W_q·u + b``, head = ``relu(state + items·W_i) -> ...``) instead of
concatenating ``[u, item]`` — the per-candidate cost is then only the item part (2-5x
faster than concatenation on the CPU). ``export_random_mlp`` writes a model of that
shape; ``examples/movielens.py`` trains one.

Execution options (measured by ``scripts/bench.sh neural``, 2 CPU cores with AVX-512 BF16,
200k x 64 catalog, head 128 -> 64 -> 1): ``precision="bfloat16"`` rewrites the frozen head
graph to bfloat16 (scores differ from float32 by ~1e-2 relative); ``jit_compile=True``
compiles the head with XLA, candidate batches padded to power-of-two buckets so it
compiles once per bucket. Neither helped reliably: search time moved within the run-to-run
noise (float32 2.4-2.5, XLA 2.3, bfloat16 2.1-2.3 ms/query at ef=128); on one 65k-row call
bfloat16 was 16-22 ms vs float32 28-33 ms in two full runs (but slower in a third, small
one); ``float16`` (no fast CPU kernels) and bfloat16 + XLA were never faster. Default:
float32 without XLA; try bfloat16 when scoring calls are large (big batches, wide ef).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtindex.core import validation

QUERY_SIGNATURE = "query_state"
SCORE_SIGNATURE = "score"
PRECISIONS = ("float32", "float16", "bfloat16")
# smallest padded candidate batch with jit_compile (XLA compiles once per bucket size)
_MIN_BUCKET = 256


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the neural scorer needs TensorFlow: pip install 'rtindex[tf]' (tensorflow-cpu 2.21)"
        ) from exc
    return tf


def _np_dtype(tf_dtype: Any) -> np.dtype:
    return np.dtype(object) if tf_dtype.name == "string" else np.dtype(tf_dtype.as_numpy_dtype)


def _shape(spec: Any) -> tuple[int | None, ...]:
    return tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()


class SavedModelScorer:
    """Scorer (``rtindex.core.scorers.Scorer``) backed by a SavedModel that follows the
    contract in this module's docstring.

    path: SavedModel directory. dim: the index's embedding dimension (checked against
    the ``items`` input). precision: "float32" | "float16" | "bfloat16", the dtype the
    head computes in (inputs and scores stay float32). jit_compile: compile the head
    with XLA (candidate batches padded to power-of-two buckets).

    ``feature_spec``: query feature name -> (numpy dtype, shape without the batch
    dimension; None = any size). ``state_size``: S.
    """

    def __init__(self, path: str | Path, dim: int, precision: str = "float32", jit_compile: bool = False) -> None:
        tf = _import_tf()
        self._tf = tf
        if precision not in PRECISIONS:
            raise ValueError(f"neural scorer: precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"neural scorer: dim must be a positive integer, got {dim!r}")
        self.path = Path(path)
        self.dim = int(dim)
        self.precision = precision
        self.jit_compile = bool(jit_compile)
        if not (self.path / "saved_model.pb").exists():
            raise ValueError(
                f"neural scorer: {self.path} is not a SavedModel directory (no saved_model.pb); export one with "
                "tf.saved_model.save(module, path, signatures={'query_state': ..., 'score': ...})"
            )
        self._model = tf.saved_model.load(str(self.path))
        query_fn, score_fn = self._check_signatures()
        self.feature_spec: dict[str, tuple[np.dtype, tuple[int | None, ...]]] = {}
        self._tf_specs: dict[str, Any] = {}
        for name, spec in query_fn.structured_input_signature[1].items():
            shape = _shape(spec)
            if len(shape) < 1:
                raise ValueError(
                    f"neural scorer: query_state input {name!r} is a scalar; query features must be batch-first "
                    "(shape [None, ...])"
                )
            self.feature_spec[name] = (_np_dtype(spec.dtype), shape[1:])
            self._tf_specs[name] = spec
        self.state_size = self._check_state_sizes(query_fn, score_fn)
        self._query_fn = query_fn
        self._score_call = self._build_score_call(score_fn)

    # ---- loading ------------------------------------------------------------------

    def _check_signatures(self) -> tuple[Any, Any]:
        signatures = dict(self._model.signatures)
        missing = [s for s in (QUERY_SIGNATURE, SCORE_SIGNATURE) if s not in signatures]
        if missing:
            raise ValueError(
                f"neural scorer: SavedModel {self.path} lacks signature(s) {missing} (it has {sorted(signatures)}); "
                "export both: signatures={'query_state': query_tower_fn, 'score': head_fn} "
                "(contract: rtindex.core.neural docstring)"
            )
        query_fn, score_fn = signatures[QUERY_SIGNATURE], signatures[SCORE_SIGNATURE]
        inputs = score_fn.structured_input_signature[1]
        if set(inputs) != {"state", "items"}:
            raise ValueError(
                f"neural scorer: signature 'score' must take exactly the inputs 'state' and 'items', it takes "
                f"{sorted(inputs)}; name the head function's arguments state and items"
            )
        for name in ("state", "items"):
            spec = inputs[name]
            if spec.dtype.name != "float32" or len(_shape(spec)) != 2:
                raise ValueError(
                    f"neural scorer: 'score' input {name!r} must be float32[n, ...] (rank 2), got "
                    f"{spec.dtype.name}{list(_shape(spec))}"
                )
        items_dim = _shape(inputs["items"])[1]
        if items_dim != self.dim:
            raise ValueError(
                f"neural scorer: the model's 'items' input has dimension {items_dim}, the index has dim={self.dim}; "
                "build the index on the item embeddings the model was trained with (same dim)"
            )
        for fn, sig, out in ((query_fn, QUERY_SIGNATURE, "state"), (score_fn, SCORE_SIGNATURE, "scores")):
            outputs = fn.structured_outputs
            if not isinstance(outputs, Mapping) or out not in outputs:
                names = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
                raise ValueError(
                    f"neural scorer: signature {sig!r} must return a dict with the output {out!r}, it returns {names}"
                )
            spec = outputs[out]
            rank = 2 if out == "state" else 1
            if spec.dtype.name != "float32" or len(_shape(spec)) != rank:
                raise ValueError(
                    f"neural scorer: {sig!r} output {out!r} must be float32 of rank {rank}, got "
                    f"{spec.dtype.name}{list(_shape(spec))}"
                )
        if not query_fn.structured_input_signature[1]:
            raise ValueError("neural scorer: signature 'query_state' takes no inputs; it needs the query features")
        return query_fn, score_fn

    def _check_state_sizes(self, query_fn: Any, score_fn: Any) -> int:
        produced = _shape(query_fn.structured_outputs["state"])[1]
        taken = _shape(score_fn.structured_input_signature[1]["state"])[1]
        if produced is None or taken is None:
            raise ValueError(
                "neural scorer: the state size S must be fixed in both signatures (query_state output "
                f"state[b, {produced}], score input state[n, {taken}])"
            )
        if produced != taken:
            raise ValueError(
                f"neural scorer: query_state returns state of size {produced} but score takes state of size "
                f"{taken}; the two signatures must agree on S"
            )
        return int(produced)

    def _build_score_call(self, score_fn: Any) -> Any:
        """Concrete function (state_all[b, S], query_index[n], items[n, dim]) -> scores[n]:
        gathers each candidate's query state inside TensorFlow and runs the head frozen
        (variables as constants: fewer ops per call) in the chosen precision."""
        tf = self._tf
        dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[self.precision]
        head = _frozen_head(tf, score_fn, dtype)

        def call(state: Any, query_index: Any, items: Any) -> Any:
            s = tf.cast(tf.gather(state, query_index), dtype)
            return tf.cast(head(state=s, items=tf.cast(items, dtype)), tf.float32)

        fn = tf.function(call, jit_compile=self.jit_compile)
        # a concrete function skips tf.function's argument binding (~0.15 ms per call)
        return fn.get_concrete_function(
            tf.TensorSpec([None, self.state_size], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, self.dim], tf.float32),
        )

    # ---- Scorer protocol ------------------------------------------------------------

    def check_features(self, features: Any) -> dict[str, np.ndarray]:
        """Validated, converted query features (ValueError says what is wrong). A single
        array is accepted when the model has exactly one feature."""
        if not isinstance(features, Mapping):
            if len(self.feature_spec) == 1:
                features = {next(iter(self.feature_spec)): features}
            else:
                raise ValueError(
                    f"neural scorer: query features must be a mapping name -> array with the names "
                    f"{sorted(self.feature_spec)}, got {type(features).__name__}"
                )
        missing = sorted(set(self.feature_spec) - set(features))
        extra = sorted(set(features) - set(self.feature_spec))
        if missing or extra:
            raise ValueError(
                f"neural scorer: query features do not match the model: missing {missing}, unexpected {extra}; "
                f"the model takes {self.describe_features()}"
            )
        out: dict[str, np.ndarray] = {}
        for name, (dtype, shape) in self.feature_spec.items():
            arr = np.asarray(features[name])
            want = _describe(dtype, shape)
            if arr.ndim != len(shape) + 1 or any(d is not None and d != a for d, a in zip(shape, arr.shape[1:], strict=False)):
                raise ValueError(f"neural scorer: query feature {name!r} has shape {arr.shape}, the model takes {want}")
            arr = _convert(arr, dtype, name, want)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))[:5].tolist()
                raise ValueError(f"neural scorer: query feature {name!r} has NaN or infinity in rows {bad}")
            out[name] = arr
        validation.batch_size(out, "neural scorer")  # one row per query in every feature, at least one query
        return out

    def describe_features(self) -> str:
        return ", ".join(f"{n}: {_describe(dt, s)}" for n, (dt, s) in self.feature_spec.items())

    def prepare(self, queries: Any) -> Any:
        """Query tower once per batch -> state float32[b, S] (a TensorFlow tensor)."""
        features = self.check_features(queries)
        state = self._query_fn(**{n: self._tf.constant(v, self._tf_specs[n].dtype) for n, v in features.items()})["state"]
        b = len(next(iter(features.values())))
        if tuple(state.shape) != (b, self.state_size):
            raise ValueError(
                f"neural scorer: query_state returned state of shape {tuple(state.shape)}, expected ({b}, {self.state_size})"
            )
        if not bool(self._tf.reduce_all(self._tf.math.is_finite(state))):
            raise ValueError("neural scorer: the query tower returned NaN or infinity for these features")
        return state

    def score(self, state: Any, query_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32[n]: score of rows[i] for query query_index[i], one model call."""
        tf = self._tf
        n = len(rows)
        if n == 0:
            return np.empty(0, np.float32)
        qi = np.asarray(query_index, np.int32)
        items = np.asarray(rows, np.float32)
        if self.jit_compile:
            size = max(_MIN_BUCKET, 1 << (n - 1).bit_length())
            if size != n:
                qi = np.concatenate([qi, np.zeros(size - n, np.int32)])
                items = np.concatenate([items, np.zeros((size - n, items.shape[1]), np.float32)])
        out = self._score_call(state, tf.constant(qi), tf.constant(items)).numpy()
        return np.ascontiguousarray(out[:n], np.float32)

    def score_catalog(self, state: Any, items: np.ndarray, block: int = 1 << 16) -> np.ndarray:
        """float32[b, N]: every query against every item (brute force, for ground truth)."""
        b = int(state.shape[0])
        items = np.ascontiguousarray(items, np.float32)
        out = np.empty((b, len(items)), np.float32)
        for q in range(b):
            for lo in range(0, len(items), block):
                rows = items[lo : lo + block]
                out[q, lo : lo + len(rows)] = self.score(state, np.full(len(rows), q, np.int32), rows)
        return out

    def top_k_exhaustive(self, queries: Any, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over all rows of ``items``: (row numbers int64[b, k], scores
        float32[b, k]), best first."""
        scores = self.score_catalog(self.prepare(queries), items)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, 1).astype(np.int64)
        return top, np.take_along_axis(scores, top, 1)


def _describe(dtype: np.dtype, shape: tuple[int | None, ...]) -> str:
    dims = ["b"] + ["any" if d is None else str(d) for d in shape]
    return f"{'string' if dtype.kind == 'O' else dtype.name}[{', '.join(dims)}]"


def _convert(arr: np.ndarray, dtype: np.dtype, name: str, want: str) -> np.ndarray:
    if dtype.kind == "O":
        if arr.dtype.kind not in "OUS":
            raise ValueError(f"neural scorer: query feature {name!r} must be strings ({want}), got {arr.dtype}")
        return arr.astype(object)
    if dtype.kind in "iu" and arr.dtype.kind not in "iub":
        raise ValueError(f"neural scorer: query feature {name!r} must be integers ({want}), got dtype {arr.dtype}")
    if dtype.kind == "f" and arr.dtype.kind not in "fiub":
        raise ValueError(f"neural scorer: query feature {name!r} must be numeric ({want}), got dtype {arr.dtype}")
    if dtype.kind == "b" and arr.dtype.kind != "b":
        raise ValueError(f"neural scorer: query feature {name!r} must be booleans ({want}), got dtype {arr.dtype}")
    if dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise ValueError(f"neural scorer: query feature {name!r} has values outside {dtype.name} range")
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def _frozen_head(tf: Any, score_fn: Any, dtype: Any) -> Any:
    """The ``score`` signature with its variables frozen into constants; for a reduced
    precision every float32 constant, op attribute and input of the graph is rewritten
    to ``dtype``. Returns f(state=, items=) -> scores (in dtype)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(score_fn)
    graph_def = frozen.graph.as_graph_def()
    target = dtype.as_datatype_enum
    node_lists = [] if dtype == tf.float32 else [graph_def.node] + [f.node_def for f in graph_def.library.function]
    for nodes in node_lists:
        for node in nodes:
            if node.op == "Const" and node.attr["dtype"].type == types_pb2.DT_FLOAT:
                value = tf.make_ndarray(node.attr["value"].tensor)
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(tf.cast(value, dtype)))
            for attr in node.attr.values():
                if attr.type == types_pb2.DT_FLOAT:
                    attr.type = target
                for i, t in enumerate(attr.list.type):
                    if t == types_pb2.DT_FLOAT:
                        attr.list.type[i] = target
    input_names = [t.name for t in frozen.inputs]
    output_name = frozen.outputs[0].name
    arg_names = [t.name.split(":")[0] for t in frozen.inputs]

    def import_graph() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    g = wrapped.graph
    pruned = wrapped.prune([g.as_graph_element(n) for n in input_names], g.as_graph_element(output_name))
    try:  # fail at load time, not in the first search, when an op has no kernel for dtype
        pruned(*[tf.zeros([1, *t.shape.as_list()[1:]], dtype) for t in frozen.inputs])
    except (tf.errors.OpError, TypeError, ValueError) as exc:
        raise ValueError(
            f"neural scorer: the 'score' graph cannot run in {dtype.name} on this device ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:200]}); use precision='float32'"
        ) from exc

    def head(state: Any, items: Any) -> Any:
        named = {"state": state, "items": items}
        return pruned(*[named[a] for a in arg_names])

    return head


def export_random_mlp(
    path: str | Path, query_dim: int, dim: int, hidden: tuple[int, int] = (128, 64), seed: int = 0,
    item_weight_scale: float = 1.0,
) -> None:
    """Write a SavedModel that follows the contract: a random-weight MLP scorer with one
    query feature ``query`` float32[b, query_dim]; state = query·W_q + b_1 (the query's
    share of the first layer, folded), head = relu(state + items·W_i) -> relu(·W_2 + b_2)
    -> ·w_3. For tests and benchmarks, and a template for real models.

    item_weight_scale: std of W_i's entries; with unit-norm items 1.0 makes the item's
    share of the first layer as large as the query's, so the ReLU pattern depends on the
    item and the head is far from linear in the item (a smaller scale gives an almost
    linear head, which any two-stage inner-product retrieval handles easily)."""
    tf = _import_tf()
    rng = np.random.default_rng(seed)
    h1, h2 = hidden

    def weights(*shape: int, scale: float) -> Any:
        return tf.Variable(rng.normal(0.0, scale, shape).astype(np.float32))

    class RandomMLP(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_query = weights(query_dim, h1, scale=1 / np.sqrt(query_dim))
            self.w_items = weights(dim, h1, scale=item_weight_scale)
            self.b_1 = weights(h1, scale=0.1)
            self.w_2 = weights(h1, h2, scale=1 / np.sqrt(h1))
            self.b_2 = weights(h2, scale=0.1)
            self.w_3 = weights(h2, 1, scale=1 / np.sqrt(h2))

        @tf.function(input_signature=[tf.TensorSpec([None, query_dim], tf.float32, name="query")])
        def query_state(self, query: Any) -> dict[str, Any]:
            return {"state": tf.matmul(query, self.w_query) + self.b_1}

        @tf.function(input_signature=[
            tf.TensorSpec([None, h1], tf.float32, name="state"), tf.TensorSpec([None, dim], tf.float32, name="items"),
        ])
        def score(self, state: Any, items: Any) -> dict[str, Any]:
            h = tf.nn.relu(state + tf.matmul(items, self.w_items))
            h = tf.nn.relu(tf.matmul(h, self.w_2) + self.b_2)
            return {"scores": tf.squeeze(tf.matmul(h, self.w_3), -1)}

    module = RandomMLP()
    tf.saved_model.save(module, str(path), signatures={QUERY_SIGNATURE: module.query_state, SCORE_SIGNATURE: module.score})
