"""Server settings (defaults < TOML < environment < flags) and the generated gRPC code."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from rtindex.client import IndexClient, Overloaded
from rtindex.service import settings
from rtindex.service.cli import build_parser
from rtindex.service.server import IndexServer

ROOT = Path(__file__).resolve().parent.parent


def _args(*flags: str) -> object:
    return build_parser().parse_args(["serve", *flags])


def test_settings_precedence_is_defaults_file_environment_flags(tmp_path: Path) -> None:
    toml = tmp_path / "rtindex.toml"
    toml.write_text('[server]\ndim = 64\nmetric = "cosine"\nport = 7000\nmax_k = 50\n')
    env = {"RTINDEX_PORT": "7100", "RTINDEX_M": "24"}
    cfg = settings.load(_args("--config", str(toml), "--port", "7200"), env)
    assert (cfg.dim, cfg.metric, cfg.max_k) == (64, "cosine", 50)  # from the file
    assert cfg.M == 24  # from the environment
    assert cfg.port == 7200  # the flag wins
    assert cfg.ef_construction == 200  # default
    assert cfg.index_config().metric == "cosine"


def test_kafka_flags_have_the_short_names_too() -> None:
    cfg = settings.load(_args("--dim", "8", "--kafka-bootstrap", "h:1", "--topic", "t", "--group", "g"), {})
    assert (cfg.kafka_bootstrap, cfg.kafka_topic, cfg.kafka_group) == ("h:1", "t", "g")
    assert cfg.kafka_settings() is not None and cfg.kafka_settings().topic == "t"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("flags", "env", "toml", "message"),
    [
        ((), {"RTINDEX_PORT": "abc"}, None, "RTINDEX_PORT: port must be int"),
        ((), {}, "dim = 8\nbogus = 1\n", "unknown setting or section 'bogus'"),
        ((), {}, "[kafka]\nbootstrp = 'h:1'\n", "[kafka] has no setting 'bootstrp'; valid: ['batch', "),
        ((), {}, "[index]\ndim = 'eight'\n", "[index] dim: dim must be int, got 'eight'"),
        ((), {}, "[index]\nM = 2.5\n", "M must be int, got 2.5"),
        ((), {}, "[server]\nport = true\n", "port must be int, got True"),
        ((), {}, "dim = 8\n[index]\ndim = 9\n", "dim is given twice"),
        ((), {"RTINDEX_FILL_PRUNED": "maybe"}, None, "fill_pruned must be true or false"),
        ((), {}, "dim = [", "not valid TOML"),
        (("--port", "70000"), {}, None, "port must be 0..65535"),
        (("--log-format", "xml"), {}, None, "log_format must be json or text"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path: Path, flags: tuple, env: dict, toml: str | None, message: str) -> None:
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
        flags = (*flags, "--config", str(path))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings.load(_args(*flags), env)


def test_a_file_in_sections_sets_what_the_flags_set(tmp_path: Path) -> None:
    toml = tmp_path / "rtindex.toml"
    toml.write_text('[index]\ndim = 32\nM = 12\nfill_pruned = false\nprune_alpha = 1\n'
                    '[kafka]\nbootstrap = "h:1"\ncommit_ms = 250\ndlq_topic = "dead"\npartitions = "0,2"\n'
                    '[snapshots]\ndata_dir = "/data"\nkeep = 5\nwal = "off"\n'
                    '[metrics]\nport = 9100\n[logs]\nlevel = "debug"\n[server]\nmax_k = 77\n')
    from_file = settings.load(_args("--config", str(toml)), {})
    from_flags = settings.load(_args(
        "--dim", "32", "--M", "12", "--fill-pruned", "false", "--prune-alpha", "1", "--kafka-bootstrap", "h:1",
        "--kafka-commit-ms", "250", "--kafka-dlq-topic", "dead", "--kafka-partitions", "0,2", "--data-dir", "/data",
        "--snapshot-keep", "5", "--wal", "off", "--metrics-port", "9100", "--log-level", "debug", "--max-k", "77"),
        {})
    assert from_file == from_flags
    index = from_file.index_config()
    assert (index.dim, index.M, index.fill_pruned, index.prune_alpha) == (32, 12, False, 1.0)
    kafka = from_file.kafka_settings()
    assert kafka is not None
    assert (kafka.commit_ms, kafka.dead_letter_topic, kafka.partitions) == (250, "dead", [0, 2])


def test_every_index_and_kafka_setting_can_be_set_with_the_same_defaults() -> None:
    from dataclasses import MISSING, fields

    from rtindex.consumers.ingest import KafkaSettings
    from rtindex.core.config import IndexConfig

    server = {f.name: f for f in fields(settings.ServerConfig)}
    for f in fields(IndexConfig):
        assert f.name in server, f"IndexConfig.{f.name} cannot be set on the server: add it to ServerConfig"
        if f.default is not MISSING:
            assert server[f.name].default == f.default, f.name
    derived = {"partitions": "kafka_partitions", "client_config": "kafka_config"}
    for f in fields(KafkaSettings):
        name = derived.get(f.name, f"kafka_{f.name}")
        assert name in server, f"KafkaSettings.{f.name} cannot be set on the server: add {name} to ServerConfig"
        if f.default is not MISSING and f.name not in derived:
            assert server[name].default == f.default, name


def test_print_config_gives_a_file_that_loads_back_the_same_and_keeps_secrets_out(tmp_path: Path) -> None:
    flags = ("--dim", "16", "--metric", "l2", "--kafka-bootstrap", "h:1", "--api-key", "s3cr3t-key",
             "--fill-pruned", "off", "--freshness-budget-ms", "5", "--data-dir", "/d")
    out = subprocess.run([sys.executable, "-m", "rtindex", "serve", *flags, "--print-config"], capture_output=True,
                         text=True, check=True).stdout
    assert "s3cr3t-key" not in out and "api_key" in out
    path = tmp_path / "printed.toml"
    path.write_text(out)
    printed = settings.load(_args("--config", str(path)), {})
    given = settings.load(_args(*flags), {})
    assert printed == settings.ServerConfig(**{**vars(given), "api_key": ""})


def test_the_example_configuration_is_current() -> None:
    example = ROOT / "examples/rtindex.toml"
    assert example.read_text() == settings.to_toml(settings.ServerConfig()), (
        "examples/rtindex.toml is stale: python -m rtindex serve --print-config > examples/rtindex.toml")
    assert settings.load(_args("--config", str(example)), {}) == settings.ServerConfig()


def test_serve_help_explains_every_setting() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for field in settings.ServerConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in text
    assert "RTINDEX_MAX_QUERIES" in text


def test_generated_grpc_code_is_current(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)], check=True,
                   env={"RTINDEX_PYTHON_BIN": sys.executable, "PATH": "/usr/bin:/bin"})
    for generated in sorted((ROOT / "rtindex/api/v1").glob("*_pb2*.py*")):
        fresh = tmp_path / "rtindex/api/v1" / generated.name
        assert fresh.exists(), f"{generated.name} is no longer generated"
        assert filecmp.cmp(generated, fresh, shallow=False), (
            f"rtindex/api/v1/{generated.name} is stale: run scripts/gen_proto.sh and commit the result"
        )


def test_messages_over_the_transport_limit_are_refused_with_resource_exhausted() -> None:
    srv = IndexServer(settings.ServerConfig(port=0, dim=256, max_message_mb=1, log_level="warning"))
    srv.start()
    srv.mark_ready()
    try:
        with IndexClient(f"127.0.0.1:{srv.port}", max_message_mb=16) as c:
            with pytest.raises(Overloaded) as err:
                c.upsert(np.arange(2000), np.ones((2000, 256), np.float32))  # 2 MB
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c.stats()["items"] == 0
    finally:
        srv.stop(grace=1)


def test_a_change_encoded_ahead_carries_the_time_it_is_stamped_with() -> None:
    from rtindex.consumers.codec import UPSERT, decode, encode, encode_body, stamp

    row = np.arange(4, dtype=np.float32)
    key, body = encode_body(UPSERT, 7, 3, row, categories=(2, 5))
    change = decode(key, stamp(body, 1_700_000_000.25), 4)
    assert (change.id, change.version, list(change.categories)) == (7, 3, [2, 5])
    assert np.array_equal(np.frombuffer(change.embedding, "<f4"), row)
    assert change.producer_time_us == 1_700_000_000_250_000
    # stamped again (a retried send): the later time wins
    assert decode(key, stamp(stamp(body, 1.0), 2.0), 4).producer_time_us == 2_000_000
    assert encode(UPSERT, 7, 3, row, (2, 5), produced_at=1_700_000_000.25) == (key, stamp(body, 1_700_000_000.25))


@pytest.mark.parametrize("live", [0, 1, 50])
def test_a_generated_churn_stream_only_deletes_or_refreshes_live_items(live: int) -> None:
    from rtindex.consumers.codec import DELETE, UPSERT
    from rtindex.consumers.sources import churn_changes

    alive: set[int] = set()
    versions: dict[int, int] = {}
    ops = list(churn_changes(2_000, 8, live=live, seed=3))
    assert len(ops) == 2_000
    for op, item, version, row in ops:
        assert version == versions.get(item, 0) + 1  # versions grow by one per item
        versions[item] = version
        if op == DELETE:
            assert item in alive and row is None
            alive.discard(item)
        else:
            assert op == UPSERT and row is not None and row.shape == (8,)
            alive.add(item)
    assert {op for op, *_ in ops} == {UPSERT, DELETE}
    assert len(alive) <= max(live, 1) + 200  # stays near the requested size


def test_a_churn_stream_with_a_negative_size_is_refused() -> None:
    from rtindex.consumers.sources import churn_changes

    with pytest.raises(ValueError, match="live >= 0"):
        churn_changes(10, 8, live=-1)  # at once, before anything is produced
