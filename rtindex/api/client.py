"""``IndexClient``: the gRPC client, with the numpy-in / numpy-out shape of
``rtindex.Index``.

Every call has a deadline (``timeout``, seconds). Errors come back as ``IndexClientError``
subclasses that also derive from the matching built-in (``InvalidArgument`` is a
ValueError, ``DeadlineExceeded`` a TimeoutError, ``Unavailable`` a ConnectionError), so
code written against ``Index`` handles them the same way.

Security (README: Running securely): ``api_key`` is sent with every call as
``authorization: Bearer <key>``; ``tls_ca`` (or ``tls=True`` for the system's trusted CAs)
connects over TLS, and ``tls_cert`` / ``tls_key`` present a client certificate (mutual
TLS). A refused key raises ``Unauthenticated`` (missing or wrong) or ``PermissionDenied``
(a read-only key on a write); both are PermissionErrors.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtindex.api import tensors
from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.core.results import DeleteResult, GetResult, SearchResult, UpsertResult

__all__ = [
    "DeadlineExceeded", "DeleteResult", "FailedPrecondition", "GetResult", "IndexClient", "IndexClientError",
    "InvalidArgument", "NotFound", "Overloaded", "PermissionDenied", "SearchResult", "Unauthenticated",
    "Unavailable", "UpsertResult", "check_api_key", "read_api_key_file", "read_pem",
]

PemSource = str | os.PathLike[str] | bytes  # a path to a PEM file, or the PEM bytes themselves

class IndexClientError(RuntimeError):
    """A call failed; ``code`` is the gRPC status code, the message says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message


class InvalidArgument(IndexClientError, ValueError):
    """The request was refused as invalid; nothing was changed."""


class NotFound(IndexClientError, KeyError):
    pass


class Overloaded(IndexClientError):
    """The server is at its limit (RESOURCE_EXHAUSTED); retry with backoff."""


class DeadlineExceeded(IndexClientError, TimeoutError):
    """The call ran past its deadline. A write may still have been applied; retrying it
    with the same versions is harmless."""


class Unavailable(IndexClientError, ConnectionError):
    """No server answered at the address (not started, stopped, or unreachable)."""


class FailedPrecondition(IndexClientError, RuntimeError):
    """The server cannot do this in its configuration (e.g. Snapshot without --data-dir)."""


class Unauthenticated(IndexClientError, PermissionError):
    """The server wants an API key and none, or a wrong one, was sent (``api_key=``)."""


class PermissionDenied(IndexClientError, PermissionError):
    """The key is valid but may not do this (a read-only key on a write)."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

_KEY_ALPHABET = re.compile(r"[!-~]+")  # printable ASCII without spaces: what a gRPC header value carries as is
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def _is_local(target: str) -> bool:
    """Whether a plaintext call to ``target`` stays on this machine."""
    return target.startswith(("unix:", "unix-abstract:")) or target.rsplit(":", 1)[0] in _LOCAL_HOSTS


def read_pem(source: PemSource, what: str = "") -> bytes:
    """PEM bytes from a path (or the bytes given); ValueError naming the file (and
    ``what`` it is for) otherwise."""
    prefix = f"{what}: " if what else ""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ValueError(f"{prefix}cannot read {source} ({exc.strerror}); give a readable PEM file") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{prefix}{source if not isinstance(source, bytes) else 'the bytes given'} is not PEM (no "
                         "-----BEGIN line); give the certificate or key in PEM format (openssl x509 -inform der -in "
                         "FILE -out FILE.pem converts a DER certificate)")
    return data


def check_api_key(key: str) -> None:
    """ValueError unless ``key`` can travel as a header value (the message never repeats it)."""
    if not _KEY_ALPHABET.fullmatch(key):
        raise ValueError("an API key must be printable ASCII without spaces (a gRPC header value); check that no "
                         "newline or quote came with it")


def read_api_key_file(path: str | os.PathLike[str]) -> str:
    """The API key in a file: its first line that is not blank or a # comment (a
    server's key file may hold several; a client sends one)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the API key file {path} ({getattr(exc, 'strerror', None) or exc}); give a "
                         "readable file holding the key") from None
    for line in lines:
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()
    raise ValueError(f"the API key file {path} holds no key; write the key on a line of its own")


def _int_list(values: Any, what: str, floor: int | None = None) -> list[int]:
    """Integers of a scalar or 1-D sequence, as a list for a repeated field. The server
    checks the values (it says what is wrong); this only refuses what the wire cannot
    carry (fractions, nesting, text), and with ``floor`` what an unsigned field cannot."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a list of integers, got {values!r}")
    if floor is not None and arr.size and arr.min() < floor:
        raise ValueError(f"{what}: every entry must be >= {floor}, got {arr.min()}")
    return arr.astype(np.int64).tolist()


def _channel_credentials(tls: bool, ca: PemSource | None, cert: PemSource | None,
                         key: PemSource | None) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for a plaintext channel."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together: give both (the client certificate and its private key) "
                         "for mutual TLS, or neither")
    if not (tls or ca is not None or cert is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else read_pem(ca, "tls_ca"),
        private_key=None if key is None else read_pem(key, "tls_key"),
        certificate_chain=None if cert is None else read_pem(cert, "tls_cert"),
    )


def _raise(exc: grpc.RpcError) -> None:
    code = exc.code()  # type: ignore[attr-defined]
    raise _ERRORS.get(code, IndexClientError)(code, exc.details() or "")  # type: ignore[attr-defined]


class IndexClient:
    """Client of one rtindex server, e.g. ``IndexClient("127.0.0.1:50051")``, or over
    TLS with a key: ``IndexClient("index.example:50051", api_key=key, tls_ca="ca.pem")``.

    api_key: sent with every call (``authorization: Bearer <key>``).
    tls_ca: the CA certificate(s) that signed the server's certificate (a PEM path or
    bytes); connects over TLS. tls: TLS verified against the system's trusted CAs
    (implied by tls_ca, tls_cert). tls_cert, tls_key: this client's certificate and key,
    for a server that requires mutual TLS."""

    def __init__(self, target: str, timeout: float = 10.0, max_message_mb: int = 64, *, api_key: str | None = None,
                 tls: bool = False, tls_ca: PemSource | None = None, tls_cert: PemSource | None = None,
                 tls_key: PemSource | None = None) -> None:
        self.target = target
        self.timeout = timeout
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        credentials = _channel_credentials(tls, tls_ca, tls_cert, tls_key)
        self.tls = credentials is not None
        # metadata rather than call credentials: those need a secure channel, and a key is
        # also useful on a plaintext one (a local server, or TLS ended at a proxy)
        self._metadata: tuple[tuple[str, str], ...] | None = None
        if api_key is not None:
            check_api_key(api_key)
            self._metadata = (("authorization", f"Bearer {api_key}"),)
            if not self.tls and not _is_local(target):
                warnings.warn(f"IndexClient: the API key goes to {target} without TLS, readable on the network; "
                              "pass tls_ca=... (or tls=True)", stacklevel=2)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = index_pb2_grpc.IndexServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            _raise(exc)

    # ------------------------------------------------------------------ API
    def search(
        self, queries: Any = None, k: int | Sequence[int] = 10, ef: int | None = None,
        level_ef: Sequence[int] | None = None, timeout: float | None = None, features: dict[str, Any] | None = None,
        categories: Sequence[int] | None = None,
    ) -> SearchResult:
        """Query vectors ``queries`` [n, dim]; or, for a server with a neural scorer, the
        query tower's named ``features`` (batch-first arrays).

        categories: category ids; then the best items of each category, each its own
        quota: ``k``, or ``k=[k1, ...]`` one per category, and ``ids`` / ``scores`` are
        [n, n_categories, max k] (-1 / -inf padded), as ``Index.search`` returns them."""
        request = index_pb2.SearchRequest(ef=ef or 0, level_ef=list(level_ef or []))
        if categories is not None:
            request.categories.extend(_int_list(categories, "search: categories"))
            if not request.categories:  # on the wire, no categories is a plain search
                raise ValueError("search: categories is empty; name at least one category (or pass None to search "
                                 "all items)")
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            request.k = int(k)
        elif categories is None:
            raise ValueError(f"search: k must be an integer, got {k!r}; a list of quotas (one per category) needs "
                             "categories")
        else:
            request.category_k.extend(_int_list(k, "search: k (one quota per category)", floor=1))
        if features is not None:
            for name, tensor in tensors.encode_all(features).items():
                request.features[name].CopyFrom(tensor)
        if queries is not None:
            q = np.asarray(queries, dtype="<f4")
            if q.ndim == 1:
                q = q.reshape(1, -1)
            if q.ndim != 2:
                raise ValueError(f"search: queries must be [n, dim], got shape {q.shape}")
            request.queries, request.dim = np.ascontiguousarray(q).tobytes(), q.shape[1]
        r = self._call(self._stub.Search, request, timeout)
        shape = (r.num_queries, r.num_categories, r.k) if r.num_categories else (r.num_queries, r.k)
        return SearchResult(
            ids=np.frombuffer(r.ids, "<i8").reshape(shape).astype(np.int64),
            scores=np.frombuffer(r.scores, "<f4").reshape(shape).astype(np.float32),
            hops=np.asarray(r.hops, np.int64), evaluations=np.asarray(r.evaluations, np.int64),
        )

    def upsert(self, ids: Any, vectors: Any, versions: Any | None = None, timeout: float | None = None,
               categories: Sequence[Any] | None = None) -> UpsertResult:
        """categories: one list of category ids per item (None or [] for none), as
        ``Index.upsert`` takes them; an applied upsert replaces the item's categories
        (without ``categories``, the upserted items are in none)."""
        x = np.asarray(vectors, dtype="<f4")
        if x.ndim == 1:
            x = x.reshape(1, -1)
        request = index_pb2.UpsertRequest(
            ids=np.asarray(ids, np.int64).ravel().tolist(), embeddings=np.ascontiguousarray(x).tobytes(),
            dim=x.shape[1] if x.ndim == 2 else 0,
            versions=[] if versions is None else np.asarray(versions, np.int64).ravel().tolist(),
        )
        if categories is not None:
            lists = categories.lists() if hasattr(categories, "lists") else categories  # rtindex's ItemCategories
            if isinstance(lists, (str, bytes)) or not hasattr(lists, "__len__"):
                raise ValueError(f"upsert: categories must be one list of category ids per item, got {categories!r}")
            for i, entry in enumerate(lists):
                request.categories.add().ids.extend(
                    [] if entry is None else _int_list(entry, f"upsert: categories[{i}]"))
        r = self._call(self._stub.Upsert, request, timeout)
        return UpsertResult(inserted=r.inserted, refreshed=r.refreshed, skipped_stale=r.skipped_stale)

    def delete(self, ids: Any, versions: Any | None = None, timeout: float | None = None) -> DeleteResult:
        request = index_pb2.DeleteRequest(
            ids=np.asarray(ids, np.int64).ravel().tolist(),
            versions=[] if versions is None else np.asarray(versions, np.int64).ravel().tolist(),
        )
        r = self._call(self._stub.Delete, request, timeout)
        return DeleteResult(
            deleted=r.deleted, unknown_ids=np.asarray(r.unknown_ids, np.int64), skipped_stale=r.skipped_stale
        )

    def get(self, ids: Any, timeout: float | None = None) -> GetResult:
        request = index_pb2.GetRequest(ids=np.asarray(ids, np.int64).ravel().tolist())
        r = self._call(self._stub.Get, request, timeout)
        return GetResult(
            found=np.asarray(r.found, bool),
            vectors=np.frombuffer(r.embeddings, "<f4").reshape(len(r.found), r.dim).astype(np.float32),
            versions=np.asarray(r.versions, np.int64),
        )

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        r = self._call(self._stub.Stats, index_pb2.StatsRequest(), timeout)
        out: dict[str, Any] = {k: (int(v) if float(v).is_integer() else v) for k, v in r.counters.items()}
        out.update(items=r.items, dim=r.dim, metric=r.metric, memory_bytes=r.memory_bytes)
        return out

    def set_category_parents(self, children: Any, parents: Any, timeout: float | None = None) -> int:
        """Make ``parents[i]`` the parent of category ``children[i]`` (-1: make it a
        root); all or nothing. Returns the number of items whose memberships moved."""
        request = index_pb2.SetCategoryParentsRequest(
            children=_int_list(children, "set_category_parents: children"),
            parents=_int_list(parents, "set_category_parents: parents"),
        )
        return int(self._call(self._stub.SetCategoryParents, request, timeout).items_moved)

    def category_parents(self, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(children, parents) int64: every edge of the server's taxonomy."""
        r = self._call(self._stub.CategoryParents, index_pb2.CategoryParentsRequest(), timeout)
        return np.asarray(r.children, np.int64), np.asarray(r.parents, np.int64)

    def snapshot(self, progress: Callable[[int, int], None] | None = None,
                 timeout: float | None = 3600.0) -> dict[str, Any]:
        """Have the server write a snapshot to its data directory now; ``progress(done,
        total)`` gets the bytes written as it goes. Returns the snapshot's details (seq,
        path, items, size_bytes, pause_ms, write_seconds, kafka_offsets)."""
        try:
            for update in self._stub.Snapshot(index_pb2.SnapshotRequest(), timeout=timeout, metadata=self._metadata):
                if update.done:
                    i = update.info
                    return {"seq": i.seq, "path": i.path, "items": i.items, "size_bytes": i.size_bytes,
                            "pause_ms": i.pause_ms, "write_seconds": i.write_seconds,
                            "kafka_offsets": dict(i.kafka_offsets)}
                if progress is not None:
                    progress(update.bytes_written, update.bytes_total)
        except grpc.RpcError as exc:
            _raise(exc)
        raise IndexClientError(grpc.StatusCode.UNKNOWN, "Snapshot: the stream ended without a result")

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """SERVING, NOT_SERVING, ... (the standard grpc.health.v1 check)."""
        r = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until the server reports SERVING (raises DeadlineExceeded otherwise)."""
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = self.health(timeout=max(0.1, min(2.0, end - time.monotonic())))
                if last == "SERVING":
                    return
            except IndexClientError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.target} not SERVING after {timeout} s ({last})")

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:  # never the key
        return f"IndexClient({self.target!r}, tls={self.tls}, api_key={'set' if self._metadata else 'none'})"

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
