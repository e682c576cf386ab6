"""The gRPC server: ``IndexService`` (search, writes, get, stats, the category taxonomy),
the standard health service (NOT_SERVING until ready) and server reflection (grpcurl
works).

The servicer only translates: protobuf <-> numpy at the edge, the index's own input
rules (``Index.prepare_*``, ``search``, ``get``, ``set_category_parents``: their
ValueError, which says what to do, becomes INVALID_ARGUMENT), limits (documented in
ServerConfig), deadlines, and status codes. Searches run on the RPC thread; writes go
through the single ``Writer`` and the RPC returns once they are searchable. Taxonomy
changes are rare and all-or-nothing: ``SetCategoryParents`` calls the index directly,
which applies it under its write lock between the writer's batches.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rtindex.api import tensors
from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.core.categories import ItemCategories
from rtindex.core.deadlines import SearchDeadlineExceeded
from rtindex.core.index import Index
from rtindex.core.writer import JournalFailed, Overloaded, Writer
from rtindex.service.coalescer import SearchCoalescer
from rtindex.service.gcwatch import GcPauses
from rtindex.service.metrics import ServerMetrics
from rtindex.service.security import ServerSecurity
from rtindex.service.settings import ServerConfig
from rtindex.snapshots.restore import Restored, kafka_start_offsets, restore_newest
from rtindex.snapshots.snapshotter import Snapshotter
from rtindex.snapshots.store import SnapshotStore
from rtindex.snapshots.wal import WriteAheadLog, covered_by, covered_by_every_kept, replay

if TYPE_CHECKING:
    from rtindex.consumers.ingest import KafkaIngestor

log = logging.getLogger("rtindex.server")

SERVICE_NAME = index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Undecodable:
    """A request whose bytes are not a valid protobuf message of the method's type: the
    method answers INVALID_ARGUMENT (gRPC's own deserializer failure is INTERNAL)."""

    def __init__(self, message: str, error: Exception) -> None:
        self.message, self.error = message, error

    def reject(self, method: str) -> ValueError:
        return ValueError(f"{method}: the request is not a valid {self.message} protobuf ({self.error}); send a "
                          f"serialized {self.message}")


def _lenient(message_class: Any) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return message_class.FromString(raw)
        except Exception as exc:  # DecodeError, or invalid UTF-8 in a string field
            return _Undecodable(message_class.DESCRIPTOR.full_name, exc)

    return deserialize


def add_index_service(servicer: IndexServicer, server: grpc.Server) -> None:
    """``index_pb2_grpc.add_IndexServiceServicer_to_server`` with lenient request
    deserializers (``_Undecodable``)."""
    handlers = {}
    for method in index_pb2.DESCRIPTOR.services_by_name["IndexService"].methods:
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming else
                grpc.unary_unary_rpc_method_handler)
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(index_pb2, method.input_type.name)),
            response_serializer=getattr(index_pb2, method.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class _QueuedWriteDeadline(_Reject):
    """A write's deadline passed while it was queued: it may still be applied."""


def _seconds_left(context: grpc.ServicerContext) -> float | None:
    """The call's remaining time, or None without a deadline (grpc then reports an
    enormous number, which timed waits cannot take)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e7 else max(0.0, remaining)


def _rpc(method: Callable[[IndexServicer, Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    """Status-code translation and accounting shared by every RPC."""
    name = method.__name__

    def wrapper(self: IndexServicer, request: Any, context: grpc.ServicerContext) -> Any:
        # every answer is observed once, with its status code (rtindex_rpc_duration_seconds)
        t0 = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            if isinstance(request, _Undecodable):
                raise request.reject(name)
            remaining = _seconds_left(context)
            if remaining is not None and remaining <= 0:
                raise _Reject(grpc.StatusCode.DEADLINE_EXCEEDED, f"{name}: the deadline passed before the call started")
            return method(self, request, context)
        except _Reject as exc:
            code, message = exc.code, str(exc)
            if isinstance(exc, _QueuedWriteDeadline):
                self.metrics.queued_write_deadline_exceeded(name)
        except ValueError as exc:  # the request broke a rule of the wire, the limits or the index
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except Overloaded as exc:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
        except SearchDeadlineExceeded as exc:  # the work was abandoned, not finished late
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
        except JournalFailed as exc:  # not applied: safe to retry once the disk is fixed
            code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
        except BaseException:  # the method aborted the call itself, or a bug (gRPC answers UNKNOWN)
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            self.metrics.observe_rpc(name, code.name, time.perf_counter() - t0)
        context.abort(code, message)

    wrapper.__name__ = name
    return wrapper


class IndexServicer(index_pb2_grpc.IndexServiceServicer):
    def __init__(self, index: Index, writer: Writer, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.index = index
        self.writer = writer
        self.config = config
        self.metrics = metrics  # every RPC is observed there; Stats reads it
        self.snapshotter: Snapshotter | None = None
        self.scorer: Any = None  # a neural scorer (rtindex.core.neural.SavedModelScorer) or None: the index metric
        self.coalescer = (SearchCoalescer(index, config.coalesce_max_queries, config.coalesce_wait_ms / 1000)
                          if config.coalesce == "on" else None)

    # ------------------------------------------------------------------ decoding
    # Only wire -> numpy here, plus the server's own limits: the rules of the data
    # itself are the index's (Index.prepare_upsert / prepare_delete / search / get),
    # applied once, so a gRPC caller and an in-process caller are told the same things.
    def _matrix(self, raw: bytes, dim: int, what: str) -> np.ndarray:
        """float32[n, dim] view of little-endian row-major bytes (n may be 0)."""
        if dim <= 0:
            raise ValueError(f"{what}: dim={dim}; set dim to the length of each vector (this index has dimension "
                             f"{self.index.config.dim})")
        if len(raw) % (4 * dim):
            raise ValueError(
                f"{what}: {len(raw)} bytes is not a whole number of float32 rows of dimension {dim} "
                f"({4 * dim} bytes each); send little-endian float32, row-major"
            )
        return np.frombuffer(raw, "<f4").reshape(-1, dim)

    def _ids(self, values: Any, what: str) -> np.ndarray:
        if len(values) > self.config.max_write_ids:
            raise ValueError(f"{what}: {len(values)} ids in one request; the limit is {self.config.max_write_ids}, "
                             "split it")
        return np.asarray(values, np.int64)

    @staticmethod
    def _versions(values: Any) -> np.ndarray | None:
        """None when the request has none: an unversioned write."""
        return np.asarray(values, np.int64) if len(values) else None

    def _item_categories(self, lists: Any, n: int) -> ItemCategories | None:
        """One CategoryList per item -> the index's ItemCategories; None when the request
        has none (no item has categories)."""
        if not len(lists):
            return None
        return self.index.prepare_categories([list(entry.ids) for entry in lists], n)

    def _search_quotas(self, request: index_pb2.SearchRequest, n_queries: int) -> tuple[Any, int]:
        """(k for Index.search: an int, or one quota per category; the response's k =
        the largest quota), checked against the server's limits. The rules on the
        categories themselves (count, ids) are the index's."""
        cfg = self.config
        quotas = list(request.category_k)
        if not quotas:
            k = request.k
            if not 1 <= k <= cfg.max_k:
                raise ValueError(f"search: k must be in 1..{cfg.max_k}, got {k}")
            largest = k
        else:
            if not request.categories:
                raise ValueError("search: category_k (quotas) was sent without categories; name the categories, "
                                 "one quota per category, or leave category_k empty and set k")
            if len(quotas) != len(request.categories):
                raise ValueError(f"search: {len(quotas)} entries in category_k for {len(request.categories)} "
                                 "categories; give one quota per category, or none (then k is each one's quota)")
            if not 1 <= min(quotas) <= max(quotas) <= cfg.max_k:
                raise ValueError(f"search: every category_k entry must be in 1..{cfg.max_k}, got "
                                 f"{min(quotas)}..{max(quotas)}")
            largest = max(quotas)
            if request.k not in (0, largest):
                raise ValueError(f"search: k={request.k} but the largest category_k is {largest}; with category_k "
                                 "leave k = 0 (or set it to the largest quota)")
            k = quotas
        if request.categories:
            cells = n_queries * len(request.categories) * largest
            if cells > cfg.max_queries * cfg.max_k:
                raise ValueError(
                    f"search: {n_queries} queries x {len(request.categories)} categories x k={largest} is {cells:,} "
                    f"results; one response holds at most {cfg.max_queries * cfg.max_k:,} (max_queries x max_k): "
                    "split the queries or the categories over several requests")
        return k, largest

    # ------------------------------------------------------------------ RPCs
    @_rpc
    def Search(self, request: index_pb2.SearchRequest, context: grpc.ServicerContext) -> index_pb2.SearchResponse:
        cfg = self.config
        queries = self._queries(request)
        n = _largest_batch(queries)  # a bound for the limit; the index checks the batch itself
        if n > cfg.max_queries:
            raise ValueError(f"search: {n} queries in one request; the limit is {cfg.max_queries}, split it")
        k, largest = self._search_quotas(request, n)
        ef = request.ef or None
        if ef is not None and ef > cfg.max_ef:
            raise ValueError(f"search: ef must be at most {cfg.max_ef}, got {ef}")
        level_ef = list(request.level_ef) or None
        if level_ef and max(level_ef) > cfg.max_k:
            raise ValueError(f"search: level_ef entries must be at most {cfg.max_k}, got {max(level_ef)}")
        remaining = _seconds_left(context)
        deadline = None if remaining is None else time.monotonic() + remaining
        categories = list(request.categories) or None
        if self.coalescer is not None and self.scorer is None:
            res = self.coalescer.search(queries, k, ef, level_ef, categories, deadline)
        else:
            res = self.index.search(queries, k=k, ef=ef, level_ef=level_ef, scorer=self.scorer, deadline=deadline,
                                    categories=categories)
        return index_pb2.SearchResponse(
            num_queries=len(res.ids), k=largest, ids=res.ids.astype("<i8").tobytes(),
            scores=res.scores.astype("<f4").tobytes(), hops=res.hops.tolist(), evaluations=res.evaluations.tolist(),
            num_categories=0 if categories is None else len(categories),
        )

    def _queries(self, request: index_pb2.SearchRequest) -> Any:
        """Query vectors, or with a neural scorer the named query features."""
        if self.scorer is None:
            if request.features:
                raise ValueError("search: query features were sent but this server scores with the index metric; "
                                 "send query vectors (queries, dim), or start the server with --scorer "
                                 "savedmodel:PATH")
            return self._matrix(request.queries, request.dim, "search")
        if request.queries:
            raise ValueError("search: this server scores with a neural model; send the query tower's features "
                             f"{sorted(self.scorer.feature_spec)} in `features`, not query vectors")
        if not request.features:
            raise ValueError(f"search: no query features; the model needs {sorted(self.scorer.feature_spec)}")
        return tensors.decode_all(request.features)

    def _wait(self, future: futures.Future, context: grpc.ServicerContext, what: str) -> Any:
        try:
            return future.result(timeout=_seconds_left(context))
        except futures.TimeoutError:
            raise _QueuedWriteDeadline(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{what}: the deadline passed while the write was queued; it may still be applied — retry with "
                "the same versions to make the retry harmless",
            ) from None

    @_rpc
    def Upsert(self, request: index_pb2.UpsertRequest, context: grpc.ServicerContext) -> index_pb2.UpsertResponse:
        ids, rows, versions = self.index.prepare_upsert(
            self._ids(request.ids, "upsert"), self._matrix(request.embeddings, request.dim, "upsert"),
            self._versions(request.versions))
        categories = self._item_categories(request.categories, len(ids))
        result = self._wait(self.writer.upsert(ids, rows, versions, categories=categories, durable=True), context,
                            "upsert")
        return index_pb2.UpsertResponse(
            inserted=result.inserted, refreshed=result.refreshed, skipped_stale=result.skipped_stale
        )

    @_rpc
    def Delete(self, request: index_pb2.DeleteRequest, context: grpc.ServicerContext) -> index_pb2.DeleteResponse:
        ids, versions = self.index.prepare_delete(self._ids(request.ids, "delete"), self._versions(request.versions))
        result = self._wait(self.writer.delete(ids, versions, durable=True), context, "delete")
        return index_pb2.DeleteResponse(
            deleted=result.deleted, unknown_ids=result.unknown_ids.tolist(), skipped_stale=result.skipped_stale
        )

    @_rpc
    def Get(self, request: index_pb2.GetRequest, context: grpc.ServicerContext) -> index_pb2.GetResponse:
        res = self.index.get(self._ids(request.ids, "get"))
        return index_pb2.GetResponse(
            dim=self.index.config.dim, found=res.found.tolist(), embeddings=res.vectors.astype("<f4").tobytes(),
            versions=res.versions.tolist(),
        )

    @_rpc
    def SetCategoryParents(self, request: index_pb2.SetCategoryParentsRequest,
                           context: grpc.ServicerContext) -> index_pb2.SetCategoryParentsResponse:
        children, parents = self.index.prepare_category_parents(np.asarray(request.children, np.int64),
                                                                np.asarray(request.parents, np.int64))
        moved = self._wait(self.writer.set_category_parents(children, parents, durable=True), context,
                           "set_category_parents")
        log.info("taxonomy changed", extra={"edges": len(request.children), "items_moved": moved})
        return index_pb2.SetCategoryParentsResponse(items_moved=moved)

    @_rpc
    def CategoryParents(self, request: index_pb2.CategoryParentsRequest,
                        context: grpc.ServicerContext) -> index_pb2.CategoryParentsResponse:
        children, parents = self.index.category_parents()
        return index_pb2.CategoryParentsResponse(children=children.tolist(), parents=parents.tolist())

    def Snapshot(self, request: index_pb2.SnapshotRequest,
                 context: grpc.ServicerContext) -> Iterator[index_pb2.SnapshotProgress]:
        t0 = time.perf_counter()
        if isinstance(request, _Undecodable):
            self.metrics.observe_rpc("Snapshot", grpc.StatusCode.INVALID_ARGUMENT.name, time.perf_counter() - t0)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.reject("Snapshot")))
        if self.snapshotter is None:
            self.metrics.observe_rpc("Snapshot", grpc.StatusCode.FAILED_PRECONDITION.name, time.perf_counter() - t0)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "Snapshot: this server has no data directory; start it with --data-dir D to take snapshots")
        updates: queue.Queue[tuple[int, int]] = queue.Queue()
        future = self.snapshotter.request(lambda done, total: updates.put((done, total)))  # type: ignore[union-attr]
        while not (future.done() and updates.empty()):
            try:
                done, total = updates.get(timeout=0.1)
            except queue.Empty:
                continue
            yield index_pb2.SnapshotProgress(bytes_written=done, bytes_total=total)
        try:
            info = future.result()
        except Exception as exc:
            self.metrics.observe_rpc("Snapshot", grpc.StatusCode.INTERNAL.name, time.perf_counter() - t0)
            context.abort(grpc.StatusCode.INTERNAL, f"Snapshot failed: {exc} (details in the server log)")
        self.metrics.observe_rpc("Snapshot", grpc.StatusCode.OK.name, time.perf_counter() - t0)
        offsets = {int(p): int(o) for p, o in (info.extra.get("kafka") or {}).get("offsets", {}).items()}
        yield index_pb2.SnapshotProgress(done=True, info=index_pb2.SnapshotInfo(
            seq=info.seq, path=str(info.path), items=info.items, size_bytes=info.bytes,
            pause_ms=info.pause_seconds * 1e3, write_seconds=info.write_seconds, kafka_offsets=offsets))

    @_rpc
    def Stats(self, request: index_pb2.StatsRequest, context: grpc.ServicerContext) -> index_pb2.StatsResponse:
        counters = self.metrics.stats()  # a view of the metrics registry (rtindex.service.metrics)
        cfg = self.index.config
        return index_pb2.StatsResponse(
            items=int(counters.get("items", len(self.index))), dim=cfg.dim, metric=cfg.metric,
            memory_bytes=int(counters.get("memory_bytes", 0)), counters=counters,
        )


def _largest_batch(queries: Any) -> int:
    """Rows of a query matrix, or the longest leading dimension of named features."""
    if isinstance(queries, np.ndarray):
        return len(queries)
    return max((len(feature) for feature in queries.values()), default=0)


def load_scorer(spec: str, dim: int) -> Any:
    """``savedmodel:PATH`` -> a neural scorer; "" -> None (the index metric)."""
    if not spec:
        return None
    kind, _, path = spec.partition(":")
    if kind != "savedmodel" or not path:
        raise ValueError(f"scorer must be savedmodel:PATH (a TensorFlow SavedModel directory), got {spec!r}")
    from rtindex.core.neural import SavedModelScorer  # TensorFlow is optional: pip install rtindex[tf]

    scorer = SavedModelScorer(path, dim=dim)
    log.info("neural scorer loaded", extra={"path": path, "features": sorted(scorer.feature_spec)})
    return scorer


class IndexServer:
    """One index behind gRPC. ``start()`` binds and returns the port; the health
    service says SERVING once the index is ready; ``stop()`` drains."""

    def __init__(self, config: ServerConfig, index: Index | None = None) -> None:
        self.config = config
        self.metrics = ServerMetrics()  # this server's registry: /metrics (--metrics-port) and Stats read it
        self.security = ServerSecurity(config)  # first: a bad key or certificate file stops us before a restore
        self.store: SnapshotStore | None = None
        self.restored: Restored | None = None
        if config.data_dir:
            self.store = SnapshotStore(config.data_dir, config.snapshot_keep)
            self.store.lock()
            if index is None:
                self.restored = restore_newest(self.store, {"threads": config.threads, "ef_search": config.ef_search,
                                                              "device": config.device},
                                               dim=config.dim)
                index = self.restored.index if self.restored else None
        self.index = index if index is not None else Index.from_config(config.index_config())
        if self.restored is not None:
            self.index.log_seq = covered_by(self.restored.info)
        self.wal = self._open_wal()
        self.writer = Writer(self.index, config.write_queue, config.write_batch,
                             freshness_budget_s=config.freshness_budget_ms / 1000,
                             ef_construction_min=config.ef_construction_min, journal=self.wal)
        self.writer.observer = self.metrics.writer
        if self.wal is not None:  # acknowledged writes the snapshot does not hold
            replay(self.wal, self.writer, after=self.index.log_seq)
        self.health = health.HealthServicer()
        self.servicer = IndexServicer(self.index, self.writer, config, self.metrics)
        self.metrics.watch_index(self.index.stats, lambda: self.writer.queue_depth)
        self.servicer.scorer = load_scorer(config.scorer, self.index.config.dim)
        self.gc_pauses = GcPauses().install()
        self.metrics.watch_gc(self.gc_pauses)
        limit = config.max_message_mb * 1024 * 1024
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.grpc_threads, thread_name_prefix="rtindex-rpc"),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            interceptors=self.security.interceptors(),
        )
        self.metrics.watch_auth(self.security.counters)
        add_index_service(self.servicer, self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.grpc_server,
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = 0
        self._stopped = threading.Event()
        # SERVING needs both: the kernels compiled (warm-up) and the index ready (mark_ready)
        self._ready_lock = threading.Lock()
        self._kernels_ready = config.warm_up == "off"
        self._ready_asked = False
        self.ingestor: KafkaIngestor | None = None
        kafka = config.kafka_settings()
        if kafka is not None:
            from rtindex.consumers.ingest import KafkaIngestor
            from rtindex.consumers.taxonomy import resume_offsets

            # the index decides where to resume: a snapshot's offsets, or the beginning (the
            # taxonomy topic too: replaying edges a snapshot holds is not harmless)
            start = kafka_start_offsets(self.restored.info if self.restored else None, kafka.topic)
            captured = self.restored.info.extra.get("kafka") if self.restored else None
            self.ingestor = KafkaIngestor(self.index, self.writer, kafka, on_ready=self.mark_ready,
                                          start_offsets=start,
                                          taxonomy_offsets=resume_offsets(captured, kafka.category_topic))
            self.metrics.watch_kafka(self.ingestor)
        self.snapshotter: Snapshotter | None = None
        if self.store is not None:
            self.snapshotter = Snapshotter(
                self.index, self.store, self._capture_offsets,
                interval=config.snapshot_interval_s, every_ops=config.snapshot_every_ops,
                after_write=self._snapshot_written)
            self.servicer.snapshotter = self.snapshotter
            self.metrics.watch_snapshots(self.snapshotter)
        if self.restored is not None:
            self.metrics.watch_restore(self.restored.info.seq, self.restored.seconds)
        self.metrics_port: int | None = None  # where GET /metrics is served once started (None: not served)

    def _open_wal(self) -> WriteAheadLog | None:
        """The write-ahead log of the data directory (with ``wal`` on). With it off, a
        log holding records the snapshot lacks refuses the start: they were
        acknowledged."""
        if self.store is None:
            return None
        directory, covered = self.store.data_dir / "wal", self.index.log_seq
        if self.config.wal == "on":
            return WriteAheadLog(directory, covered, segment_bytes=self.config.wal_segment_mb << 20,
                                 metrics=self.metrics.wal())
        if directory.is_dir():
            pending = WriteAheadLog(directory, covered)
            pending.close()
            if pending.last_seq > covered:
                raise RuntimeError(
                    f"{directory} holds {pending.last_seq - covered} acknowledged write(s) the newest snapshot lacks, "
                    "and the write-ahead log is off: start once with --wal on (it replays them; a snapshot then "
                    "covers them), or delete that directory to drop them")
        return None

    def _capture_offsets(self) -> dict[str, Any]:
        """Stored in each snapshot (read under the index's write lock, with its state):
        the Kafka offsets and the last write-ahead-log record its state reflects."""
        out: dict[str, Any] = {"wal": {"seq": self.index.log_seq}}
        if self.ingestor is not None:
            out["kafka"] = self.ingestor.applied_offsets()
        return out

    def _snapshot_written(self) -> None:
        """Drop the log segments every kept snapshot covers."""
        if self.wal is not None and self.store is not None:
            self.wal.truncate_through(covered_by_every_kept(self.store))

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start(self) -> int:
        address = f"{self.config.host}:{self.config.port}"
        self.port = self.security.add_port(self.grpc_server, address)  # TLS when configured
        if self.port == 0:
            raise OSError(f"cannot listen on {address}: the port is taken or the address is not local")
        metrics_host = self.config.metrics_host or self.config.host
        if self.config.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(metrics_host, self.config.metrics_port)
        self.grpc_server.start()
        if self.snapshotter is not None:
            self.snapshotter.start()
        if self.ingestor is not None:
            self.ingestor.start()  # marks the server ready once it has caught up
        metrics = ({"metrics": f"http://{metrics_host}:{self.metrics_port}/metrics"}
                   if self.metrics_port is not None else {})
        log.info("listening", extra={"address": f"{self.config.host}:{self.port}", "dim": self.index.config.dim,
                                     "metric": self.index.config.metric, "items": len(self.index), **metrics})
        if not self._kernels_ready:
            threading.Thread(target=self._warm_up, name="rtindex-warmup", daemon=True).start()
        return self.port

    def _warm_up(self) -> None:
        from rtindex.service.warmup import warm_up

        try:
            warm_up(self.index.config, kafka=self.ingestor is not None, cancelled=self._stopped.is_set)
        except Exception:  # the kernels then compile on first use: slow first calls, not a broken server
            if not (self._stopped.is_set() or sys.is_finalizing()):
                log.exception("kernel warm-up failed; kernels compile on first use")
        with self._ready_lock:
            self._kernels_ready = True
            if self._ready_asked:
                self._serve()

    def mark_ready(self) -> None:
        """The index is ready (restored, caught up); health turns SERVING as soon as the
        kernels are compiled too (at once with --warm-up off or once the warm-up ended)."""
        with self._ready_lock:
            self._ready_asked = True
            if self._kernels_ready:
                self._serve()

    def _serve(self) -> None:
        if self._stopped.is_set():
            return
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"port": self.port})

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish (up to ``grace``
        seconds), apply queued writes, stop."""
        with self._ready_lock:  # a warm-up ending now cannot turn SERVING after this
            if self._stopped.is_set():
                return
            self._stopped.set()
            self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.config.grace_seconds if grace is None else grace
        log.info("draining", extra={"grace_seconds": grace})
        if self.ingestor is not None:
            self.ingestor.stop()  # applies and commits the batch in hand
        self.grpc_server.stop(grace).wait()
        self.writer.close()
        if self.snapshotter is not None:
            self.snapshotter.close(final=True)  # a clean restart needs no replay (the log it covers goes)
        if self.wal is not None:
            self.wal.close()
        if self.store is not None:
            self.store.unlock()
        self.gc_pauses.uninstall()
        self.metrics.close()  # last: scrapes during the drain are answered
        log.info("stopped", extra={"items": len(self.index)})

    def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
        self.stop()
