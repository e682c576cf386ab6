"""Server configuration: one typed schema, filled from defaults < a TOML file <
RTINDEX_* environment variables < command-line flags (later sources win).

Every field is documented once (``help`` metadata) and belongs to one section
(``SECTIONS``: server, index, kafka, snapshots, security, metrics, logs); the CLI flags
(grouped by section in ``--help``), the environment variable names, the TOML keys
(``[kafka] bootstrap = ...``) and the example file (``rtindex serve --print-config``,
``examples/rtindex.toml``) all derive from it. The index settings take their defaults
from ``IndexConfig`` and every ``IndexConfig`` field is one of them; every
``KafkaSettings`` field is a ``kafka_*`` one (tests/test_settings_and_proto.py holds
both to that), so ``index_config()`` and ``kafka_settings()`` copy by name.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtindex.core.config import IndexConfig

if TYPE_CHECKING:
    from rtindex.consumers.ingest import KafkaSettings

ENV_PREFIX = "RTINDEX_"


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


_INDEX_DEFAULTS = {f.name: f.default for f in fields(IndexConfig)}


def _index(name: str, help: str) -> Any:
    """An ``IndexConfig`` setting, with its default."""
    return _opt(_INDEX_DEFAULTS[name], help)


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
    metric: str = _index("metric", "similarity: ip, cosine or l2")
    M: int = _index("M", "HNSW degree; level 0 holds 2M")
    ef_construction: int = _index("ef_construction", "beam width while inserting")
    ef_construction_min: int = _opt(64, "narrowest insert beam the writer uses when it is behind its freshness budget "
                                    "(it links sooner at some cost in graph quality; README: Freshness under load)")
    ef_search: int = _index("ef_search", "default search beam width (max with k)")
    threads: int = _index("threads", "index worker threads for batch search/insert (0 = all cores)")
    traversal_precision: str = _index("traversal_precision", "float16 (faster search, +50%% vector memory) or float32")
    category_M: int = _index("category_M", "degree of the category subgraphs (level 0 holds 2x)")
    category_ef_construction: int = _index("category_ef_construction", "beam width while inserting into category subgraphs")
    category_exact_limit: int = _index("category_exact_limit", "categories with at most this many live items (or at most ef) are "
                                         "searched exhaustively (exact)")
    prune_alpha: float = _index("prune_alpha", "neighbor pruning factor when linking (1.0 = the HNSW heuristic; "
                                "1.2 as in DiskANN keeps more long edges)")
    fill_pruned: bool = _index("fill_pruned", "fill a new node's row back to M with the best pruned candidates")
    repair_alpha: float = _index("repair_alpha", "pruning factor for rows repaired after deletes (FreshDiskANN: 1.2)")
    repair_widen: int = _index("repair_widen", "a repaired row also considers the rows of its this-many closest live "
                                               "candidates (0 = FreshDiskANN's rule only)")
    seed: int = _index("seed", "random seed for node levels (same inputs and seed = same graph)")
    insert_batch_fraction: float = _index("insert_batch_fraction", "parallel insert sub-batches are at most this "
                                                                   "fraction of the live graph (prefix doubling)")
    max_insert_batch: int = _index("max_insert_batch", "cap on the size of a parallel insert sub-batch")
    repair_fraction: float = _index("repair_fraction", "deletes are consolidated once tombstones exceed this "
                                                       "fraction of the live nodes")
    repair_min_tombstones: int = _index("repair_min_tombstones", "consolidation waits for at least this many tombstones")
    initial_capacity: int = _index("initial_capacity", "rows and nodes allocated up front (tables grow by half "
                                                       "when full)")
    deleted_versions_kept: int = _index("deleted_versions_kept", "deleted ids that remember their delete version, "
                                                                 "so a replayed older upsert cannot bring them back")
    device: str = _index("device", "search backend: auto (the GPU when CuPy finds one, else the CPU), cpu, or cuda "
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
    coalesce: str = _opt("off", "on: concurrent Search calls with the same parameters are merged into one index "
                                "call (metric searches); off: each call searches alone. Off by default: on a "
                                "2-core machine gRPC's own per-call cost dominates and merging did not pay "
                                "(README: Request coalescing)")
    coalesce_wait_ms: float = _opt(1.0, "how long a merged search waits for more calls while other searches are "
                                        "in flight, ms (a lone call never waits)")
    coalesce_max_queries: int = _opt(256, "most queries in one merged search")
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
    kafka_commit_ms: int = _opt(100, "applied offsets are committed at most this often, ms (and whenever the "
                                     "stream goes idle; a snapshot's offsets, not these, decide where a restart "
                                     "resumes)")
    kafka_dlq_topic: str = _opt("", "dead-letter topic for messages that cannot be applied; empty = "
                                    "<kafka_topic>.dlq")
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
        types = _field_types()  # flags, the environment and TOML are converted; a caller's values may not be
        problems += [f"{name} must be {kind.__name__}, got {getattr(self, name)!r}" for name, kind in types.items()
                     if not _is_a(getattr(self, name), kind)]
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
        if self.coalesce not in ("on", "off"):
            problems.append(f"coalesce must be on or off, got {self.coalesce!r}")
        if not 0 <= self.coalesce_wait_ms <= 100:
            problems.append(f"coalesce_wait_ms must be in 0..100, got {self.coalesce_wait_ms}")
        if self.coalesce_max_queries < 1:
            problems.append(f"coalesce_max_queries must be >= 1, got {self.coalesce_max_queries}")
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

        derived = {"partitions": self._partitions(), "client_config": self.kafka_client_config()}
        return KafkaSettings(**{f.name: derived[f.name] if f.name in derived else getattr(self, f"kafka_{f.name}")
                                for f in fields(KafkaSettings)})

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
        return IndexConfig(**{name: getattr(self, name) for name in IndexConfig.field_names()})


# section -> (prefix its fields share, dropped from their keys in the section's TOML table; what it holds)
SECTIONS: dict[str, tuple[str, str]] = {
    "server": ("", "where to listen, request limits, flow control, the scorer"),
    "index": ("", "the index (rtindex.core.config.IndexConfig)"),
    "kafka": ("kafka_", "Kafka ingestion, off unless bootstrap is set"),
    "snapshots": ("snapshot_", "snapshots and the write-ahead log, off unless data_dir is set"),
    "security": ("", "TLS and API keys (README: Running securely)"),
    "metrics": ("metrics_", "the Prometheus endpoint (README: Metrics)"),
    "logs": ("log_", "logging"),
}
_SERVER_FIELDS = ("host", "port", "scorer", "grpc_threads", "max_concurrent_rpcs", "max_message_mb", "max_queries",
                  "max_k", "max_ef", "max_write_ids", "write_queue", "write_batch", "freshness_budget_ms",
                  "ef_construction_min", "gil_switch_ms", "warm_up", "grace_seconds", "coalesce", "coalesce_wait_ms",
                  "coalesce_max_queries")
_SECURITY_FIELDS = ("tls_cert", "tls_key", "tls_client_ca", "api_key", "api_key_file", "read_only_api_key",
                    "read_only_api_key_file")


def section_of(name: str) -> str:
    """The section a setting belongs to."""
    if name in _SERVER_FIELDS:
        return "server"
    if name in _SECURITY_FIELDS:
        return "security"
    if name in _INDEX_DEFAULTS:
        return "index"
    if name in ("data_dir", "wal", "wal_segment_mb"):
        return "snapshots"
    for section, (prefix, _) in SECTIONS.items():
        if prefix and name.startswith(prefix):
            return section
    raise KeyError(f"setting {name} has no section: add it to rtindex/service/settings.py SECTIONS")


def toml_key(name: str) -> str:
    """A setting's key in its section's table (``kafka_bootstrap`` -> ``bootstrap``)."""
    prefix = SECTIONS[section_of(name)][0]
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def _convert(name: str, kind: type, raw: Any, source: str) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    try:
        if kind is bool:
            text = str(raw).lower()
            if text not in _BOOLS:
                raise ValueError(text)
            return _BOOLS[text]
        if (isinstance(raw, float) and kind is int) or isinstance(raw, bool):
            raise TypeError(raw)  # TOML true for a number, 2.5 for a count: a mistake, not a value
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {name} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {raw!r}") from None


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_KIND_NAMES = {bool: "true or false (on/off, yes/no, 1/0)"}


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _field_types() -> dict[str, type]:
    return {f.name: _TYPES[f.type] if isinstance(f.type, str) else f.type for f in fields(ServerConfig)}


_ALIASES = {"kafka_topic": ("--topic",), "kafka_group": ("--group",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per field, grouped by section (defaults left None so that unset flags
    do not override)."""
    parser.add_argument("--config", help="TOML file of settings, in sections ([index] dim = 128, [kafka] bootstrap "
                        "= ...; see examples/rtindex.toml); also " f"{ENV_PREFIX}CONFIG")
    parser.add_argument("--print-config", action="store_true",
                        help="print the configuration these sources give, as TOML with every setting explained "
                             "(secrets left out), and exit")
    groups = {name: parser.add_argument_group(f"[{name}] {what}") for name, (_, what) in SECTIONS.items()}
    types = _field_types()
    for f in fields(ServerConfig):
        default = f.default if f.default is not MISSING else None
        kind = types[f.name]
        groups[section_of(f.name)].add_argument(
            "--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ()), dest=f.name, default=None,
            type=_flag_type(f.name, kind), metavar=kind.__name__.upper(),
            help=f"{f.metadata['help']} (default {default}; env {ENV_PREFIX}{f.name.upper()})",
        )


def _flag_type(name: str, kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return _convert(name, kind, raw, "--" + name.replace("_", "-"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _from_toml(data: dict[str, Any], path: str, types: dict[str, type]) -> dict[str, Any]:
    """Settings of a TOML document: a table per section (keys without the section's
    prefix: [kafka] bootstrap), or, as before sections existed, full names at the top
    level or in [server]."""
    values: dict[str, Any] = {}

    def put(name: str, raw: Any, where: str) -> None:
        if name in values:
            raise ValueError(f"config file {path}: {name} is given twice ({where} and before); keep one")
        values[name] = _convert(name, types[name], raw, f"config file {path}, {where}")

    for key, raw in data.items():
        if isinstance(raw, dict) and key in SECTIONS:
            for sub, value in raw.items():
                name = next((n for n in types if section_of(n) == key and toml_key(n) == sub), None)
                if name is None and key == "server" and sub in types:
                    name = sub  # a flat [server] table of full names (the format before sections)
                if name is None:
                    valid = sorted(toml_key(n) for n in types if section_of(n) == key)
                    raise ValueError(f"config file {path}: [{key}] has no setting {sub!r}; valid: {valid}")
                put(name, value, f"[{key}] {sub}")
        elif key in types:
            put(key, raw, key)
        else:
            raise ValueError(f"config file {path}: unknown setting or section {key!r}; sections: {sorted(SECTIONS)} "
                             "(rtindex serve --print-config shows every setting in its place)")
    return values


def to_toml(config: ServerConfig) -> str:
    """``config`` as a TOML document in sections, every setting with its help as a
    comment; secrets (api keys, kafka_config) are left out, commented."""
    lines = ["# rtindex serve configuration (rtindex serve --config FILE). Precedence: defaults < this file <",
             f"# {ENV_PREFIX}* environment variables < flags. Generated by rtindex serve --print-config."]
    by_section: dict[str, list[Any]] = {name: [] for name in SECTIONS}
    for f in fields(config):
        by_section[section_of(f.name)].append(f)
    for section, members in by_section.items():
        lines += ["", f"[{section}]  # {SECTIONS[section][1]}"]
        for f in members:
            lines.append("")
            lines += [f"# {line}" for line in textwrap.wrap(f.metadata["help"].replace("%%", "%"), 100)]
            value = getattr(config, f.name)
            if not f.repr:  # a secret: never printed
                lines.append(f"# {toml_key(f.name)} = \"...\"  (secret: {'set' if value else 'not set'}; prefer "
                             "the _file setting or the environment)")
            else:
                lines.append(f"{toml_key(f.name)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string


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
        values.update(_from_toml(data, path, types))
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
