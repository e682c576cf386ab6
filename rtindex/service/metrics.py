"""The server's metrics: one ``prometheus_client`` registry per server, served over HTTP
on ``--metrics-port`` (``GET /metrics``) and read by the ``Stats`` RPC.

Every family is defined once, in ``FAMILIES`` (name, type, labels, meaning; README
"Metrics" lists them). Where the figures come from:

- the server itself: request latency per method and status code (``observe_rpc``);
- hooks the lower layers are given, which keep them free of this module: the writer
  (``rtindex.core.writer.WriteObserver``: ``WriterMetrics``), the Kafka ingestor
  (``IngestObserver``: ``KafkaMetrics``), the snapshotter (``SnapshotObserver``:
  ``SnapshotMetrics``) and the write-ahead log (``WalMetrics``, from ``ServerMetrics.wal()``);
- the core's own bookkeeping, read when the registry is collected (a scrape or a
  ``Stats`` call; no polling thread): ``Index.stats()``, ``KafkaIngestor.counters()``,
  ``Snapshotter.counters()``, the GC pauses (``gcwatch.GcPauses``), the write queue.

``Stats`` is a view of the registry (``ServerMetrics.stats()``): each collected sample is
mapped back to the ``Stats`` key it has always had (the ``_*_FIGURES`` tables, read both
ways, for the figures of the core's dictionaries; ``_RULES`` and ``_rpc_keys`` for the rest),
so ``server_rpc_Search_ok`` is the count of ``rtindex_rpc_duration_seconds{method="Search",
code="OK"}`` and ``kafka_lag_total`` the sum of ``rtindex_kafka_lag_messages``. Units in
Prometheus are base units (seconds, bytes); a ``Stats`` key named ``..._ms`` is the same
figure times 1000.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from rtindex.consumers.ingest import KafkaIngestor
    from rtindex.service.gcwatch import GcPauses
    from rtindex.snapshots.snapshotter import Snapshotter
    from rtindex.snapshots.store import SnapshotInfo


class Family(NamedTuple):
    kind: str  # counter | gauge | histogram | info
    labels: tuple[str, ...]
    help: str


# bucket upper bounds, seconds
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WRITE_BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# the writer's default freshness budget is 20 ms: a bound sits on it
FRESHNESS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FSYNC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Every metric the server exposes (besides prometheus_client's process_* figures).
FAMILIES: dict[str, Family] = {
    # requests
    "rtindex_rpc_duration_seconds": Family("histogram", ("method", "code"), (
        "Time to answer an IndexService call, by method and gRPC status code (errors included)")),
    "rtindex_write_queue_deadline_exceeded_total": Family("counter", ("method",), (
        "Upsert/Delete calls answered DEADLINE_EXCEEDED because their deadline passed while the write was queued "
        "(the write may still be applied); also counted in rtindex_rpc_duration_seconds")),
    "rtindex_auth_refused_total": Family("counter", ("code",), (
        "Calls refused before reaching a method: no valid API key (UNAUTHENTICATED) or a read-only key asking "
        "to write (PERMISSION_DENIED)")),
    # the writer
    "rtindex_write_batch_duration_seconds": Family("histogram", ("kind",), (
        "Time to apply one write batch to the index (kind: upsert, delete, taxonomy), until it is searchable")),
    "rtindex_write_requests_total": Family("counter", ("kind",), "Write requests applied (merged into batches)"),
    "rtindex_write_ids_total": Family("counter", ("kind",), "Ids in the write batches applied"),
    "rtindex_write_reduced_ef_batches_total": Family("counter", (), (
        "Upsert batches linked with a narrower insert beam to stay within the freshness budget")),
    "rtindex_write_queue_depth": Family("gauge", (), "Writes waiting for the writer"),
    # the index
    "rtindex_items": Family("gauge", (), "Live items in the index"),
    "rtindex_nodes": Family("gauge", ("state",), "Graph nodes (state: live, tombstoned)"),
    "rtindex_entry_level": Family("gauge", (), "Level of the graph's entry node (-1: empty)"),
    "rtindex_index_info": Family("info", ("metric", "device"), "Similarity metric and search device"),
    "rtindex_index_dimension": Family("gauge", (), "Embedding dimension"),
    "rtindex_index_m": Family("gauge", (), "HNSW degree M (level 0 holds 2M)"),
    "rtindex_index_ef_construction": Family("gauge", (), "Insert beam width at full quality"),
    "rtindex_index_slots": Family("gauge", ("pool", "state"), (
        "Table slots by pool (node, upper_row, item, category_node) and state (in_use, free, waiting: freed, "
        "reusable once no search can still read it)")),
    "rtindex_index_slots_capacity": Family("gauge", ("pool",), "Allocated table slots by pool"),
    "rtindex_deleted_versions_kept": Family("gauge", (), "Versions of deleted ids kept to refuse stale writes"),
    "rtindex_memory_bytes": Family("gauge", (), "Bytes allocated by the index tables and scratch (categories included)"),
    "rtindex_memory_used_bytes": Family("gauge", (), "Bytes of the table rows in use (categories included)"),
    "rtindex_category_memory_bytes": Family("gauge", (), "Of rtindex_memory_bytes, the category subgraphs'"),
    "rtindex_category_memory_used_bytes": Family("gauge", (), "Of rtindex_memory_used_bytes, the category subgraphs'"),
    "rtindex_index_writes_total": Family("counter", ("outcome",), (
        "Item changes applied to the index by outcome (inserted, refreshed, deleted, skipped_stale)")),
    "rtindex_consolidations_total": Family("counter", (), "Delete consolidation passes"),
    "rtindex_repaired_rows_total": Family("counter", (), "Neighbour lists repaired after deletes"),
    "rtindex_orphans_adopted_total": Family("counter", (), "Nodes left without in-links that were re-linked"),
    "rtindex_nodes_relinked_total": Family("counter", (), "Nodes linked again from scratch by the repair"),
    "rtindex_nodes_reduced_ef_total": Family("counter", (), "Nodes linked with a narrower insert beam"),
    "rtindex_active_searches": Family("gauge", (), "Searches in progress"),
    "rtindex_categories": Family("gauge", (), "Categories in the taxonomy"),
    "rtindex_category_nodes": Family("gauge", ("state",), "Category subgraph nodes (state: live, tombstoned)"),
    "rtindex_index_stat": Family("gauge", ("name",), "An Index.stats() figure without a metric of its own"),
    # the GPU mirror (only when the index searches on a GPU)
    "rtindex_gpu_memory_bytes": Family("gauge", ("part",), "Device bytes (part: mirror, search_buffers)"),
    "rtindex_gpu_slots_capacity": Family("gauge", ("pool",), "Device table capacity by pool (node, upper, item)"),
    "rtindex_gpu_syncs_total": Family("counter", (), "Dirty-row syncs host -> device"),
    "rtindex_gpu_full_uploads_total": Family("counter", (), "Full uploads of the tables to the device"),
    "rtindex_gpu_grows_total": Family("counter", (), "Device table growths"),
    "rtindex_gpu_sync_rows_total": Family("counter", (), "Rows copied by the syncs"),
    "rtindex_gpu_sync_bytes_total": Family("counter", (), "Bytes copied by the syncs"),
    "rtindex_gpu_sync_seconds_total": Family("counter", (), "Time spent in syncs"),
    "rtindex_gpu_last_sync_rows": Family("gauge", (), "Rows copied by the last sync"),
    "rtindex_gpu_last_sync_array_rows": Family("gauge", ("array",), "Rows copied by the last sync, per array"),
    "rtindex_gpu_last_sync_bytes": Family("gauge", (), "Bytes copied by the last sync"),
    "rtindex_gpu_last_sync_seconds": Family("gauge", (), "Duration of the last sync"),
    "rtindex_gpu_search_launches_total": Family("counter", (), "GPU search kernel launches"),
    "rtindex_gpu_search_queries_total": Family("counter", (), "Queries searched on the GPU"),
    # Kafka ingestion (only with --kafka-bootstrap)
    "rtindex_kafka_messages_consumed_total": Family("counter", (), "Messages consumed from the topic"),
    "rtindex_kafka_batches_total": Family("counter", (), "Batches of changes applied"),
    "rtindex_kafka_changes_applied_total": Family("counter", ("op",), "Changes applied (op: upsert, delete)"),
    "rtindex_kafka_changes_skipped_stale_total": Family("counter", (), "Changes older than the version held"),
    "rtindex_kafka_changes_superseded_total": Family("counter", (), (
        "Changes dropped because a later change of the same id came in the same batch")),
    "rtindex_kafka_dead_letters_total": Family("counter", (), "Messages sent to the dead-letter topic"),
    "rtindex_kafka_commits_total": Family("counter", (), "Offset commits"),
    "rtindex_kafka_lag_messages": Family("gauge", ("partition",), (
        "Consumer lag per assigned partition: high watermark minus the next offset to consume")),
    "rtindex_kafka_ready": Family("gauge", (), "1 once the consumer caught up at start-up"),
    "rtindex_kafka_failed": Family("gauge", (), "1 when the ingestion loop stopped on an error (see the log)"),
    "rtindex_kafka_produced_to_searchable_seconds": Family("histogram", (), (
        "Time from a change's production (the producer_time_us it carries) until it is searchable")),
    "rtindex_kafka_recent_produced_to_searchable_seconds": Family("gauge", ("quantile",), (
        "Quantiles (0.5, 0.99) of produced -> searchable over the changes applied in the last 10 s")),
    "rtindex_kafka_taxonomy_edges_applied_total": Family("counter", (), "Taxonomy edges applied"),
    "rtindex_kafka_taxonomy_items_rebuilt_total": Family("counter", (), "Items moved by taxonomy changes"),
    "rtindex_kafka_taxonomy_lag_messages": Family("gauge", (), "Lag on the taxonomy topic, all partitions"),
    "rtindex_kafka_taxonomy_assigned": Family("gauge", (), "1 once the taxonomy topic's partitions are assigned"),
    "rtindex_kafka_stat": Family("gauge", ("name",), "A Kafka ingestion figure without a metric of its own"),
    # snapshots (only with --data-dir)
    "rtindex_snapshot_duration_seconds": Family("histogram", ("phase",), (
        "Snapshot phases: pause (writes wait while the state is copied) and write (to disk, in the background)")),
    "rtindex_snapshot_failures_total": Family("counter", (), "Snapshots that failed (see the log)"),
    "rtindex_snapshot_age_seconds": Family("gauge", (), "Age of the last snapshot written (absent before the first)"),
    "rtindex_snapshot_last_seq": Family("gauge", (), "Sequence number of the last snapshot written"),
    "rtindex_snapshot_last_size_bytes": Family("gauge", (), "Size of the last snapshot written"),
    "rtindex_snapshot_last_duration_seconds": Family("gauge", ("phase",), "Phases of the last snapshot written"),
    "rtindex_restored_snapshot_seq": Family("gauge", (), "Sequence number of the snapshot restored at start-up"),
    "rtindex_restore_duration_seconds": Family("gauge", (), "Time the start-up restore took"),
    # the write-ahead log (only with a WAL)
    "rtindex_wal_bytes_total": Family("counter", (), "Bytes appended to the write-ahead log"),
    "rtindex_wal_records_total": Family("counter", (), (
        "Writes appended to the write-ahead log (per fsync: a group commit carries several)")),
    "rtindex_wal_replayed_records_total": Family("counter", (), (
        "Writes replayed from the write-ahead log at start-up (the snapshot did not hold them)")),
    "rtindex_wal_fsync_duration_seconds": Family("histogram", (), "Time of each fsync of the write-ahead log"),
    "rtindex_wal_size_bytes": Family("gauge", (), "Size of the write-ahead log on disk"),
    # the Python runtime
    "rtindex_python_gc_pause_seconds": Family("histogram", ("generation",), (
        "Garbage-collector pauses by generation (a generation 2 collection stops every Python thread)")),
    "rtindex_python_gc_pause_max_seconds": Family("gauge", ("generation",), "Longest garbage-collector pause"),
}


# ---------------------------------------------------------------------------- the mapping
@dataclass(frozen=True)
class _Figure:
    """A figure of a core dictionary (its ``Stats`` key) as one sample: ``family`` with
    ``labels``; value in the family's unit = the figure x ``scale``. A ``{name}`` in the
    key stands for a label taken from the key (``kafka_lag_partition_{partition}``)."""

    key: str
    family: str | None  # None: not exported (another sample carries it; see _RULES)
    labels: Mapping[str, str] = field(default_factory=dict)
    scale: float = 1.0


_POOLS = ("node", "upper_row", "item", "category_node")
_INDEX_FIGURES = [
    _Figure("items", "rtindex_items"),
    _Figure("nodes_live", "rtindex_nodes", {"state": "live"}),
    _Figure("nodes_tombstoned", "rtindex_nodes", {"state": "tombstoned"}),
    _Figure("entry_level", "rtindex_entry_level"),
    _Figure("dim", "rtindex_index_dimension"),
    _Figure("M", "rtindex_index_m"),
    _Figure("ef_construction", "rtindex_index_ef_construction"),
    *(_Figure(f"{pool}_slots_{state}", "rtindex_index_slots", {"pool": pool, "state": state})
      for pool in _POOLS for state in ("in_use", "free", "waiting")),
    *(_Figure(f"{pool}_capacity", "rtindex_index_slots_capacity", {"pool": pool}) for pool in _POOLS),
    _Figure("deleted_versions_kept", "rtindex_deleted_versions_kept"),
    _Figure("memory_bytes", "rtindex_memory_bytes"),
    _Figure("memory_used_bytes", "rtindex_memory_used_bytes"),
    _Figure("category_memory_bytes", "rtindex_category_memory_bytes"),
    _Figure("category_memory_used_bytes", "rtindex_category_memory_used_bytes"),
    *(_Figure(outcome, "rtindex_index_writes_total", {"outcome": outcome})
      for outcome in ("inserted", "refreshed", "deleted", "skipped_stale")),
    _Figure("consolidations", "rtindex_consolidations_total"),
    _Figure("repaired_rows", "rtindex_repaired_rows_total"),
    _Figure("orphans_adopted", "rtindex_orphans_adopted_total"),
    _Figure("nodes_relinked", "rtindex_nodes_relinked_total"),
    _Figure("nodes_reduced_ef", "rtindex_nodes_reduced_ef_total"),
    _Figure("active_searches", "rtindex_active_searches"),
    _Figure("categories", "rtindex_categories"),
    _Figure("category_nodes_live", "rtindex_category_nodes", {"state": "live"}),
    _Figure("category_nodes_tombstoned", "rtindex_category_nodes", {"state": "tombstoned"}),
    _Figure("gpu_mirror_bytes", "rtindex_gpu_memory_bytes", {"part": "mirror"}),
    _Figure("gpu_search_buffers_bytes", "rtindex_gpu_memory_bytes", {"part": "search_buffers"}),
    _Figure("gpu_memory_bytes", None),  # the sum of the parts
    *(_Figure(f"gpu_{pool}_capacity", "rtindex_gpu_slots_capacity", {"pool": pool})
      for pool in ("node", "upper", "item")),
    _Figure("gpu_syncs", "rtindex_gpu_syncs_total"),
    _Figure("gpu_full_uploads", "rtindex_gpu_full_uploads_total"),
    _Figure("gpu_grows", "rtindex_gpu_grows_total"),
    _Figure("gpu_sync_rows_total", "rtindex_gpu_sync_rows_total"),
    _Figure("gpu_sync_bytes_total", "rtindex_gpu_sync_bytes_total"),
    _Figure("gpu_sync_seconds_total", "rtindex_gpu_sync_seconds_total"),
    _Figure("gpu_sync_last_rows", "rtindex_gpu_last_sync_rows"),
    _Figure("gpu_sync_last_rows_{array}", "rtindex_gpu_last_sync_array_rows", {"array": "{array}"}),
    _Figure("gpu_sync_last_bytes", "rtindex_gpu_last_sync_bytes"),
    _Figure("gpu_sync_last_ms", "rtindex_gpu_last_sync_seconds", scale=1e-3),
    _Figure("gpu_search_launches", "rtindex_gpu_search_launches_total"),
    _Figure("gpu_search_queries", "rtindex_gpu_search_queries_total"),
]
_INDEX_INFO_KEYS = ("metric", "device")

_KAFKA_FIGURES = [
    _Figure("kafka_consumed", "rtindex_kafka_messages_consumed_total"),
    _Figure("kafka_batches", "rtindex_kafka_batches_total"),
    _Figure("kafka_upserts", "rtindex_kafka_changes_applied_total", {"op": "upsert"}),
    _Figure("kafka_deletes", "rtindex_kafka_changes_applied_total", {"op": "delete"}),
    _Figure("kafka_skipped_stale", "rtindex_kafka_changes_skipped_stale_total"),
    _Figure("kafka_superseded", "rtindex_kafka_changes_superseded_total"),
    _Figure("kafka_dead_letters", "rtindex_kafka_dead_letters_total"),
    _Figure("kafka_commits", "rtindex_kafka_commits_total"),
    _Figure("kafka_lag_total", None),  # the sum over the partitions
    _Figure("kafka_lag_partition_{partition}", "rtindex_kafka_lag_messages", {"partition": "{partition}"}),
    _Figure("kafka_ready", "rtindex_kafka_ready"),
    _Figure("kafka_failed", "rtindex_kafka_failed"),
    _Figure("kafka_apply_latency_p50_ms", "rtindex_kafka_recent_produced_to_searchable_seconds",
            {"quantile": "0.5"}, 1e-3),
    _Figure("kafka_apply_latency_p99_ms", "rtindex_kafka_recent_produced_to_searchable_seconds",
            {"quantile": "0.99"}, 1e-3),
    _Figure("kafka_taxonomy_edges", "rtindex_kafka_taxonomy_edges_applied_total"),
    _Figure("kafka_taxonomy_items_rebuilt", "rtindex_kafka_taxonomy_items_rebuilt_total"),
    _Figure("kafka_taxonomy_lag_total", "rtindex_kafka_taxonomy_lag_messages"),
    _Figure("kafka_taxonomy_assigned", "rtindex_kafka_taxonomy_assigned"),
]

_SNAPSHOT_FIGURES = [
    _Figure("snapshots_taken", None),  # the count of rtindex_snapshot_duration_seconds{phase="write"}
    _Figure("snapshots_failed", "rtindex_snapshot_failures_total"),
    _Figure("snapshot_last_seq", "rtindex_snapshot_last_seq"),
    _Figure("snapshot_last_age_s", "rtindex_snapshot_age_seconds"),
    _Figure("snapshot_last_bytes", "rtindex_snapshot_last_size_bytes"),
    _Figure("snapshot_last_pause_ms", "rtindex_snapshot_last_duration_seconds", {"phase": "pause"}, 1e-3),
    _Figure("snapshot_last_write_s", "rtindex_snapshot_last_duration_seconds", {"phase": "write"}),
]

_RESTORE_FIGURES = [
    _Figure("restored_from_seq", "rtindex_restored_snapshot_seq"),
    _Figure("restore_seconds", "rtindex_restore_duration_seconds"),
]

_AUTH_FIGURES = [
    _Figure("auth_unauthenticated", "rtindex_auth_refused_total", {"code": "UNAUTHENTICATED"}),
    _Figure("auth_permission_denied", "rtindex_auth_refused_total", {"code": "PERMISSION_DENIED"}),
]

_WRITE_QUEUE_FIGURES = [_Figure("write_queue_depth", "rtindex_write_queue_depth")]


@dataclass(frozen=True)
class _Rule:
    """A sample -> a ``Stats`` key: the samples named ``sample`` whose labels include
    ``where`` add value x ``scale`` to ``key`` (formatted with the sample's labels)."""

    sample: str
    key: str
    where: Mapping[str, str] = field(default_factory=dict)
    scale: float = 1.0


# Stats keys carried by samples that are not a core dictionary's figure
_RULES = [
    _Rule("rtindex_rpc_duration_seconds_sum", "server_rpc_{method}_seconds", {"code": "OK"}),
    # a write whose deadline passed in the queue has always counted as "rejected", not
    # "deadline_exceeded" (which meant: a search abandoned at its deadline)
    _Rule("rtindex_write_queue_deadline_exceeded_total", "server_rpc_{method}_rejected"),
    _Rule("rtindex_write_queue_deadline_exceeded_total", "server_rpc_{method}_deadline_exceeded", scale=-1.0),
    _Rule("rtindex_write_batch_duration_seconds_count", "write_batches"),
    _Rule("rtindex_write_batch_duration_seconds_sum", "write_apply_seconds"),
    _Rule("rtindex_write_requests_total", "write_requests"),
    _Rule("rtindex_write_ids_total", "write_ids"),
    _Rule("rtindex_write_reduced_ef_batches_total", "write_reduced_ef_batches"),
    _Rule("rtindex_gpu_memory_bytes", "gpu_memory_bytes"),
    _Rule("rtindex_kafka_lag_messages", "kafka_lag_total"),
    _Rule("rtindex_snapshot_duration_seconds_count", "snapshots_taken", {"phase": "write"}),
    _Rule("rtindex_python_gc_pause_seconds_count", "python_gc{generation}_collections"),
    _Rule("rtindex_python_gc_pause_seconds_sum", "python_gc{generation}_pause_total_ms", scale=1e3),
    _Rule("rtindex_python_gc_pause_max_seconds", "python_gc{generation}_pause_max_ms", scale=1e3),
    _Rule("rtindex_wal_bytes_total", "wal_bytes"),
    _Rule("rtindex_wal_records_total", "wal_records"),
    _Rule("rtindex_wal_replayed_records_total", "wal_replayed_records"),
    _Rule("rtindex_wal_fsync_duration_seconds_count", "wal_fsyncs"),
    _Rule("rtindex_wal_fsync_duration_seconds_sum", "wal_fsync_seconds"),
    _Rule("rtindex_wal_size_bytes", "wal_size_bytes"),
    _Rule("rtindex_index_stat", "{name}"),
    _Rule("rtindex_kafka_stat", "{name}"),
    _Rule("process_resident_memory_bytes", "process_resident_memory_bytes"),
    _Rule("process_cpu_seconds_total", "process_cpu_seconds"),
]

# Stats keys (by gRPC status code) of rtindex_rpc_duration_seconds_count: server_rpc_<Method>_<outcome>
_RPC_OUTCOMES = {"OK": "ok", "RESOURCE_EXHAUSTED": "overloaded", "DEADLINE_EXCEEDED": "deadline_exceeded",
                 "UNAVAILABLE": "unavailable", "INTERNAL": "failed", "UNKNOWN": "failed"}  # any other: "rejected"

# what Stats has always said for figures Prometheus leaves out (no value yet), when the
# subsystem is there (the key on the left is present)
_ABSENT = {
    "kafka_consumed": {"kafka_lag_total": 0.0},
    "snapshots_taken": {"snapshot_last_seq": -1.0, "snapshot_last_age_s": -1.0, "snapshot_last_bytes": 0.0,
                        "snapshot_last_pause_ms": 0.0, "snapshot_last_write_s": 0.0},
}


def _rpc_keys(labels: Mapping[str, str], value: float) -> Iterator[tuple[str, float]]:
    outcome = _RPC_OUTCOMES.get(labels.get("code", ""), "rejected")
    yield f"server_rpc_{labels.get('method', '')}_{outcome}", value


def _reverse(figures: Iterable[_Figure]) -> list[_Rule]:
    out = []
    for f in figures:
        if f.family is None:
            continue
        fixed = {k: v for k, v in f.labels.items() if "{" not in v}
        out.append(_Rule(f.family, f.key, fixed, 1.0 / f.scale))
    return out


def _view_rules() -> dict[str, list[_Rule]]:
    by_sample: dict[str, list[_Rule]] = defaultdict(list)
    seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    for rule in [*_RULES, *_reverse([*_INDEX_FIGURES, *_KAFKA_FIGURES, *_SNAPSHOT_FIGURES, *_RESTORE_FIGURES,
                                      *_AUTH_FIGURES, *_WRITE_QUEUE_FIGURES])]:
        identity = (rule.sample, rule.key, tuple(sorted(rule.where.items())))
        if identity in seen:  # it would count the sample twice
            raise AssertionError(f"metrics: {rule.sample} {dict(rule.where)} -> {rule.key} is mapped twice")
        seen.add(identity)
        by_sample[rule.sample].append(rule)
    return dict(by_sample)


_VIEW = _view_rules()


def stats_view(registry: CollectorRegistry) -> dict[str, float]:
    """The ``Stats`` counters: every sample of ``registry`` that has a ``Stats`` key,
    under that key (samples mapped to one key are added up)."""
    out: dict[str, float] = defaultdict(float)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "rtindex_rpc_duration_seconds_count":
                for key, value in _rpc_keys(sample.labels, sample.value):
                    out[key] += value
                continue
            for rule in _VIEW.get(sample.name, ()):
                if all(sample.labels.get(k) == v for k, v in rule.where.items()):
                    out[rule.key.format(**sample.labels)] += sample.value * rule.scale
    for present, defaults in _ABSENT.items():
        if present in out:
            for key, value in defaults.items():
                out.setdefault(key, value)
    return dict(out)


# ---------------------------------------------------------------------------- collectors
def _family(name: str) -> Metric:
    spec = FAMILIES[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=spec.labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(name, spec.help, labels=spec.labels)
    raise ValueError(f"{name} is a {spec.kind}; only counters and gauges are read from dictionaries")


def _is_number(value: object) -> bool:
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


class _FigureTable:
    """Stats key -> (family, labels) for one core dictionary: exact keys first, then the
    keys with a ``{label}`` part (matched as a pattern)."""

    def __init__(self, figures: Sequence[_Figure]) -> None:
        self.exact = {f.key: f for f in figures if "{" not in f.key}
        self.patterns = [(re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>.+)", re.escape(f.key))), f)
                         for f in figures if "{" in f.key]

    def find(self, key: str) -> tuple[_Figure, dict[str, str]] | None:
        figure = self.exact.get(key)
        if figure is not None:
            return figure, dict(figure.labels)
        for pattern, figure in self.patterns:
            match = pattern.fullmatch(key)
            if match:
                return figure, {k: v.format(**match.groupdict()) for k, v in figure.labels.items()}
        return None


class _DictCollector(Collector):
    """Exposes a core dictionary of figures (read at collection time) through a figure
    table; figures the table does not name go to ``fallback{name=...}`` so none is lost
    (a figure added to the core later shows up at once, under its Stats key)."""

    def __init__(self, read: Callable[[], Mapping[str, Any]], figures: Sequence[_Figure],
                 fallback: str | None = None, info: tuple[str, Sequence[str]] | None = None) -> None:
        self._read = read
        self._table = _FigureTable(figures)
        self._fallback = fallback
        self._info = info  # (family, keys): string figures as the labels of an info metric

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        families: dict[str, Metric] = {}
        for key, value in figures.items():
            if not _is_number(value):
                continue
            found = self._table.find(key)
            if found is None:
                if self._fallback is None:
                    continue
                family, labels, scale = self._fallback, {"name": key}, 1.0
            else:
                figure, labels = found
                if figure.family is None:
                    continue
                family, scale = figure.family, figure.scale
            metric = families.get(family)
            if metric is None:
                metric = families[family] = _family(family)
            metric.add_metric([labels[name] for name in FAMILIES[family].labels], float(value) * scale)
        yield from families.values()
        if self._info is not None:
            name, keys = self._info
            yield InfoMetricFamily(name.removesuffix("_info"), FAMILIES[name].help,
                                   value={k: str(figures.get(k, "")) for k in keys})


def _cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last one above every bound) -> Prometheus' cumulative
    buckets, ``+Inf`` last."""
    cumulative = np.cumsum(np.asarray(counts, np.float64))
    return [(floatToGoString(b), float(c)) for b, c in zip((*bounds, float("inf")), cumulative, strict=True)]


class _ArrayHistogram(Collector):
    """A histogram without labels that takes a whole array of observations at once:
    ``prometheus_client.Histogram.observe`` costs a lock round trip per value, and a
    Kafka batch brings thousands of latencies."""

    def __init__(self, name: str, buckets: Sequence[float]) -> None:
        self.name = name
        self._bounds = np.asarray(buckets, np.float64)
        self._counts = np.zeros(len(buckets) + 1, np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        """values: any shape, in the family's unit (seconds)."""
        values = np.asarray(values, np.float64).ravel()
        if not len(values):
            return
        # bucket i holds bounds[i-1] < v <= bounds[i] (Prometheus' "le")
        counts = np.bincount(np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        yield HistogramMetricFamily(self.name, FAMILIES[self.name].help,
                                    buckets=_cumulative_buckets(self._bounds.tolist(), counts.tolist()),
                                    sum_value=total)


class _GcCollector(Collector):
    """The GC pauses ``GcPauses`` recorded (it keeps plain lists: see gcwatch)."""

    def __init__(self, pauses: GcPauses) -> None:
        self._pauses = pauses

    def collect(self) -> Iterator[Metric]:
        p = self._pauses
        histogram = HistogramMetricFamily("rtindex_python_gc_pause_seconds",
                                          FAMILIES["rtindex_python_gc_pause_seconds"].help, labels=["generation"])
        longest = _family("rtindex_python_gc_pause_max_seconds")
        for g in range(3):
            histogram.add_metric([str(g)], _cumulative_buckets(p.buckets, list(p.bucket_counts[g])),
                                 sum_value=p.pause_seconds[g])
            longest.add_metric([str(g)], p.max_pause_seconds[g])
        yield histogram
        yield longest


def _histogram(name: str, registry: CollectorRegistry, buckets: Sequence[float]) -> Histogram:
    spec = FAMILIES[name]
    return Histogram(name, spec.help, spec.labels, registry=registry, buckets=buckets)


def _counter(name: str, registry: CollectorRegistry) -> Counter:
    spec = FAMILIES[name]
    return Counter(name, spec.help, spec.labels, registry=registry)


# ---------------------------------------------------------------------------- hooks
class WriterMetrics:
    """The writer's hook (``rtindex.core.writer.WriteObserver``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._batches = _histogram("rtindex_write_batch_duration_seconds", registry, WRITE_BATCH_BUCKETS)
        self._requests = _counter("rtindex_write_requests_total", registry)
        self._ids = _counter("rtindex_write_ids_total", registry)
        self._reduced = _counter("rtindex_write_reduced_ef_batches_total", registry)
        for kind in ("upsert", "delete"):  # present (at 0) before the first write
            for family in (self._batches, self._requests, self._ids):
                family.labels(kind)

    def batch_applied(self, kind: str, requests: int, ids: int, seconds: float, reduced_ef: bool) -> None:
        self._batches.labels(kind).observe(seconds)
        self._requests.labels(kind).inc(requests)
        self._ids.labels(kind).inc(ids)
        if reduced_ef:
            self._reduced.inc()


class KafkaMetrics:
    """The Kafka ingestor's hook (``rtindex.consumers.ingest.IngestObserver``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._latency = _ArrayHistogram("rtindex_kafka_produced_to_searchable_seconds", FRESHNESS_BUCKETS)
        registry.register(self._latency)

    def changes_applied(self, latencies_s: np.ndarray) -> None:
        """Seconds from production to searchable, one per change of a batch just applied."""
        self._latency.observe_many(latencies_s)


class SnapshotMetrics:
    """The snapshotter's hook (``rtindex.snapshots.snapshotter.SnapshotObserver``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = _histogram("rtindex_snapshot_duration_seconds", registry, SNAPSHOT_BUCKETS)
        for phase in ("pause", "write"):  # present (at 0) before the first snapshot
            self._duration.labels(phase)

    def snapshot_written(self, info: SnapshotInfo) -> None:
        self._duration.labels("pause").observe(info.pause_seconds)
        self._duration.labels("write").observe(info.write_seconds)


class WalMetrics:
    """What the write-ahead log reports. Get it from ``ServerMetrics.wal()``, which
    registers the WAL's families on first use (a server without a WAL shows none).
    Thread-safe; each call costs a lock round trip, so report per group commit rather
    than per record where appends are many."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._bytes = _counter("rtindex_wal_bytes_total", registry)
        self._records = _counter("rtindex_wal_records_total", registry)
        self._replayed = _counter("rtindex_wal_replayed_records_total", registry)
        self._fsync = _histogram("rtindex_wal_fsync_duration_seconds", registry, FSYNC_BUCKETS)
        spec = FAMILIES["rtindex_wal_size_bytes"]
        self._size = Gauge("rtindex_wal_size_bytes", spec.help, registry=registry)

    def observe_append(self, nbytes: int, fsync_seconds: float | None = None, records: int = 0) -> None:
        """``records`` writes in ``nbytes`` bytes were appended; ``fsync_seconds``: how
        long the fsync that made them durable took (None: not synced by this append)."""
        self._bytes.inc(nbytes)
        self._records.inc(records)
        if fsync_seconds is not None:
            self._fsync.observe(fsync_seconds)

    def set_size(self, nbytes: int) -> None:
        """The log's size on disk now, bytes (after appends, and after a truncation)."""
        self._size.set(nbytes)

    def observe_replay(self, records: int) -> None:
        """``records`` writes were replayed at start-up."""
        self._replayed.inc(records)


# ---------------------------------------------------------------------------- the server's
class ServerMetrics:
    """One server's registry (never prometheus_client's global one: tests run many
    servers in one process), its hooks and its HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self._rpc = _histogram("rtindex_rpc_duration_seconds", self.registry, RPC_BUCKETS)
        self._queued_deadline = _counter("rtindex_write_queue_deadline_exceeded_total", self.registry)
        self.writer = WriterMetrics(self.registry)
        self._wal: WalMetrics | None = None
        self._wal_lock = threading.Lock()
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    # -------------------------------------------------------------- what the server reports
    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """One answered call: its method, gRPC status code name (``OK``,
        ``INVALID_ARGUMENT``...) and the seconds it took."""
        self._rpc.labels(method, code).observe(seconds)

    def queued_write_deadline_exceeded(self, method: str) -> None:
        """A write's deadline passed while it was queued (its call is also observed, as
        DEADLINE_EXCEEDED)."""
        self._queued_deadline.labels(method).inc()

    def watch_index(self, stats: Callable[[], Mapping[str, Any]], queue_depth: Callable[[], int]) -> None:
        """Expose ``Index.stats()`` and the write queue's depth, read at collection."""
        self.registry.register(_DictCollector(stats, _INDEX_FIGURES, fallback="rtindex_index_stat",
                                              info=("rtindex_index_info", _INDEX_INFO_KEYS)))
        self.registry.register(_DictCollector(lambda: {"write_queue_depth": queue_depth()}, _WRITE_QUEUE_FIGURES))

    def watch_kafka(self, ingestor: KafkaIngestor) -> None:
        """Hook into the ingestor (latencies) and expose ``ingestor.counters()``."""
        ingestor.observer = KafkaMetrics(self.registry)
        self.registry.register(_DictCollector(ingestor.counters, _KAFKA_FIGURES, fallback="rtindex_kafka_stat"))

    def watch_snapshots(self, snapshotter: Snapshotter) -> None:
        """Hook into the snapshotter (durations) and expose ``snapshotter.counters()``."""
        snapshotter.observer = SnapshotMetrics(self.registry)
        self.registry.register(_DictCollector(snapshotter.counters, _SNAPSHOT_FIGURES))

    def watch_auth(self, counters: Callable[[], Mapping[str, float]]) -> None:
        """Expose the calls refused for want of a valid API key
        (``ServerSecurity.counters()``)."""
        self.registry.register(_DictCollector(counters, _AUTH_FIGURES))

    def watch_restore(self, seq: int, seconds: float) -> None:
        """The snapshot this server was restored from at start-up, and how long it took."""
        figures = {"restored_from_seq": seq, "restore_seconds": seconds}
        self.registry.register(_DictCollector(lambda: figures, _RESTORE_FIGURES))

    def watch_gc(self, pauses: GcPauses) -> None:
        self.registry.register(_GcCollector(pauses))

    def wal(self) -> WalMetrics:
        """The write-ahead log's hook (registered on the first call)."""
        with self._wal_lock:
            if self._wal is None:
                self._wal = WalMetrics(self.registry)
            return self._wal

    # -------------------------------------------------------------- readers
    def stats(self) -> dict[str, float]:
        """The ``Stats`` RPC's counters (see ``stats_view``)."""
        return stats_view(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Serve the registry over HTTP at ``http://host:port/metrics`` (port 0: a free
        one) on a daemon thread; returns the port bound. ``close()`` stops it."""
        from prometheus_client.exposition import start_http_server

        try:
            self._http, self._http_thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose a free "
                          "--metrics-port (0 = any free port, -1 = no metrics endpoint) or another "
                          "--metrics-host") from exc
        return int(self._http.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint (if serving); waits for a scrape in progress."""
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(5)
        self._http = self._http_thread = None
