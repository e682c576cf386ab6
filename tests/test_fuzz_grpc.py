"""Property-based tests of the gRPC edge: whatever a client sends — random, truncated or
oversized fields, wrong dimensions, NaN or infinite floats, huge or zero k and ef, empty
batches, bytes that are not a request at all — the server answers with OK or a clear
status (INVALID_ARGUMENT with a message; RESOURCE_EXHAUSTED for a message beyond the
server's size limit), never UNKNOWN or INTERNAL, and a rejected request changes nothing.

One server (small limits, a seeded catalog with categories and a taxonomy) serves every
example; accepted writes change it as they would any server, so later examples meet
the state earlier ones left. Examples: tests/fuzzing.py (a fixed seed, a bounded count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from rtindex.api import tensors
from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

DIM = 8
MAX_QUERIES, MAX_K, MAX_EF, MAX_WRITE_IDS, MAX_MESSAGE_MB = 16, 50, 400, 64, 1
SEEDED = 150  # items 0..149, in categories 0..5; the fingerprint reads ids 0..KNOWN-1
KNOWN = 200
TIMEOUT_S = 30  # per call; generous: a loaded CI machine must not turn a slow answer into DEADLINE_EXCEEDED
U32 = 2**32 - 1
I64 = (-(2**63), 2**63 - 1)


# ------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server() -> Iterator[IndexServer]:
    srv = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", max_queries=MAX_QUERIES, max_k=MAX_K, max_ef=MAX_EF,
                                   max_write_ids=MAX_WRITE_IDS, max_message_mb=MAX_MESSAGE_MB, log_level="error",
                                   warm_up="off"))
    srv.start()
    srv.mark_ready()
    rng = np.random.default_rng(0)
    srv.index.upsert(np.arange(SEEDED), rng.standard_normal((SEEDED, DIM)).astype(np.float32),
                     versions=np.full(SEEDED, 5), categories=[[i % 6] for i in range(SEEDED)])
    srv.index.set_category_parents([1, 2, 3], [0, 0, 1])
    yield srv
    srv.stop(grace=1)


@pytest.fixture(scope="module")
def channel(server: IndexServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> index_pb2_grpc.IndexServiceStub:
    return index_pb2_grpc.IndexServiceStub(channel)


# ------------------------------------------------------------------ the properties
STATS = ("items", "nodes_live", "nodes_tombstoned", "inserted", "refreshed", "deleted", "skipped_stale", "categories",
         "category_nodes_live", "category_nodes_tombstoned")


def _state(server: IndexServer, ids: Any = ()) -> tuple:
    """What a write could change: counts and counters, every stored item among ids
    0..KNOWN-1 and ``ids`` (embedding, version), the taxonomy."""
    index = server.index
    stats = index.stats()
    probe = np.arange(KNOWN, dtype=np.int64)
    extra = np.asarray([i for i in ids if i >= 0], np.int64)
    got = index.get(np.union1d(probe, extra))
    children, parents = index.category_parents()
    return (tuple(stats[name] for name in STATS), got.found.tobytes(), got.vectors.tobytes(), got.versions.tobytes(),
            children.tobytes(), parents.tobytes())


def _call(server: IndexServer, method: Callable[..., Any], request: Any, ids: Any = (), *, read: bool = False) -> Any:
    """The response, or None for a rejection; asserts that a rejection is INVALID_ARGUMENT
    with a message and changed nothing (nor did a ``read`` that was answered)."""
    before = _state(server, ids)
    try:
        response = method(request, timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details(), request)
        assert exc.details() and exc.details().strip(), request
        assert _state(server, ids) == before, f"a rejected request changed the index: {exc.details()}"
        return None
    if read:
        assert _state(server, ids) == before, "a read changed the index"
    return response


# ------------------------------------------------------------------ strategies
# A request is drawn valid, then none, one or two of its fields are replaced by a broken
# value: one bad field among good ones is where a missing check lets a request through.
def faults(*fields: str) -> st.SearchStrategy[frozenset[str]]:
    """Which fields of a request to break: none about half the time."""
    return st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(fields), min_size=1, max_size=2))


def _too_many(limit: int, make: Callable[[int], Any]) -> st.SearchStrategy:
    """Lists just past ``limit`` (hypothesis draws long lists slowly: built, not drawn)."""
    return st.builds(make, st.integers(limit + 1, limit + 3))


uint32s = st.integers(0, U32)
int64s = st.integers(*I64)
bad_dims = st.one_of(st.sampled_from([0, 1, DIM - 1, DIM + 1, 2 * DIM]), uint32s)
good_ids = st.one_of(st.integers(0, KNOWN + 50), st.integers(0, KNOWN + 50), st.sampled_from([2**53 + 1, I64[1]]))
good_id_lists = st.lists(good_ids, min_size=1, max_size=6, unique=True)
bad_id_lists = st.one_of(
    st.just([]),
    st.lists(st.integers(0, 3), min_size=2, max_size=4).filter(lambda ids: len(set(ids)) < len(ids)),  # repeats
    st.builds(lambda ids, bad, at: [*ids[:at], bad, *ids[at:]], good_id_lists,
              st.one_of(st.sampled_from([-1, I64[0]]), st.integers(I64[0], -1)), st.integers(0, 6)),
    _too_many(MAX_WRITE_IDS, lambda n: list(range(n))),
)
good_categories = st.one_of(st.integers(0, 12), st.integers(0, 12), st.sampled_from([I64[1], 2**40]))
bad_categories = st.one_of(st.sampled_from([-1, -2, I64[0]]), st.integers(I64[0], -1))
SPECIAL = [math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 65520.0, -1e5]  # each breaks a row rule (float16 here)
finite = st.floats(-100, 100, width=32)


def rows_of(n: int, width: int = DIM) -> st.SearchStrategy[np.ndarray]:
    if n * width > 8 * DIM:  # a batch past a limit: its values do not matter
        return st.just(np.ones((n, width), "<f4"))
    return st.builds(lambda values: np.array(values, "<f4").reshape(n, width),
                     st.lists(finite, min_size=n * width, max_size=n * width))


@st.composite
def bad_matrix(draw: st.DrawFn, n: int) -> bytes:
    """Bytes that are not n rows of DIM valid float32: a wrong row count or width, any
    bytes, or one value that breaks a row rule."""
    kind = draw(st.sampled_from(["count", "width", "bytes", "value", "value"]))
    if kind == "count":
        return draw(rows_of(draw(st.sampled_from(sorted({0, n + 1, max(n - 1, 0)} - {n}))))).tobytes()
    if kind == "width":
        return draw(rows_of(n, draw(st.sampled_from([DIM - 1, DIM + 1, 1])))).tobytes()
    if kind == "bytes":
        return draw(st.binary(max_size=4 * DIM * 3 + 3))
    rows = draw(rows_of(n))
    rows.flat[draw(st.integers(0, rows.size - 1))] = draw(st.sampled_from(SPECIAL))
    return rows.tobytes()


def lists_of_length(n: int, elements: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.lists(elements, min_size=n, max_size=n)


def wrong_length(n: int, elements: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.integers(1, n + 2).filter(lambda m: m != n).flatmap(lambda m: lists_of_length(m, elements))


good_item_categories = st.lists(good_categories, max_size=4)
bad_item_categories = st.one_of(
    st.builds(lambda c, bad: [*c, bad], good_item_categories, bad_categories),
    _too_many(64, lambda c: list(range(c))),
)


@st.composite
def upserts(draw: st.DrawFn) -> index_pb2.UpsertRequest:
    broken = draw(faults("ids", "dim", "embeddings", "versions", "categories"))
    ids = draw(bad_id_lists if "ids" in broken else good_id_lists)
    n = len(ids)
    rows = max(n, 1)
    embeddings = draw(bad_matrix(rows)) if "embeddings" in broken else draw(rows_of(rows)).tobytes()
    if "embeddings" not in broken and n == 0:
        embeddings = b""
    versions = draw(wrong_length(n, int64s) if "versions" in broken
                    else st.one_of(st.just([]), lists_of_length(n, int64s)))
    if "categories" in broken:
        lists = draw(st.one_of(wrong_length(n, good_item_categories),
                               st.builds(lambda good, bad, at: [*good[:at], bad, *good[at + 1:]],
                                         lists_of_length(n, good_item_categories), bad_item_categories,
                                         st.integers(0, max(n - 1, 0)))))
    else:
        lists = draw(st.one_of(st.just([]), lists_of_length(n, good_item_categories)))
    return index_pb2.UpsertRequest(ids=ids, embeddings=embeddings, dim=draw(bad_dims) if "dim" in broken else DIM,
                                   versions=versions, categories=[index_pb2.CategoryList(ids=c) for c in lists])


@st.composite
def deletes(draw: st.DrawFn) -> index_pb2.DeleteRequest:
    broken = draw(faults("ids", "versions"))
    ids = draw(bad_id_lists if "ids" in broken else good_id_lists)
    versions = draw(wrong_length(len(ids), int64s) if "versions" in broken
                    else st.one_of(st.just([]), lists_of_length(len(ids), int64s)))
    return index_pb2.DeleteRequest(ids=ids, versions=versions)


gets = st.builds(lambda ids: index_pb2.GetRequest(ids=ids), st.one_of(good_id_lists, bad_id_lists))


@st.composite
def tensor_protos(draw: st.DrawFn) -> index_pb2.Tensor:
    """A feature tensor: a dtype the server knows or not, a shape, bytes that may or may
    not fill it."""
    dtype = draw(st.one_of(st.sampled_from(tensors.DTYPES), st.sampled_from(tensors.DTYPES),
                           st.sampled_from(["", "float", "object", "<f4", "complex64", "float32 "]), st.text(max_size=8)))
    shape = draw(st.one_of(st.lists(st.integers(0, 6), min_size=1, max_size=3), st.just([]),
                           st.lists(uint32s, min_size=1, max_size=4),
                           st.lists(st.integers(0, 1), min_size=60, max_size=70)))  # numpy holds at most 64 dims
    itemsize = np.dtype(dtype).itemsize if dtype in tensors.DTYPES else 4
    size = math.prod(shape) * itemsize
    fits = st.just(b"\0" * size) if size <= 4096 else st.binary(max_size=16)
    return index_pb2.Tensor(dtype=dtype, shape=shape, data=draw(st.one_of(fits, fits, st.binary(max_size=64))))


bad_k = st.one_of(st.just(0), st.integers(MAX_K + 1, U32))
level_ef_lists = st.lists(st.integers(1, MAX_K), max_size=9)


@st.composite
def searches(draw: st.DrawFn) -> index_pb2.SearchRequest:
    broken = draw(faults("queries", "dim", "k", "ef", "level_ef", "categories", "category_k", "features"))
    n = draw(st.integers(1, 4))
    queries = draw(bad_matrix(n)) if "queries" in broken else draw(rows_of(n)).tobytes()
    categories = draw(st.one_of(st.just([]), st.lists(good_categories, min_size=1, max_size=5)))
    if "categories" in broken:
        categories = draw(st.one_of(
            st.builds(lambda c, bad: [*c, bad], st.lists(good_categories, max_size=4), bad_categories),
            _too_many(1024, lambda c: list(range(c)))))
    quotas: list[int] = []
    if categories and draw(st.booleans()):
        quotas = draw(lists_of_length(len(categories), st.integers(1, MAX_K)))
    if "category_k" in broken:
        quotas = draw(st.one_of(wrong_length(len(categories), st.integers(1, MAX_K)),
                                st.lists(st.one_of(st.integers(1, MAX_K), bad_k), min_size=1, max_size=5)))
    largest = max(quotas, default=0)
    k = draw(st.one_of(st.just(0), st.just(largest)) if quotas else st.integers(1, MAX_K))
    if "k" in broken:
        k = draw(st.one_of(bad_k, st.integers(1, MAX_K)) if quotas else bad_k)
    floor = min(max(largest, k, 1), MAX_EF)
    ef = draw(st.one_of(st.just(0), st.integers(floor, MAX_EF)))
    if "ef" in broken:
        ef = draw(st.one_of(st.integers(1, floor - 1), st.integers(MAX_EF + 1, U32)) if floor > 1
                  else st.integers(MAX_EF + 1, U32))
    level_ef = draw(st.one_of(st.just([]), st.lists(st.integers(1, MAX_K), max_size=10)))
    if "level_ef" in broken:
        level_ef = draw(st.one_of(st.builds(lambda w, at: [*w[:at], 0, *w[at:]], level_ef_lists, st.integers(0, 10)),
                                  st.lists(st.integers(1, MAX_K), min_size=11, max_size=13),
                                  st.lists(bad_k, min_size=1, max_size=3)))
    request = index_pb2.SearchRequest(queries=queries, dim=draw(bad_dims) if "dim" in broken else DIM, k=k, ef=ef,
                                      level_ef=level_ef, categories=categories, category_k=quotas)
    if "features" in broken:  # to a server that scores with the metric
        for name, tensor in draw(st.dictionaries(st.text(max_size=6), tensor_protos(), min_size=1, max_size=2)).items():
            request.features[name].CopyFrom(tensor)
    return request


@st.composite
def taxonomy_changes(draw: st.DrawFn) -> index_pb2.SetCategoryParentsRequest:
    broken = draw(faults("children", "parents"))
    children = draw(st.lists(good_categories, min_size=1, max_size=4, unique=True))
    parents = draw(lists_of_length(len(children), st.one_of(st.integers(-1, 12), good_categories)))
    if "children" in broken:
        children = draw(st.one_of(
            st.builds(lambda c, bad: [*c, bad], st.lists(good_categories, max_size=3), bad_categories),
            st.lists(st.integers(0, 3), min_size=2, max_size=4).filter(lambda c: len(set(c)) < len(c)),
            st.just([])))
    if "parents" in broken:
        parents = draw(st.one_of(wrong_length(len(children), st.integers(-1, 12)),
                                 lists_of_length(len(children), st.integers(I64[0], -2))))
    elif len(parents) != len(children):
        parents = draw(lists_of_length(len(children), st.integers(-1, 12)))
    return index_pb2.SetCategoryParentsRequest(children=children, parents=parents)


# ------------------------------------------------------------------ typed requests
@fuzz(300)
@given(request=searches())
def test_a_fuzzed_search_is_answered_or_refused_clearly_and_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub, request: index_pb2.SearchRequest) -> None:
    response = _call(server, stub.Search, request, read=True)
    if response is None:
        return
    rows = len(request.queries) // (4 * DIM)
    cells = rows * max(len(request.categories), 1) * response.k
    assert response.num_queries == rows and response.num_categories == len(request.categories)
    assert response.k == (max(request.category_k) if request.category_k else request.k)
    assert len(response.ids) == 8 * cells and len(response.scores) == 4 * cells
    assert len(response.hops) == len(response.evaluations) == rows
    assert (np.frombuffer(response.ids, "<i8") >= -1).all()


@fuzz(300)
@given(request=upserts())
def test_a_fuzzed_upsert_is_applied_or_refused_clearly_and_then_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub, request: index_pb2.UpsertRequest) -> None:
    response = _call(server, stub.Upsert, request, request.ids)
    if response is None:
        return
    assert response.inserted + response.refreshed + response.skipped_stale == len(request.ids)


@fuzz(200)
@given(request=deletes())
def test_a_fuzzed_delete_is_applied_or_refused_clearly_and_then_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub, request: index_pb2.DeleteRequest) -> None:
    response = _call(server, stub.Delete, request, request.ids)
    if response is None:
        return
    assert response.deleted + len(response.unknown_ids) + response.skipped_stale == len(request.ids)
    assert set(response.unknown_ids) <= set(request.ids)


@fuzz(150)
@given(request=gets)
def test_a_fuzzed_get_is_answered_or_refused_clearly_and_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub, request: index_pb2.GetRequest) -> None:
    response = _call(server, stub.Get, request, request.ids, read=True)
    if response is None:
        return
    n = len(request.ids)
    assert response.dim == DIM and len(response.found) == len(response.versions) == n
    assert len(response.embeddings) == 4 * DIM * n


@fuzz(200)
@given(request=taxonomy_changes())
def test_a_fuzzed_taxonomy_change_is_applied_or_refused_clearly_and_then_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub,
        request: index_pb2.SetCategoryParentsRequest) -> None:
    if _call(server, stub.SetCategoryParents, request) is None:
        return
    edges = stub.CategoryParents(index_pb2.CategoryParentsRequest(), timeout=TIMEOUT_S)
    now = dict(zip(edges.children, edges.parents, strict=True))
    for child, parent in zip(request.children, request.parents, strict=True):
        assert now.get(child, -1) == parent


# ------------------------------------------------------------------ bytes on the wire
METHODS = {  # method -> its request class
    "Search": index_pb2.SearchRequest, "Upsert": index_pb2.UpsertRequest, "Delete": index_pb2.DeleteRequest,
    "Get": index_pb2.GetRequest, "SetCategoryParents": index_pb2.SetCategoryParentsRequest,
    "Stats": index_pb2.StatsRequest, "CategoryParents": index_pb2.CategoryParentsRequest,
}
SERVICE = "/rtindex.v1.IndexService"
READS = {"Search", "Get", "Stats", "CategoryParents"}


def _raw(channel: grpc.Channel, method: str) -> Callable[..., bytes]:
    """A call that sends and returns bytes as they are (no protobuf on the client)."""
    return channel.unary_unary(f"{SERVICE}/{method}")


def _parses(message: type, data: bytes) -> bool:
    try:
        message.FromString(data)
    except Exception:  # DecodeError, or anything else the parser raises
        return False
    return True


@st.composite
def damaged_bytes(draw: st.DrawFn, method: str) -> bytes:
    """A serialized request cut short, with a byte changed or bytes inserted; or any bytes."""
    base = {"Search": searches(), "Upsert": upserts(), "Delete": deletes(), "Get": gets,
            "SetCategoryParents": taxonomy_changes()}.get(method)
    if base is None or draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=48))
    data = bytearray(draw(base).SerializeToString())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            data = data[:at]
        elif kind == 1 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@fuzz(200)
@given(data=st.data(), method=st.sampled_from(sorted(METHODS)))
def test_damaged_bytes_are_answered_or_refused_clearly(
        server: IndexServer, channel: grpc.Channel, data: st.DataObject, method: str) -> None:
    """Protobuf reads a truncated or altered request as another request more often
    than not (fields are optional, a cut at a field boundary is a shorter message):
    whatever it reads is then checked like any request; what it cannot read is
    INVALID_ARGUMENT."""
    raw = data.draw(damaged_bytes(method))
    ids = getattr(METHODS[method].FromString(raw), "ids", ()) if _parses(METHODS[method], raw) else ()
    response = _call(server, _raw(channel, method), raw, ids, read=method in READS)
    if response is not None:
        assert isinstance(response, bytes)


UNDECODABLE = [  # bytes no protobuf parser reads as the request
    pytest.param("Search", b"\xff\xff\xff", id="search-not-protobuf"),
    pytest.param("Search", b"\x0a\x05ab", id="search-field-cut-short"),
    pytest.param("Search", b"\x32\x04\x0a\x02\xc3\x28", id="search-feature-name-not-utf8"),
    pytest.param("Upsert", index_pb2.UpsertRequest(ids=[1], embeddings=b"\0" * 32, dim=8).SerializeToString()[:-5],
                 id="upsert-embedding-cut-short"),
    pytest.param("Delete", b"\x0a\x03\x01\x02", id="delete-packed-ids-cut-short"),
    pytest.param("Get", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", id="get-varint-too-long"),
    pytest.param("SetCategoryParents", b"\x0b", id="taxonomy-group-start"),
]


@pytest.mark.parametrize(("method", "raw"), UNDECODABLE)
def test_bytes_that_are_not_a_request_are_refused_as_invalid_argument(
        server: IndexServer, channel: grpc.Channel, method: str, raw: bytes) -> None:
    assert not _parses(METHODS[method], raw)
    before = _state(server)
    with pytest.raises(grpc.RpcError) as caught:
        _raw(channel, method)(raw, timeout=TIMEOUT_S)
    assert _state(server) == before
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (caught.value.code(), caught.value.details())
    assert method in caught.value.details() and "protobuf" in caught.value.details()


@pytest.mark.parametrize("method", ["Upsert", "Search"])
def test_a_request_beyond_the_message_size_limit_is_resource_exhausted_and_changes_nothing(
        server: IndexServer, stub: index_pb2_grpc.IndexServiceStub, method: str) -> None:
    rows = MAX_MESSAGE_MB * 2**20 // (4 * DIM) + 1
    big = np.ones((rows, DIM), "<f4").tobytes()
    request = (index_pb2.UpsertRequest(ids=range(10_000, 10_000 + rows), embeddings=big, dim=DIM) if method == "Upsert"
               else index_pb2.SearchRequest(queries=big, dim=DIM, k=1))
    before = _state(server)
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert "larger than max" in caught.value.details()
    assert _state(server) == before


# ------------------------------------------------------------------ feature tensors
@fuzz(300)
@given(features=st.dictionaries(st.text(max_size=6), tensor_protos(), max_size=3))
def test_fuzzed_feature_tensors_decode_to_their_declared_shape_or_are_refused_naming_the_feature(
        features: dict[str, index_pb2.Tensor]) -> None:
    """Decoding (what the server does before a neural scorer sees the features) either
    gives arrays of the declared dtype and shape or a ValueError naming the feature."""
    for name, tensor in features.items():
        try:
            array = tensors.decode(tensor, name)
        except ValueError as exc:
            assert str(exc).startswith(f"feature {name!r}: "), str(exc)
            continue
        assert array.dtype == np.dtype(tensor.dtype) and array.shape == tuple(tensor.shape)
        assert array.nbytes == len(tensor.data)


# ------------------------------------------------------------------ a server with a neural scorer
QUERY_DIM = 4


@pytest.fixture(scope="module")
def neural_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    """A server whose searches take query features (a tiny random MLP: ~6 s to export)."""
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed: pip install -e '.[tf]'")
    from rtindex.core.neural import export_random_mlp

    path = tmp_path_factory.mktemp("models") / "mlp"
    export_random_mlp(path, query_dim=QUERY_DIM, dim=DIM, hidden=(8, 4), seed=0)
    srv = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", scorer=f"savedmodel:{path}", max_queries=MAX_QUERIES,
                                   max_k=MAX_K, max_ef=MAX_EF, log_level="error", warm_up="off"))
    srv.start()
    srv.mark_ready()
    srv.index.upsert(np.arange(SEEDED), np.random.default_rng(1).standard_normal((SEEDED, DIM)).astype(np.float32),
                     categories=[[i % 3] for i in range(SEEDED)])
    yield srv
    srv.stop(grace=1)


@st.composite
def query_features(draw: st.DrawFn) -> index_pb2.SearchRequest:
    """A search of the neural server: the model's one feature ``query`` float32[b, 4],
    or a feature with another name, dtype, shape or bytes, or an extra one; sometimes
    categories; sometimes query vectors as well."""
    broken = draw(faults("name", "dtype", "shape", "data", "extra", "queries", "k"))
    b = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(tensors.DTYPES)) if "dtype" in broken else "float32"
    shape = [b, QUERY_DIM]
    if "shape" in broken:
        shape = draw(st.one_of(st.sampled_from([[b], [b, QUERY_DIM, 1], [0, QUERY_DIM], [b, QUERY_DIM + 1]]),
                               st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if "data" in broken or dtype != "float32":
        data = draw(st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 8)))
    else:
        data = draw(rows_of(b, QUERY_DIM)).tobytes()
    request = index_pb2.SearchRequest(k=draw(bad_k if "k" in broken else st.integers(1, 20)))
    request.features[draw(st.text(max_size=6)) if "name" in broken else "query"].CopyFrom(
        index_pb2.Tensor(dtype=dtype, shape=shape, data=data))
    if "extra" in broken:
        request.features["extra"].CopyFrom(tensors.encode(np.zeros((b, 2), np.float32)))
    if "queries" in broken:
        request.queries, request.dim = draw(rows_of(b)).tobytes(), DIM
    if draw(st.integers(0, 3)) == 0:
        request.categories.extend(draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    return request


@fuzz(100)
@given(request=query_features())
def test_fuzzed_query_features_are_searched_or_refused_clearly_by_a_neural_server(
        neural_server: IndexServer, request: index_pb2.SearchRequest) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{neural_server.port}") as ch:
        response = _call(neural_server, index_pb2_grpc.IndexServiceStub(ch).Search, request, read=True)
    if response is None:
        return
    rows = request.features["query"].shape[0]
    assert response.num_queries == rows and response.num_categories == len(request.categories)
    assert len(response.ids) == 8 * rows * max(len(request.categories), 1) * response.k
