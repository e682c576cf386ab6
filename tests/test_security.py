"""Security (README: Running securely): TLS and mutual TLS on the gRPC port, read-write and
read-only API keys, health open to probes, secrets kept out of logs and reprs, the CLI's
--api-key / --tls-ca, and the Kafka client's SASL/SSL properties from the server config.

Certificates are made here, at test time, with ``cryptography``: a CA and the server's
certificate (SAN 127.0.0.1 and localhost), a client CA and a client certificate, and a
client certificate from a CA the server does not trust."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_process import clean_env

from rtindex.api.v1 import index_pb2, index_pb2_grpc
from rtindex.client import IndexClient, PermissionDenied, Unauthenticated, Unavailable
from rtindex.service import settings
from rtindex.service.security import OPEN_METHODS, READ_ONLY_METHODS, WRITE_METHODS, ServerSecurity
from rtindex.service.server import SERVICE_NAME, IndexServer
from rtindex.service.settings import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
READ_WRITE_KEY = "rw-2b7d0c1e9a4f46c8b1d3e5f7a9c0b2d4"
READ_ONLY_KEY = "ro-8e6a4c2e0b9d47f1a3c5e7b9d1f3a5c7"


# ---------------------------------------------------------------------------- certificates
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(common_name, _name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], common_name: str,
          server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(common_name, ca_cert.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(0o600)
    return str(path)


@dataclass(frozen=True)
class Pki:
    ca: str  # signed the server's certificate
    server_cert: str
    server_key: str
    client_ca: str  # signs the client certificates the server accepts
    client_cert: str
    client_key: str
    rogue_cert: str  # a client certificate from a CA the server does not trust
    rogue_key: str
    encrypted_server_key: str
    other_key: str  # a key that is not the server certificate's


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, rogue_ca = _ca("rtindex test CA"), _ca("rtindex test client CA"), _ca("someone else's CA")
    server_key, server_cert = _leaf(ca, "rtindex server", server=True)
    client_key, client_cert = _leaf(client_ca, "rtindex client", server=False)
    rogue_key, rogue_cert = _leaf(rogue_ca, "rogue client", server=False)
    return Pki(
        ca=_write_cert(d / "ca.pem", ca[1]), server_cert=_write_cert(d / "server.pem", server_cert),
        server_key=_write_key(d / "server.key", server_key), client_ca=_write_cert(d / "client-ca.pem", client_ca[1]),
        client_cert=_write_cert(d / "client.pem", client_cert), client_key=_write_key(d / "client.key", client_key),
        rogue_cert=_write_cert(d / "rogue.pem", rogue_cert), rogue_key=_write_key(d / "rogue.key", rogue_key),
        encrypted_server_key=_write_key(d / "server-encrypted.key", server_key, password=b"passphrase"),
        other_key=_write_key(d / "other.key", client_key),
    )


# ---------------------------------------------------------------------------- servers
def _start(**security: str) -> IndexServer:
    server = IndexServer(ServerConfig(port=0, dim=DIM, log_level="warning", warm_up="off", **security))
    server.start()
    server.mark_ready()
    return server


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[IndexServer]:
    """TLS, a read-write and a read-only key; holds items 0..19."""
    server = _start(tls_cert=pki.server_cert, tls_key=pki.server_key, api_key=READ_WRITE_KEY,
                    read_only_api_key=READ_ONLY_KEY)
    with _client(server, pki, READ_WRITE_KEY) as client:
        client.upsert(np.arange(20), _vectors(20))
    yield server
    server.stop(grace=1)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _client(server: IndexServer, pki: Pki, api_key: str | None = None, **tls: str) -> IndexClient:
    return IndexClient(f"localhost:{server.port}", timeout=10, api_key=api_key, tls_ca=pki.ca, **tls)


# ---------------------------------------------------------------------------- TLS
def test_a_tls_server_serves_clients_that_trust_its_ca_and_refuses_plaintext(tls_server: IndexServer,
                                                                             pki: Pki) -> None:
    for host in ("localhost", "127.0.0.1"):  # both are in the certificate
        with IndexClient(f"{host}:{tls_server.port}", timeout=10, api_key=READ_ONLY_KEY, tls_ca=pki.ca) as client:
            assert client.stats()["items"] == 20 and client.health() == "SERVING"
    with IndexClient(f"127.0.0.1:{tls_server.port}", timeout=3) as plaintext, pytest.raises(Unavailable):
        plaintext.health()
    # a client that does not trust the server's CA refuses the server
    with IndexClient(f"localhost:{tls_server.port}", timeout=3, tls_ca=pki.client_ca) as wary, \
            pytest.raises(Unavailable):
        wary.health()


def test_mutual_tls_admits_only_clients_with_a_certificate_the_client_ca_signed(pki: Pki) -> None:
    server = _start(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.client_ca)
    try:
        with _client(server, pki, tls_cert=pki.client_cert, tls_key=pki.client_key) as client:
            assert client.upsert([1, 2], _vectors(2)).inserted == 2
            assert client.health() == "SERVING"
        with _client(server, pki) as anonymous, pytest.raises(Unavailable):
            anonymous.health()
        with _client(server, pki, tls_cert=pki.rogue_cert, tls_key=pki.rogue_key) as rogue, pytest.raises(Unavailable):
            rogue.stats()
    finally:
        server.stop(grace=1)


def test_tls_misconfiguration_stops_the_server_naming_the_file_and_what_to_do(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        ServerConfig(dim=DIM, tls_cert=pki.server_cert)
    with pytest.raises(ValueError, match=r"tls_client_ca .*needs TLS"):
        ServerConfig(dim=DIM, tls_client_ca=pki.client_ca)
    missing = str(tmp_path / "nowhere.pem")
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    cases = [
        (dict(tls_cert=missing, tls_key=pki.server_key), f"tls_cert: cannot read {missing}"),
        (dict(tls_cert=str(not_pem), tls_key=pki.server_key), f"tls_cert: {not_pem} is not PEM"),
        (dict(tls_cert=pki.server_cert, tls_key=pki.other_key), "the key is not the one the certificate was issued for"),
        (dict(tls_cert=pki.server_cert, tls_key=pki.encrypted_server_key), "is encrypted and gRPC cannot take"),
        (dict(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=missing),
         f"tls_client_ca: cannot read {missing}"),
    ]
    for tls, message in cases:
        with pytest.raises(ValueError, match="give") as refused:
            ServerSecurity(ServerConfig(dim=DIM, **tls))
        assert message in str(refused.value)


# ---------------------------------------------------------------------------- API keys
def test_every_rpc_is_classified_open_read_only_or_write() -> None:
    service = index_pb2.DESCRIPTOR.services_by_name["IndexService"]
    methods = {f"/{SERVICE_NAME}/{m.name}" for m in service.methods}
    assert methods == {m for m in READ_ONLY_METHODS | WRITE_METHODS if m.startswith(f"/{SERVICE_NAME}/")}
    assert not READ_ONLY_METHODS & WRITE_METHODS and not OPEN_METHODS & (READ_ONLY_METHODS | WRITE_METHODS)
    assert all(m.startswith("/grpc.health.v1.Health/") for m in OPEN_METHODS)


def test_calls_without_a_key_or_with_a_wrong_key_are_unauthenticated(tls_server: IndexServer, pki: Pki) -> None:
    for key in (None, "not-the-key", READ_WRITE_KEY + "x"):
        with _client(tls_server, pki, key) as client:
            for call in (lambda c: c.stats(), lambda c: c.search(_vectors(1), k=3), lambda c: c.get([1]),
                         lambda c: c.upsert([99], _vectors(1)), lambda c: c.snapshot()):
                with pytest.raises(Unauthenticated) as refused:
                    call(client)
                assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
                assert "authorization: Bearer <key>" in refused.value.details  # says how to send one
                assert ("no API key was sent" if key is None else "not valid") in refused.value.details
            assert client.health() == "SERVING"  # probes need no key
    with _client(tls_server, pki, READ_WRITE_KEY) as client:
        assert client.get([99]).found.tolist() == [False]  # the refused upsert wrote nothing


def test_the_key_may_come_as_x_api_key_and_reflection_needs_a_key(tls_server: IndexServer, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(Path(pki.ca).read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.port}", credentials) as channel:
        stub = index_pb2_grpc.IndexServiceStub(channel)
        assert stub.Stats(index_pb2.StatsRequest(), timeout=10, metadata=(("x-api-key", READ_ONLY_KEY),)).items == 20
        with pytest.raises(grpc.RpcError) as refused:  # another scheme than Bearer is no key
            stub.Stats(index_pb2.StatsRequest(), timeout=10, metadata=(("authorization", f"Basic {READ_ONLY_KEY}"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
        answer = next(reflect.ServerReflectionInfo(iter(ask), timeout=10,
                                                   metadata=(("authorization", f"Bearer {READ_ONLY_KEY}"),)))
        assert SERVICE_NAME in {s.name for s in answer.list_services_response.service}
        with pytest.raises(grpc.RpcError) as refused:
            next(reflect.ServerReflectionInfo(iter(ask), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_read_only_key_reads_but_every_write_is_permission_denied(tls_server: IndexServer, pki: Pki) -> None:
    with _client(tls_server, pki, READ_ONLY_KEY) as client:
        before = client.stats()["items"]
        assert client.search(_vectors(2), k=3).ids.shape == (2, 3)
        assert client.get([0, 99]).found.tolist() == [True, False]
        client.category_parents()
        writes = {"Upsert": lambda: client.upsert([99], _vectors(1)), "Delete": lambda: client.delete([0]),
                  "SetCategoryParents": lambda: client.set_category_parents([5], [1]), "Snapshot": client.snapshot}
        for method, write in writes.items():
            with pytest.raises(PermissionDenied) as refused:
                write()
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert f"{method} needs the read-write API key; this key is read-only" in refused.value.details
        assert client.stats()["items"] == before
        assert client.get([0, 99]).found.tolist() == [True, False]  # nothing written, nothing deleted
        assert client.category_parents()[0].tolist() == []
        assert client.stats()["auth_permission_denied"] >= 4


def test_a_read_write_key_reads_and_writes(tls_server: IndexServer, pki: Pki) -> None:
    with _client(tls_server, pki, READ_WRITE_KEY) as client:
        assert client.upsert([100], _vectors(1, seed=3)).inserted == 1
        assert client.search(_vectors(1, seed=3), k=1).ids.tolist() == [[100]]
        assert client.delete([100]).deleted == 1
        assert client.set_category_parents([7], [-1]) == 0
        assert client.get([100]).found.tolist() == [False] and client.stats()["items"] == 20


def test_with_only_read_only_keys_no_one_can_write_over_grpc(tmp_path: Path) -> None:
    key_file = tmp_path / "read-only.keys"
    key_file.write_text(f"# rotated in March\n{READ_ONLY_KEY}\n\nro-second-key-for-the-rotation\n")
    key_file.chmod(0o600)
    server = _start(read_only_api_key_file=str(key_file))
    try:
        for key in (READ_ONLY_KEY, "ro-second-key-for-the-rotation"):
            with IndexClient(f"127.0.0.1:{server.port}", timeout=10, api_key=key) as client:
                assert client.stats()["items"] == 0
                with pytest.raises(PermissionDenied, match=r"this server has none .*writes are off"):
                    client.upsert([1], _vectors(1))
    finally:
        server.stop(grace=1)


def test_bad_key_settings_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_key and api_key_file are both set"):
        ServerConfig(dim=DIM, api_key=READ_WRITE_KEY, api_key_file=str(tmp_path / "keys"))
    empty = tmp_path / "empty.keys"
    empty.write_text("# nothing yet\n\n")
    spaced = tmp_path / "spaced.keys"
    spaced.write_text(f"{READ_WRITE_KEY} trailing-words\n")
    cases = [
        (dict(api_key_file=str(tmp_path / "missing.keys")), "api_key_file: cannot read"),
        (dict(api_key_file=str(empty)), "holds no key; write one API key per line"),
        (dict(api_key_file=str(spaced)), f"{spaced}, line 1: an API key must be printable ASCII without spaces"),
        (dict(api_key="key with spaces"), "api_key: an API key must be printable ASCII"),
        (dict(api_key=READ_WRITE_KEY, read_only_api_key=READ_WRITE_KEY), "the same API key is configured as"),
    ]
    for keys, message in cases:
        with pytest.raises(ValueError) as refused:
            ServerSecurity(ServerConfig(dim=DIM, **keys))
        assert message in str(refused.value)
        assert READ_WRITE_KEY not in str(refused.value) and "with spaces" not in str(refused.value)


def test_keys_appear_in_no_log_and_no_repr(pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("rtindex")  # logs.setup() may have stopped it propagating to caplog
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.DEBUG
    try:
        server = _start(host="0.0.0.0", api_key=READ_WRITE_KEY, read_only_api_key=READ_ONLY_KEY)  # warns: no TLS
        try:
            with IndexClient(f"127.0.0.1:{server.port}", timeout=10, api_key=READ_ONLY_KEY) as client:
                client.stats()
                with pytest.raises(PermissionDenied):
                    client.upsert([1], _vectors(1))
                assert READ_ONLY_KEY not in repr(client)
            with IndexClient(f"127.0.0.1:{server.port}", timeout=10, api_key="wrong-" + READ_WRITE_KEY) as client, \
                    pytest.raises(Unauthenticated) as refused:
                client.stats()
            assert READ_WRITE_KEY not in str(refused.value)
            assert " api_key=" not in repr(server.config) and READ_WRITE_KEY not in repr(server.config)
            assert READ_WRITE_KEY not in repr(server.security)
        finally:
            server.stop(grace=1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in [*records, *caplog.records])
    assert "without TLS on a non-local address" in text  # the logs were captured
    for secret in (READ_WRITE_KEY, READ_ONLY_KEY):
        assert secret not in text
    config = ServerConfig(dim=DIM, api_key=READ_WRITE_KEY, read_only_api_key=READ_ONLY_KEY,
                          kafka_config="sasl.password=hunter2-secret")
    assert READ_WRITE_KEY not in repr(config) and READ_ONLY_KEY not in repr(config) and "hunter2" not in repr(config)
    with pytest.warns(UserWarning, match="without TLS, readable on the network"):
        IndexClient("192.0.2.1:50051", api_key=READ_WRITE_KEY).close()  # nothing is sent: the channel is lazy


# ---------------------------------------------------------------------------- the CLI
def test_the_cli_reaches_a_tls_server_with_api_key_and_tls_ca(tls_server: IndexServer, pki: Pki,
                                                              tmp_path: Path) -> None:
    target = f"localhost:{tls_server.port}"
    key_file = tmp_path / "key"
    key_file.write_text(READ_ONLY_KEY + "\n")
    np.save(tmp_path / "queries.npy", _vectors(2, seed=5))

    def rtindex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rtindex", *args], capture_output=True, text=True, timeout=120,
                              env={**clean_env(), **(env or {})}, cwd=ROOT)

    done = rtindex("stats", "--target", target, "--tls-ca", pki.ca, "--api-key", READ_ONLY_KEY, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items"] == 20 and json.loads(done.stdout)["health"] == "SERVING"

    done = rtindex("search", "--target", target, "--tls-ca", pki.ca, "--api-key-file", str(key_file),
                   "--queries", str(tmp_path / "queries.npy"), "--k", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert [len(json.loads(line)["ids"]) for line in done.stdout.splitlines()] == [3, 3]

    done = rtindex("categories", "list", "--target", target, "--tls-ca", pki.ca, env={"RTINDEX_API_KEY": READ_ONLY_KEY})
    assert done.returncode == 0, done.stderr

    denied = rtindex("categories", "set", "5:1", "--target", target, "--tls-ca", pki.ca, "--api-key", READ_ONLY_KEY)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and READ_ONLY_KEY not in denied.stderr

    anonymous = rtindex("stats", "--target", target, "--tls-ca", pki.ca)
    assert anonymous.returncode == 1 and "UNAUTHENTICATED" in anonymous.stderr and "--api-key" in anonymous.stderr

    missing = rtindex("stats", "--target", target, "--tls-ca", str(tmp_path / "nowhere.pem"))
    assert missing.returncode == 2 and "--tls-ca" in missing.stderr and "nowhere.pem" in missing.stderr


# ---------------------------------------------------------------------------- Kafka
def test_the_server_config_maps_kafka_sasl_ssl_settings_into_the_client_config(pki: Pki, tmp_path: Path) -> None:
    secrets = tmp_path / "kafka.properties"
    secrets.write_text("# the broker's SCRAM credentials\nsasl.username=rtindex\nsasl.password=hunter2-secret\n")
    secrets.chmod(0o600)
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    args = parser.parse_args([
        "--dim", "8", "--kafka-bootstrap", "broker:9093",
        "--kafka-config", f"security.protocol=SASL_SSL, sasl.mechanisms=SCRAM-SHA-512,ssl.ca.location={pki.ca}",
        "--kafka-config-file", str(secrets)])
    config = settings.load(args, environ={})
    kafka = config.kafka_settings()
    assert kafka is not None and kafka.client_config == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "ssl.ca.location": pki.ca,
        "sasl.username": "rtindex", "sasl.password": "hunter2-secret"}
    assert "hunter2" not in repr(config) and "hunter2" not in repr(kafka)
    ServerSecurity(config)  # librdkafka accepts the properties (nothing connects)

    from_env = settings.load(None, environ={"RTINDEX_DIM": "8", "RTINDEX_KAFKA_BOOTSTRAP": "broker:9093",
                                            "RTINDEX_KAFKA_CONFIG": "security.protocol=SSL"})
    assert from_env.kafka_settings().client_config == {"security.protocol": "SSL"}  # type: ignore[union-attr]

    refused = [
        ("sasl.mechanisms=SCRAM-SHA-512,hunter2-secret", "kafka_config, entry 2: expected a librdkafka property"),
        ("bootstrap.servers=other:9092", "set kafka_bootstrap instead"),
        ("sasl.jaas.config=org.apache...", "librdkafka takes sasl.mechanisms, sasl.username and sasl.password"),
    ]
    for inline, message in refused:
        with pytest.raises(ValueError) as error:
            ServerConfig(dim=DIM, kafka_bootstrap="broker:9093", kafka_config=inline).kafka_settings()
        assert message in str(error.value) and "hunter2" not in str(error.value)
    misspelt = ServerConfig(dim=DIM, kafka_bootstrap="broker:9093",
                            kafka_config="security.protocol=SASL_SSL,sasl.mechanism=PLAIN,sasl.usernme=rtindex,"
                                         "sasl.password=hunter2-secret")
    with pytest.raises(ValueError, match=re.escape('librdkafka refuses it: No such configuration property: "sasl.usernme"')):
        ServerSecurity(misspelt)
    pasted = ServerConfig(dim=DIM, kafka_bootstrap="broker:9093",
                          kafka_config="sasl.password=hunter2-secret,security.protocol=hunter2-secret")
    redacted = re.escape('Invalid value "***" for configuration property "security.protocol"')
    with pytest.raises(ValueError, match=redacted) as error:
        ServerSecurity(pasted)
    assert "hunter2" not in str(error.value)
