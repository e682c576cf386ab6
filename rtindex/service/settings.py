"""Server configuration: one typed object, filled from defaults < a TOML file <
RTINDEX_* environment variables < command-line flags (later sources win).

Every field is documented once (``help`` metadata); the CLI flags, their ``--help``
text, the environment variable names and the TOML keys all derive from the dataclass.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtindex.core.config import IndexConfig

if TYPE_CHECKING:
    from rtindex.consumers.ingest import KafkaSettings

ENV_PREFIX = "RTINDEX_"


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _secret(help: str) -> Any:
    """A setting that may hold a secret: left out of repr(config) (hence of logs and
    tracebacks that print the config)."""
    return field(default="", repr=False, metadata={"help": help})


@dataclass
class ServerConfig:
    # where to listen
    host: str = _opt("127.0.0.1", "address to listen on (0.0.0.0 for all interfaces)")
    port: int = _opt(50051, "gRPC port (0 = pick a free one)")
    metrics_port: int = _opt(-1, "HTTP port of the Prometheus endpoint GET /metrics (README: Metrics); -1 = no "
                             "endpoint (Stats still reports), 0 = pick a free one (the 'listening' log line says "
                             "which)")
    metrics_host: str = _opt("", "address the metrics endpoint listens on; empty = the same as host")
    # the index
    dim: int = _opt(0, "embedding dimension (required)")
    metric: str = _opt("ip", "similarity: ip, cosine or l2")
    M: int = _opt(16, "HNSW degree; level 0 holds 2M")
    ef_construction: int = _opt(200, "beam width while inserting")
    ef_construction_min: int = _opt(64, "narrowest insert beam the writer uses when it is behind its freshness budget "
                                    "(it links sooner at some cost in graph quality; README: Freshness under load)")
    ef_search: int = _opt(64, "default search beam width (max with k)")
    threads: int = _opt(0, "index worker threads for batch search/insert (0 = all cores)")
    traversal_precision: str = _opt("float16", "float16 (faster search, +50%% vector memory) or float32")
    category_M: int = _opt(12, "degree of the category subgraphs (level 0 holds 2x)")
    category_ef_construction: int = _opt(100, "beam width while inserting into category subgraphs")
    category_exact_limit: int = _opt(64, "categories with at most this many live items (or at most ef) are "
                                         "searched exhaustively (exact)")
    device: str = _opt("auto", "search backend: auto (the GPU when CuPy finds one, else the CPU), cpu, or cuda "
                       "(fails without a GPU); needs the gpu extra for cuda")
    scorer: str = _opt("", "neural scorer savedmodel:PATH (a TensorFlow SavedModel, contract in rtindex/core/neural.py): "
                       "searches then send query features and candidates are scored by the model; empty = metric")
    # limits and flow control
    grpc_threads: int = _opt(16, "threads serving RPCs")
    max_concurrent_rpcs: int = _opt(256, "RPCs in flight beyond which new ones get RESOURCE_EXHAUSTED")
    max_message_mb: int = _opt(64, "largest request or response message, MiB")
    max_queries: int = _opt(10_000, "most queries in one Search")
    max_k: int = _opt(1_000, "largest k (and level_ef)")
    max_ef: int = _opt(10_000, "largest beam width ef")
    max_write_ids: int = _opt(100_000, "most ids in one Upsert/Delete/Get")
    write_queue: int = _opt(1_024, "writes waiting for the writer beyond which new ones get RESOURCE_EXHAUSTED")
    write_batch: int = _opt(65_536, "most ids the writer applies in one batch (it merges queued writes)")
    freshness_budget_ms: float = _opt(20.0, "an upsert batch that would become searchable later than this after its "
                                      "oldest change was made is linked with a narrower beam, down to "
                                      "ef_construction_min (0 = always the full ef_construction)")
    gil_switch_ms: float = _opt(0.5, "how long a Python thread runs before one waiting for the GIL gets it "
                                "(sys.setswitchinterval; Python's default is 5)")
    warm_up: str = _opt("on", "on: compile (or load from numba's cache) every kernel a request can reach before "
                              "health turns SERVING (about a minute on the first start after an install); off: "
                              "kernels compile on first use")
    grace_seconds: float = _opt(15.0, "on SIGTERM, how long in-flight calls may take to finish")
    # Kafka ingestion (off unless kafka_bootstrap is set)
    kafka_bootstrap: str = _opt("", "Kafka bootstrap servers host:port; when set, the server consumes kafka_topic")
    kafka_topic: str = _opt("rtindex.catalog", "topic of CatalogChange messages (its dead letters go to <topic>.dlq)")
    kafka_taxonomy_topic: str = _opt("", "topic of CategoryEdge messages (the taxonomy), read in full by every "
                                         "replica; empty = <kafka_topic>.taxonomy")
    kafka_group: str = _opt("rtindex", "consumer group (replicas of one shard use different groups)")
    kafka_batch: int = _opt(2_000, "most messages applied in one batch")
    kafka_batch_ms: int = _opt(20, "when nothing is fetched yet, how long one poll waits for the first message, ms")
    kafka_ready_lag: int = _opt(1_000, "at start-up, health is NOT_SERVING until the consumer lag is below this")
    kafka_partitions: str = _opt("", "partitions this server consumes, e.g. 0,1 (a shard); empty = all")
    kafka_config: str = _secret("extra librdkafka properties for the Kafka clients, key=value,key=value, e.g. "
                                "security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username=rtindex,"
                                "ssl.ca.location=/etc/kafka/ca.pem; put passwords in kafka_config_file")
    kafka_config_file: str = _opt("", "file of librdkafka properties, one key=value per line (# comments), e.g. "
                                      "sasl.password=...; its entries override kafka_config")
    # snapshots (off unless data_dir is set)
    data_dir: str = _opt("", "directory of RocksDB snapshots: at start-up the newest valid one is loaded and Kafka "
                         "replays from its offsets; snapshots are written there periodically, on demand and at "
                         "shutdown")
    snapshot_keep: int = _opt(3, "snapshots kept in data_dir (older ones are removed)")
    snapshot_interval_s: float = _opt(600.0, "seconds between periodic snapshots (0 = none)")
    snapshot_every_ops: int = _opt(0, "also snapshot after this many applied writes (0 = not by count)")
    wal: str = _opt("on", "on: with data_dir, gRPC writes are appended to a write-ahead log (<data_dir>/wal) and "
                    "fsynced before they are acknowledged, and replayed at start-up on top of the newest snapshot; "
                    "off: for Kafka-only deployments (the topic is the log; gRPC writes are then durable only as "
                    "of the last snapshot)")
    wal_segment_mb: int = _opt(64, "size at which the write-ahead log starts a new segment file, MiB (segments "
                                   "every kept snapshot covers are removed)")
    # security (README: Running securely); off by default: plaintext, no keys
    tls_cert: str = _opt("", "PEM file of the server's certificate chain: with tls_key, gRPC is served over TLS only")
    tls_key: str = _opt("", "PEM file of the (unencrypted) private key of tls_cert")
    tls_client_ca: str = _opt("", "PEM file of the CA(s) that sign client certificates: mutual TLS, clients without "
                                  "such a certificate cannot connect (needs tls_cert)")
    api_key: str = _secret("read-write API key: every call but health must then carry a key (metadata "
                           "'authorization: Bearer KEY' or 'x-api-key: KEY'); prefer api_key_file or the "
                           "environment: a flag shows in ps")
    api_key_file: str = _opt("", "file of read-write API keys, one per line (# comments; several keys allow "
                                 "rotation); instead of api_key")
    read_only_api_key: str = _secret("API key that may only call Search, Get, Stats, CategoryParents and "
                                     "reflection (writes: PERMISSION_DENIED); with read-only keys and no read-write "
                                     "key, no call can write over gRPC (a replica fed by Kafka)")
    read_only_api_key_file: str = _opt("", "file of read-only API keys, one per line; instead of read_only_api_key")
    # logs
    log_level: str = _opt("info", "debug, info, warning or error")
    log_format: str = _opt("json", "json (one object per line) or text")

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if not -1 <= self.metrics_port <= 65535:
            problems.append(f"metrics_port must be -1 (no endpoint), 0 (a free port) or a port up to 65535, got "
                            f"{self.metrics_port}")
        for name in ("grpc_threads", "max_concurrent_rpcs", "max_message_mb", "max_queries", "max_k", "max_ef",
                     "max_write_ids", "write_queue", "write_batch", "kafka_batch", "kafka_batch_ms"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_keep < 1:
            problems.append(f"snapshot_keep must be >= 1, got {self.snapshot_keep}")
        if self.snapshot_interval_s < 0 or self.snapshot_every_ops < 0:
            problems.append("snapshot_interval_s and snapshot_every_ops must be >= 0")
        if self.ef_construction_min < 1:
            problems.append(f"ef_construction_min must be >= 1, got {self.ef_construction_min}")
        if self.freshness_budget_ms < 0:
            problems.append(f"freshness_budget_ms must be >= 0, got {self.freshness_budget_ms}")
        if self.gil_switch_ms <= 0:
            problems.append(f"gil_switch_ms must be > 0, got {self.gil_switch_ms}")
        if self.grace_seconds < 0:
            problems.append(f"grace_seconds must be >= 0, got {self.grace_seconds}")
        if self.wal not in ("on", "off"):
            problems.append(f"wal must be on or off, got {self.wal!r}")
        if self.wal_segment_mb < 1:
            problems.append(f"wal_segment_mb must be >= 1, got {self.wal_segment_mb}")
        if self.warm_up not in ("on", "off"):
            problems.append(f"warm_up must be on or off, got {self.warm_up!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            problems.append(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if self.log_format not in ("json", "text"):
            problems.append(f"log_format must be json or text, got {self.log_format!r}")
        problems += self._security_problems()
        if problems:
            raise ValueError("invalid server configuration: " + "; ".join(problems))

    def _security_problems(self) -> list[str]:
        """How the security settings contradict each other (the files are read by the
        server: rtindex.service.security). Never quotes a key."""
        problems = []
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together: give both (the certificate chain and its private key) "
                            "or neither")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca (mutual TLS) needs TLS: set tls_cert and tls_key too")
        for name in ("api_key", "read_only_api_key"):
            if getattr(self, name) and getattr(self, f"{name}_file"):
                problems.append(f"{name} and {name}_file are both set; give the key one way")
        return problems

    def kafka_settings(self) -> KafkaSettings | None:
        if not self.kafka_bootstrap:
            return None
        from rtindex.consumers.ingest import KafkaSettings

        return KafkaSettings(
            bootstrap=self.kafka_bootstrap, topic=self.kafka_topic, group=self.kafka_group, batch=self.kafka_batch,
            batch_ms=self.kafka_batch_ms, ready_lag=self.kafka_ready_lag, partitions=self._partitions(),
            taxonomy_topic=self.kafka_taxonomy_topic, client_config=self.kafka_client_config(),
        )

    def kafka_client_config(self) -> dict[str, str]:
        """The librdkafka properties of kafka_config and kafka_config_file (SASL/SSL...)."""
        from rtindex.service.security import kafka_client_config

        return kafka_client_config(self.kafka_config, self.kafka_config_file)

    def _partitions(self) -> list[int]:
        try:
            return sorted({int(p) for p in self.kafka_partitions.split(",") if p.strip()})
        except ValueError:
            raise ValueError(f"kafka_partitions must be a comma-separated list of partition numbers, got "
                             f"{self.kafka_partitions!r}") from None

    def index_config(self) -> IndexConfig:
        """The index part (validated by IndexConfig, with its own messages)."""
        if self.dim < 1:
            raise ValueError("the index dimension is not set: pass --dim N (or RTINDEX_DIM, or dim = N in the config file)")
        return IndexConfig(
            dim=self.dim, metric=self.metric, M=self.M, ef_construction=self.ef_construction,
            ef_search=self.ef_search, threads=self.threads, traversal_precision=self.traversal_precision,
            device=self.device, category_M=self.category_M, category_ef_construction=self.category_ef_construction,
            category_exact_limit=self.category_exact_limit,
        )


def _convert(name: str, kind: type, raw: Any, source: str) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    try:
        if kind is bool:
            return str(raw).lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {name} must be {kind.__name__}, got {raw!r}") from None


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _field_types() -> dict[str, type]:
    return {f.name: _TYPES[f.type] if isinstance(f.type, str) else f.type for f in fields(ServerConfig)}


_ALIASES = {"kafka_topic": ("--topic",), "kafka_group": ("--group",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per field (defaults left None so that unset flags do not override)."""
    parser.add_argument("--config", help="TOML file with any of these settings (top level or a [server] table); "
                        f"also {ENV_PREFIX}CONFIG")
    for f in fields(ServerConfig):
        default = f.default if f.default is not MISSING else None
        parser.add_argument(
            "--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ()), dest=f.name, default=None, type=_field_types()[f.name],
            help=f"{f.metadata['help']} (default {default}; env {ENV_PREFIX}{f.name.upper()})",
        )


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """defaults < TOML file < environment < flags."""
    environ = os.environ if environ is None else environ
    types = _field_types()
    values: dict[str, Any] = {}
    path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
        data = data.get("server", data)
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise ValueError(f"config file {path}: unknown settings {unknown}; valid: {sorted(types)}")
        values.update({k: _convert(k, types[k], v, f"config file {path}") for k, v in data.items()})
    for name, kind in types.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _convert(name, kind, raw, f"environment {ENV_PREFIX}{name.upper()}")
    if args is not None:
        for name in types:
            value = getattr(args, name, None)
            if value is not None:
                values[name] = value
    return ServerConfig(**values)
