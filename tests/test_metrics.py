"""The Prometheus endpoint (``--metrics-port``), scraped over HTTP and parsed with
prometheus_client's own parser, and ``Stats`` as a view of the same registry."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from rtindex.client import IndexClient, InvalidArgument
from rtindex.service import metrics as m
from rtindex.service.metrics import FAMILIES, ServerMetrics
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

DIM = 8
ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def scrape(port: int) -> tuple[dict[str, str], Samples]:
    """GET /metrics -> (family name -> type, (sample name, labels) -> value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return types, samples


def value(samples: Samples, sample: str, **labels: str) -> float:
    return samples[sample, frozenset(labels.items())]


def total(samples: Samples, sample: str, **labels: str) -> float:
    """The sum over the samples named ``sample`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == sample and want <= got)


@pytest.fixture
def server() -> Iterator[IndexServer]:
    srv = IndexServer(ServerConfig(port=0, dim=DIM, metric="l2", warm_up="off", metrics_port=0, log_level="warning"))
    srv.start()
    srv.mark_ready()
    yield srv
    srv.stop(grace=1)


@pytest.fixture
def client(server: IndexServer) -> Iterator[IndexClient]:
    with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as c:
        yield c


def _traffic(client: IndexClient) -> None:
    """300 upserts in 3 calls, 4 searches, 1 bad search, a delete of 10."""
    for part in range(3):
        client.upsert(np.arange(100 * part, 100 * (part + 1)), _vectors(100, seed=part))
    for seed in range(4):
        client.search(_vectors(5, seed=10 + seed), k=3)
    with pytest.raises(InvalidArgument):
        client.search(_vectors(2), k=0)
    assert client.delete(np.arange(10)).deleted == 10


def test_the_scrape_has_latency_by_method_and_code_the_items_and_the_write_apply_time(
        server: IndexServer, client: IndexClient) -> None:
    _traffic(client)
    assert server.metrics_port
    wait_until(lambda: total(scrape(server.metrics_port)[1], "rtindex_write_batch_duration_seconds_count") >= 4, 10,
               "the writer to report its last batch")
    types, samples = scrape(server.metrics_port)
    assert types["rtindex_rpc_duration_seconds"] == "histogram"
    assert value(samples, "rtindex_rpc_duration_seconds_count", method="Search", code="OK") == 4
    assert value(samples, "rtindex_rpc_duration_seconds_count", method="Search", code="INVALID_ARGUMENT") == 1
    assert value(samples, "rtindex_rpc_duration_seconds_count", method="Upsert", code="OK") == 3
    assert value(samples, "rtindex_rpc_duration_seconds_bucket", method="Search", code="OK", le="+Inf") == 4
    assert value(samples, "rtindex_rpc_duration_seconds_sum", method="Search", code="OK") > 0
    assert value(samples, "rtindex_items") == 290
    assert value(samples, "rtindex_nodes", state="live") == 290
    assert value(samples, "rtindex_index_writes_total", outcome="inserted") == 300
    assert value(samples, "rtindex_memory_bytes") > 0
    assert value(samples, "rtindex_index_info", metric="l2", device="cpu") == 1
    assert value(samples, "rtindex_write_batch_duration_seconds_count", kind="delete") == 1
    assert value(samples, "rtindex_write_batch_duration_seconds_count", kind="upsert") >= 1
    assert total(samples, "rtindex_write_batch_duration_seconds_sum") > 0
    assert value(samples, "rtindex_write_ids_total", kind="upsert") == 300
    assert value(samples, "rtindex_python_gc_pause_seconds_count", generation="0") >= 0
    assert value(samples, "process_resident_memory_bytes") > 0
    # Prometheus naming: every rtindex family is defined once, counters end in _total
    for name, kind in types.items():
        if name.startswith("rtindex_") and not name.endswith("_created"):  # prometheus_client's start times
            defined = name if name in FAMILIES else f"{name}_total"  # the parser drops a counter's _total
            assert defined in FAMILIES, name
            assert kind == {"info": "gauge"}.get(FAMILIES[defined].kind, FAMILIES[defined].kind), name


def test_stats_reads_the_same_registry_as_the_scrape(server: IndexServer, client: IndexClient) -> None:
    _traffic(client)
    wait_until(lambda: client.stats()["write_batches"] >= 4, 10, "the writer to report its last batch")
    _, samples = scrape(server.metrics_port)  # type: ignore[arg-type]
    stats = client.stats()
    assert stats["items"] == value(samples, "rtindex_items") == 290
    assert stats["server_rpc_Search_ok"] == value(samples, "rtindex_rpc_duration_seconds_count",
                                                  method="Search", code="OK") == 4
    assert stats["server_rpc_Search_rejected"] == 1
    assert stats["server_rpc_Search_seconds"] == pytest.approx(
        value(samples, "rtindex_rpc_duration_seconds_sum", method="Search", code="OK"))
    assert stats["server_rpc_Upsert_ok"] == 3 and stats["server_rpc_Delete_ok"] == 1
    assert stats["write_batches"] == total(samples, "rtindex_write_batch_duration_seconds_count")
    assert stats["write_apply_seconds"] == pytest.approx(total(samples, "rtindex_write_batch_duration_seconds_sum"))
    assert stats["write_ids"] == total(samples, "rtindex_write_ids_total") == 310
    assert stats["write_requests"] == 4 and stats["write_queue_depth"] == 0
    assert stats["inserted"] == value(samples, "rtindex_index_writes_total", outcome="inserted") == 300
    assert stats["python_gc2_collections"] == value(samples, "rtindex_python_gc_pause_seconds_count",
                                                    generation="2")
    # and Stats still carries every numeric figure of Index.stats(), under its own name
    direct = server.index.stats()
    for key, figure in direct.items():
        if isinstance(figure, (int, float)) and not isinstance(figure, bool):
            assert stats[key] == pytest.approx(figure), key


def test_stats_keeps_its_outcome_names_per_status_code() -> None:
    metrics = ServerMetrics()
    metrics.observe_rpc("Search", "DEADLINE_EXCEEDED", 0.5)  # a search abandoned at its deadline
    metrics.observe_rpc("Upsert", "DEADLINE_EXCEEDED", 0.5)  # a write whose deadline passed in the queue
    metrics.queued_write_deadline_exceeded("Upsert")
    metrics.observe_rpc("Upsert", "RESOURCE_EXHAUSTED", 0.001)
    metrics.observe_rpc("Upsert", "UNAVAILABLE", 0.001)
    metrics.observe_rpc("Get", "OK", 0.25)
    stats = metrics.stats()
    assert stats["server_rpc_Search_deadline_exceeded"] == 1
    assert stats["server_rpc_Upsert_rejected"] == 1 and stats["server_rpc_Upsert_deadline_exceeded"] == 0
    assert stats["server_rpc_Upsert_overloaded"] == 1 and stats["server_rpc_Upsert_unavailable"] == 1
    assert stats["server_rpc_Get_ok"] == 1 and stats["server_rpc_Get_seconds"] == 0.25
    assert stats["write_batches"] == 0  # present before the first write, as it always was


def test_gpu_figures_are_gauges_in_base_units_and_come_back_under_their_stats_names() -> None:
    figures = {"items": 5, "metric": "ip", "device": "cuda", "gpu_mirror_bytes": 1000, "gpu_search_buffers_bytes": 24,
               "gpu_memory_bytes": 1024, "gpu_node_capacity": 64, "gpu_syncs": 7, "gpu_sync_seconds_total": 0.5,
               "gpu_sync_last_ms": 2.5, "gpu_sync_last_rows": 9, "gpu_sync_last_rows_node_level": 4,
               "gpu_search_queries": 100, "a_figure_added_later": 3}
    metrics = ServerMetrics()
    metrics.watch_index(lambda: figures, lambda: 0)
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in metrics.registry.collect() for s in f.samples}
    assert value(samples, "rtindex_gpu_memory_bytes", part="mirror") == 1000
    assert value(samples, "rtindex_gpu_last_sync_seconds") == 0.0025
    assert value(samples, "rtindex_gpu_last_sync_array_rows", array="node_level") == 4
    assert value(samples, "rtindex_gpu_sync_seconds_total") == 0.5
    assert value(samples, "rtindex_gpu_slots_capacity", pool="node") == 64
    assert value(samples, "rtindex_index_info", metric="ip", device="cuda") == 1
    assert value(samples, "rtindex_index_stat", name="a_figure_added_later") == 3
    stats = metrics.stats()
    for key, figure in figures.items():
        if not isinstance(figure, str):
            assert stats[key] == pytest.approx(figure), key


def test_wal_metrics_appear_once_the_log_reports() -> None:
    metrics = ServerMetrics()
    assert not [f for f in metrics.registry.collect() if f.name.startswith("rtindex_wal")]
    wal = metrics.wal()
    assert metrics.wal() is wal
    wal.observe_append(4096, fsync_seconds=0.002)
    wal.observe_append(100)  # not synced by this append
    wal.set_size(8192)
    stats = metrics.stats()
    assert stats["wal_bytes"] == 4196 and stats["wal_fsyncs"] == 1 and stats["wal_size_bytes"] == 8192
    assert stats["wal_fsync_seconds"] == pytest.approx(0.002)


def test_every_figure_names_a_defined_family_with_its_labels_and_the_readme_lists_every_family() -> None:
    tables = (m._INDEX_FIGURES, m._KAFKA_FIGURES, m._SNAPSHOT_FIGURES, m._RESTORE_FIGURES, m._AUTH_FIGURES,
              m._WRITE_QUEUE_FIGURES)
    for figure in (f for table in tables for f in table if f.family is not None):
        assert figure.family in FAMILIES, figure
        assert set(figure.labels) == set(FAMILIES[figure.family].labels), figure
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", section, re.M))
    assert listed == set(FAMILIES), (sorted(set(FAMILIES) - listed), sorted(listed - set(FAMILIES)))


def test_snapshots_report_their_duration_and_age(tmp_path: Path) -> None:
    server = IndexServer(ServerConfig(port=0, dim=DIM, data_dir=str(tmp_path), snapshot_interval_s=0, warm_up="off",
                                      metrics_port=0, log_level="warning"))
    server.start()
    server.mark_ready()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            stats = client.stats()
            assert stats["snapshots_taken"] == 0 and stats["snapshot_last_seq"] == -1  # as before the registry
            _, samples = scrape(server.metrics_port)  # type: ignore[arg-type]
            assert ("rtindex_snapshot_age_seconds", frozenset()) not in samples  # no snapshot: no age
            client.upsert(np.arange(20), _vectors(20))
            info = client.snapshot()
            _, samples = scrape(server.metrics_port)  # type: ignore[arg-type]
            stats = client.stats()
    finally:
        server.stop(grace=1)
    assert value(samples, "rtindex_snapshot_duration_seconds_count", phase="write") == 1
    assert value(samples, "rtindex_snapshot_duration_seconds_count", phase="pause") == 1
    assert value(samples, "rtindex_snapshot_last_seq") == info["seq"]
    assert 0 <= value(samples, "rtindex_snapshot_age_seconds") < 600
    assert value(samples, "rtindex_rpc_duration_seconds_count", method="Snapshot", code="OK") == 1
    assert stats["snapshots_taken"] == 1 and stats["snapshot_last_seq"] == info["seq"]
    assert stats["snapshot_last_pause_ms"] == pytest.approx(info["pause_ms"])


def test_the_endpoint_closes_with_the_server_and_a_taken_port_is_refused_saying_what_to_do() -> None:
    server = IndexServer(ServerConfig(port=0, dim=DIM, warm_up="off", metrics_port=0, log_level="warning"))
    server.start()
    port = server.metrics_port
    assert port and scrape(port)[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = IndexServer(ServerConfig(port=0, dim=DIM, warm_up="off", metrics_port=taken.getsockname()[1],
                                        log_level="warning"))
        with pytest.raises(OSError, match="--metrics-port"):
            busy.start()
    server.stop(grace=0)
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    off = IndexServer(ServerConfig(port=0, dim=DIM, warm_up="off", log_level="warning"))  # the default: no endpoint
    off.start()
    try:
        assert off.metrics_port is None
    finally:
        off.stop(grace=0)
    with pytest.raises(ValueError, match="metrics_port must be -1"):
        ServerConfig(dim=DIM, metrics_port=-2)


def test_rtindex_serve_logs_where_it_serves_metrics(tmp_path: Path) -> None:
    from server_process import ServerProcess

    process = ServerProcess(tmp_path / "server.log", "--dim", str(DIM), "--warm-up", "off", "--metrics-port", "0")
    try:
        listening = next(e for e in process.events() if e.get("msg") == "listening")
        url = listening["metrics"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        with urllib.request.urlopen(url, timeout=10) as response:
            families = {f.name for f in text_string_to_metric_families(response.read().decode())}
        assert {"rtindex_items", "rtindex_write_queue_depth"} <= families
    finally:
        assert process.terminate() == 0


def test_the_client_and_the_cli_help_load_no_prometheus_client() -> None:
    from test_layout import loaded_after

    assert "prometheus_client" not in loaded_after("import rtindex.client")
    assert "prometheus_client" not in loaded_after("from rtindex.service.cli import build_parser\nbuild_parser()")


@pytest.mark.kafka
def test_kafka_lag_per_partition_and_produced_to_searchable_latency(kafka_bootstrap: str) -> None:
    from streams import mixed_stream, produce

    from rtindex.consumers.producer import ensure_topic

    topic = f"rtindex-test-metrics-{uuid.uuid4().hex[:10]}"
    ensure_topic(kafka_bootstrap, topic, 2)
    ops = mixed_stream(300, seed=4)
    produce(kafka_bootstrap, topic, ops)
    server = IndexServer(ServerConfig(port=0, dim=16, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_ready_lag=0, warm_up="off", metrics_port=0,
                                      log_level="warning"))
    server.start()
    try:
        port = server.metrics_port
        assert port

        def consumed() -> bool:
            _, samples = scrape(port)
            return (total(samples, "rtindex_kafka_messages_consumed_total") == len(ops)
                    and total(samples, "rtindex_kafka_lag_messages") == 0
                    and len([k for k in samples if k[0] == "rtindex_kafka_lag_messages"]) == 2)

        wait_until(consumed, 120, f"the server to consume the {len(ops)} messages of {topic}")
        types, samples = scrape(port)
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            stats = client.stats()
    finally:
        server.stop(grace=1)
    assert types["rtindex_kafka_produced_to_searchable_seconds"] == "histogram"
    applied = value(samples, "rtindex_kafka_produced_to_searchable_seconds_count")
    assert 0 < applied <= len(ops)  # one per change applied (a batch's superseded ones are dropped before)
    assert value(samples, "rtindex_kafka_produced_to_searchable_seconds_bucket", le="+Inf") == applied
    assert value(samples, "rtindex_kafka_produced_to_searchable_seconds_sum") > 0
    assert value(samples, "rtindex_kafka_lag_messages", partition="0") == 0
    assert value(samples, "rtindex_kafka_lag_messages", partition="1") == 0
    assert value(samples, "rtindex_kafka_dead_letters_total") == 0
    assert value(samples, "rtindex_kafka_ready") == 1
    assert stats["kafka_consumed"] == len(ops) and stats["kafka_lag_total"] == 0
    assert stats["kafka_lag_partition_0"] == 0 and stats["kafka_lag_partition_1"] == 0
    assert stats["kafka_apply_latency_p99_ms"] > 0 and stats["kafka_dead_letters"] == 0
