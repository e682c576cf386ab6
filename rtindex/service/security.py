"""Security of the server: TLS (and mutual TLS) on the gRPC port, API keys by role, and
the Kafka client's SASL/SSL properties (README: Running securely).

API keys travel as call metadata, ``authorization: Bearer <key>`` (the usual
convention: grpcurl ``-H``, gateways, ``IndexClient(api_key=...)``) or ``x-api-key:
<key>``. A read-write key may call everything; a read-only key only what reads
(``READ_ONLY_METHODS``). The standard health service is open to everyone, so probes work
without a key. Any other method, including one added to the proto later and not
classified here, needs the read-write key: an unlisted method fails closed.

A missing or unknown key is refused with UNAUTHENTICATED, a read-only key on a write with
PERMISSION_DENIED, before the request is read. Keys are compared in constant time
(``hmac.compare_digest``) and never written to a log, a message or a repr.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import ssl
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_reflection.v1alpha import reflection

from rtindex.api.client import read_pem
from rtindex.api.v1 import index_pb2

if TYPE_CHECKING:
    from rtindex.service.settings import ServerConfig

log = logging.getLogger("rtindex.security")

_SERVICE = index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name

#: reachable without a key: load balancers and orchestrators probe health with none
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
#: a read-only key may call these (reflection only describes the API, so grpcurl works with it)
READ_ONLY_METHODS = frozenset(
    {f"/{_SERVICE}/{name}" for name in ("Search", "Get", "Stats", "CategoryParents")}
    | {f"/{reflection.SERVICE_NAME}/ServerReflectionInfo"}
)
#: these change the index or its files and need the read-write key (as does anything unlisted)
WRITE_METHODS = frozenset(f"/{_SERVICE}/{name}" for name in ("Upsert", "Delete", "SetCategoryParents", "Snapshot"))

_HOW_TO_SEND = ("send the metadata 'authorization: Bearer <key>' (or 'x-api-key: <key>'): IndexClient(api_key=...), "
                "rtindex <command> --api-key-file FILE (or RTINDEX_API_KEY), grpcurl -H 'authorization: Bearer <key>'")
_KEY_ALPHABET = re.compile(r"[!-~]+")  # printable ASCII without spaces: what a gRPC header value can carry as is


# ---------------------------------------------------------------------------- API keys
def check_key(key: str, where: str) -> None:
    """Refuse a key a header cannot carry; the message never repeats the key."""
    if not _KEY_ALPHABET.fullmatch(key):
        raise ValueError(f"{where}: an API key must be printable ASCII without spaces (a gRPC header value); "
                         "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def read_keys(path: str, setting: str) -> list[str]:
    """The keys of a key file: one per line; blank lines and lines starting with # are
    skipped (several keys let clients move to a new key before the old one is removed)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{setting}: cannot read {path} ({getattr(exc, 'strerror', None) or exc}); give a "
                         "readable text file with one API key per line") from None
    _warn_if_others_can_read(path, setting)
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            check_key(line, f"{setting} {path}, line {number}")
            keys.append(line)
    if not keys:
        raise ValueError(f"{setting}: {path} holds no key; write one API key per line (# starts a comment)")
    return keys


def _warn_if_others_can_read(path: str, setting: str) -> None:
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("a secrets file is readable by other users; make it private (chmod 600)",
                    extra={"setting": setting, "path": path, "mode": oct(stat.S_IMODE(mode))})


class ApiKeys:
    """The accepted keys by role. Shown only as counts: ``repr`` holds no key."""

    def __init__(self, read_write: Iterable[str], read_only: Iterable[str]) -> None:
        self._read_write = [k.encode() for k in read_write]
        self._read_only = [k.encode() for k in read_only]
        if set(self._read_write) & set(self._read_only):
            raise ValueError("the same API key is configured as read-write and as read-only; give each role its own "
                             "keys")

    @property
    def enabled(self) -> bool:
        return bool(self._read_write or self._read_only)

    @property
    def can_write(self) -> bool:
        """Whether any key may write (with only read-only keys, gRPC writes are off)."""
        return bool(self._read_write)

    def role(self, presented: str) -> str | None:
        """The key's role: "read-write", "read-only", or None (not a key of this server)."""
        candidate = presented.encode()
        # every key is compared, so the time taken does not say which one (or which role) came close
        read_write = _matches(candidate, self._read_write)
        read_only = _matches(candidate, self._read_only)
        return "read-write" if read_write else "read-only" if read_only else None

    def __repr__(self) -> str:
        return f"ApiKeys(read_write={len(self._read_write)} keys, read_only={len(self._read_only)} keys)"


def _matches(candidate: bytes, keys: Sequence[bytes]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


def presented_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The key a call carries: ``authorization: Bearer <key>`` first, else ``x-api-key``."""
    fallback = None
    for name, value in metadata or ():
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            fallback = value.strip()
    return fallback


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that ends the call with ``code``. Stream-stream fits any method's
    shape (a unary call ends the same way on the wire) and reads no request message."""

    def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


class ApiKeyInterceptor(grpc.ServerInterceptor):
    """Checks the call's API key against the method's role before anything else runs."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys
        # refusals by kind, for Stats (plain ints: a racy += loses at most a count)
        self.refused = {"auth_unauthenticated": 0, "auth_permission_denied": 0}

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in OPEN_METHODS:
            return continuation(handler_call_details)
        key = presented_key(handler_call_details.invocation_metadata)
        role = None if key is None else self.keys.role(key)
        if role is None:
            self.refused["auth_unauthenticated"] += 1
            problem = "no API key was sent" if key is None else "the API key is not valid on this server"
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, f"{_short(method)}: {problem}; {_HOW_TO_SEND}")
        if role == "read-only" and method not in READ_ONLY_METHODS:
            self.refused["auth_permission_denied"] += 1
            return _refusal(grpc.StatusCode.PERMISSION_DENIED, self._write_refused(method))
        return continuation(handler_call_details)

    def _write_refused(self, method: str) -> str:
        if not self.keys.can_write:
            return (f"{_short(method)} needs the read-write API key, and this server has none (only read-only keys "
                    "are configured): gRPC writes are off; start it with --api-key-file (or --api-key) to allow them")
        return (f"{_short(method)} needs the read-write API key; this key is read-only (it may call Search, Get, "
                "Stats and CategoryParents)")

    def counters(self) -> dict[str, float]:
        return {name: float(count) for name, count in self.refused.items()}


def api_keys(config: ServerConfig) -> ApiKeys:
    """The configured keys: ``api_key`` or the keys in ``api_key_file`` (read-write),
    ``read_only_api_key`` or ``read_only_api_key_file`` (read-only)."""
    roles = []
    for inline, path, setting in ((config.api_key, config.api_key_file, "api_key"),
                                  (config.read_only_api_key, config.read_only_api_key_file, "read_only_api_key")):
        if inline:
            check_key(inline, setting)
            roles.append([inline])
        else:
            roles.append(read_keys(path, f"{setting}_file") if path else [])
    return ApiKeys(*roles)


# ---------------------------------------------------------------------------- TLS
def _encrypted_key() -> bytes:
    raise ValueError("encrypted")


def _check_pair(cert_path: str, key_path: str) -> None:
    """Let OpenSSL read the pair the way a handshake will: gRPC itself only says 'Failed
    to bind' when it cannot."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path, password=_encrypted_key)
    except ValueError:
        raise ValueError(f"tls_key: {key_path} is encrypted and gRPC cannot take a passphrase; give an unencrypted "
                         "PEM key readable only by the server's user (openssl pkey -in KEY -out KEY.plain)") from None
    except ssl.SSLError as exc:
        reason = "the key is not the one the certificate was issued for" if exc.reason == "KEY_VALUES_MISMATCH" \
            else f"OpenSSL cannot load them ({exc.reason or exc})"
        raise ValueError(f"tls_cert {cert_path} and tls_key {key_path} are not a usable pair: {reason}; give the "
                         "certificate chain (server certificate first) and its private key, both PEM") from None


def _check_ca(data: bytes, path: str) -> None:
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"tls_client_ca: {path} holds no usable CA certificate ({exc}); give the PEM certificate(s) "
                         "of the CA that signs client certificates") from None


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from tls_cert / tls_key (and tls_client_ca: mutual TLS), read and
    checked now; None: plaintext."""
    if not config.tls_cert:
        return None
    cert = read_pem(config.tls_cert, "tls_cert")
    key = read_pem(config.tls_key, "tls_key")
    _warn_if_others_can_read(config.tls_key, "tls_key")
    _check_pair(config.tls_cert, config.tls_key)
    client_ca = None
    if config.tls_client_ca:
        client_ca = read_pem(config.tls_client_ca, "tls_client_ca")
        _check_ca(client_ca, config.tls_client_ca)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


# ---------------------------------------------------------------------------- Kafka
# set by the server from other settings, or relied on by its commit logic
_RESERVED = {
    "bootstrap.servers": "set kafka_bootstrap instead",
    "group.id": "set kafka_group instead",
    "enable.auto.commit": "rtindex commits offsets itself, once the changes are searchable",
    "sasl.jaas.config": "that is the Java client's setting; librdkafka takes sasl.mechanisms, sasl.username and "
                        "sasl.password",
}
_SECRET_PROPERTY = re.compile(r"password|secret|token|\.pem$|oauthbearer\.config")


def _properties(lines: Iterable[str], where: Callable[[int], str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            # the entry is not repeated: it may be a secret pasted on its own
            raise ValueError(f"{where(number)}: expected a librdkafka property as key=value (e.g. "
                             "security.protocol=SASL_SSL)")
        out[key.strip()] = value.strip()
    return out


def kafka_client_config(inline: str, path: str) -> dict[str, str]:
    """librdkafka properties from ``kafka_config`` (``key=value,key=value``; a value
    holding a comma goes in the file) and ``kafka_config_file`` (a properties file: one
    ``key=value`` per line, # comments), the file's entries winning. Checked for syntax and reserved keys only; see
    ``check_kafka_client_config`` for librdkafka's own check."""
    out = _properties(inline.split(","), lambda n: f"kafka_config, entry {n}")
    if path:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"kafka_config_file: cannot read {path} ({getattr(exc, 'strerror', None) or exc}); give "
                             "a readable file of librdkafka properties, one key=value per line") from None
        _warn_if_others_can_read(path, "kafka_config_file")
        out.update(_properties(text.splitlines(), lambda n: f"kafka_config_file {path}, line {n}"))
    for key, why in _RESERVED.items():
        if key in out:
            raise ValueError(f"kafka_config / kafka_config_file: {key} cannot be set there: {why}")
    return out


def redact(text: str, client_config: dict[str, str]) -> str:
    """``text`` with the values of secret properties (passwords, keys, tokens) masked."""
    for key, value in client_config.items():
        if value and _SECRET_PROPERTY.search(key):
            text = text.replace(value, "***")
    return text


def check_kafka_client_config(client_config: dict[str, str]) -> None:
    """Let librdkafka judge the properties now (a client with no broker to reach: it
    connects to nothing), so that a misspelt property or an unreadable CA file stops the
    server at start-up instead of stopping ingestion later."""
    from confluent_kafka import Consumer, KafkaException

    try:
        Consumer({"group.id": "rtindex-config-check", "log_level": 0, **client_config}).close()
    except KafkaException as exc:
        error = exc.args[0]
        reason = error.str() if hasattr(error, "str") else str(exc)
        raise ValueError(f"kafka_config: librdkafka refuses it: {redact(reason, client_config)}; the properties are "
                         "listed in librdkafka's CONFIGURATION.md") from None


# ---------------------------------------------------------------------------- the server's view
class ServerSecurity:
    """What a server's security settings amount to, read and checked at construction so
    a bad file stops the server before it restores or binds anything."""

    def __init__(self, config: ServerConfig) -> None:
        self.credentials = server_credentials(config)
        self.tls = "off" if self.credentials is None else "mutual" if config.tls_client_ca else "on"
        self.keys = api_keys(config)
        self.interceptor = ApiKeyInterceptor(self.keys) if self.keys.enabled else None
        if config.kafka_bootstrap:
            check_kafka_client_config(config.kafka_client_config())
        summary = {"tls": self.tls, "api_keys": repr(self.keys) if self.keys.enabled else "off"}
        if self.keys.enabled and not self.keys.can_write:
            log.warning("only read-only API keys are configured: gRPC writes are refused (PERMISSION_DENIED)",
                        extra=summary)
        if self.tls == "off" and not _is_loopback(config.host):
            what = "API keys travel in clear text" if self.keys.enabled else \
                "anyone who can reach the port can read and change the index"
            log.warning(f"gRPC without TLS on a non-local address: {what} (README: Running securely)",
                        extra={"host": config.host, **summary})
        else:
            log.info("gRPC security", extra=summary)

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [self.interceptor] if self.interceptor is not None else []

    def add_port(self, server: grpc.Server, address: str) -> int:
        """Bind ``address`` with TLS when configured; returns the port (0: could not bind)."""
        if self.credentials is None:
            return server.add_insecure_port(address)
        try:
            return server.add_secure_port(address, self.credentials)
        except RuntimeError:  # grpc raises rather than returning 0 for a secure port
            return 0

    def counters(self) -> dict[str, float]:
        return self.interceptor.counters() if self.interceptor is not None else {}

    def __repr__(self) -> str:
        return f"ServerSecurity(tls={self.tls!r}, keys={self.keys!r})"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
