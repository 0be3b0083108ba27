"""Servers on 127.0.0.1 for the parity tests (issue 13): a flaky API, a TLS API that requires a client
certificate, and a forwarding proxy. Certificates are made by the tests, with `cryptography`.

- `Api`: a token endpoint (`POST /token`, client credentials `client`/`client-secret`) and an API under
  `/api/` that checks the token (`Authorization: Bearer`), answers each request with the next queued
  fault (a status, with a Retry-After or not, or `"drop"`: the connection closes without an answer) or
  else `200` with an echo of the request, and records every request it receives (`seen`).
- `Pki`: a CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in a directory.
- `Api(tls=pki)`: the same over TLS, requiring a client certificate signed by the CA; the server's
  refusals (no certificate, another CA) are recorded in `refused`.
- `ForwardProxy`: a plain HTTP forward proxy that records each request and forwards it.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import ssl
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.serving import HOST, Handler, Record, Serving, free_port

CLIENT_ID, CLIENT_SECRET = "client", "client-secret"


# -- certificates ---------------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class Pki:
    """A CA and the certificates it signed, in `directory`: `ca`, `server_cert`/`server_key`,
    `client_cert`/`client_key`, and `client_both` (certificate and key in one file)."""

    def __init__(self, directory: Path, ca_name: str = "custom-token test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        now = datetime.datetime.now(datetime.UTC)
        self._valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = _name(ca_name)
        ca = (
            x509.CertificateBuilder()
            .subject_name(self._ca_name)
            .issuer_name(self._ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False
            )
            .sign(self._ca_key, hashes.SHA256())
        )  # fmt: skip
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert, self.server_key = self._leaf("server", server=True)
        self.client_cert, self.client_key = self._leaf("client", server=False)
        self.client_both = directory / "client-with-key.pem"
        self.client_both.write_bytes(self.client_cert.read_bytes() + self.client_key.read_bytes())

    def _leaf(self, common_name: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._valid[0])
            .not_valid_after(self._valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False
            )
        cert_path = self.directory / f"{common_name}.pem"
        key_path = self.directory / f"{common_name}.key"
        cert = builder.sign(self._ca_key, hashes.SHA256())
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path

    def server_context(self) -> ssl.SSLContext:
        """The server's TLS context: its certificate, and a client certificate of this CA required."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


# -- the API ----------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request the API received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    peer: str | None = None  # the client certificate's common name, over TLS

    @property
    def token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


@dataclass
class ApiState:
    issued: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    faults: list[Any] = field(default_factory=list)  # int status, (status, retry_after) or "drop"
    refused: list[str] = field(default_factory=list)  # TLS handshakes the server refused, and why
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self) -> list[int]:
        return [s.status for s in self.seen]

    def refuse(self, why: str) -> None:
        """A TLS handshake the server refused."""
        with self.lock:
            self.refused.append(why)


class _Handler(Handler):
    def do_GET(self) -> None:
        body = self.read_body()
        state: ApiState = self.server.state
        parts = urlsplit(self.path)
        peer = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert() or {}
            peer = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        seen = Seen(
            self.command, parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()), body, 0, peer
        )
        if parts.path == "/token":
            form = dict(parse_qsl(body.decode()))
            with state.lock:
                state.token_requests.append(seen)
                if form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET:
                    token = f"tok{len(state.issued) + 1}-{secrets.token_hex(8)}"
                    state.issued.append(token)
                else:
                    token = None
            if token is None:
                self.answer_json(401, {"error": "invalid_client"})
            else:
                self.answer_json(200, {"access_token": token, "expires_in": 3600})
            return
        with state.lock:
            fault = state.faults.pop(0) if state.faults else None
            valid = seen.token in state.issued
            state.seen.append(seen)
        if fault == "drop":  # no answer at all: the connection closes
            self.close_connection = True
            return
        if not valid:
            seen.status = 401
            self.answer_json(401, {"error": "invalid_token"})
        elif fault is not None:
            status, retry_after = fault if isinstance(fault, tuple) else (fault, None)
            seen.status = status
            extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
            self.answer_json(status, {"error": "try again"}, *extra)
        else:
            seen.status = 200
            echo = {
                "method": self.command,
                "path": parts.path,
                "query": seen.query,
                "content_type": self.headers.get("Content-Type"),
                "body": body.decode("utf-8", "replace"),
                "peer": peer,
            }
            self.answer_json(200, echo)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET


class Api(Serving):
    """The API on 127.0.0.1 (random port): plain HTTP, or TLS requiring a client certificate of `tls`."""

    def __init__(self, tls: Pki | None = None) -> None:
        self.state = ApiState()
        context = tls.server_context() if tls is not None else None
        super().__init__(_Handler, self.state, tls=context, refused=self.state.refuse)

    def extra(self, **overrides: Any) -> dict[str, Any]:
        """The connection's extra: client credentials posted to /token, a Bearer header."""
        extra: dict[str, Any] = {
            "integration_key": "parity",
            "access_endpoint": "/token",
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
        }
        extra.update(overrides)
        return extra

    def connection(self, **overrides: Any) -> dict[str, Any]:
        """The fields of the connection (for `make_conn`)."""
        extra = self.extra(**overrides)
        return {"host": self.url, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}


# -- a forward proxy ----------------------------------------------------------------------------------------


class _ProxyHandler(Handler):
    def do_GET(self) -> None:
        body = self.read_body() or None
        self.server.state.requests.add((self.command, self.path))
        hop = ("proxy-connection", "connection")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        request = urllib.request.Request(self.path, data=body, headers=headers, method=self.command)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the target
        try:
            with opener.open(request, timeout=10) as answer:
                status, reply, answer_headers = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            status, reply, answer_headers = error.code, error.read(), error.headers
        self.send_response(status)
        for name, value in answer_headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_PUT = do_DELETE = do_GET


class ForwardProxy(Serving):
    """A plain HTTP forward proxy on 127.0.0.1; `log` holds (method, absolute URL) of each request."""

    def __init__(self) -> None:
        self.requests: Record[tuple[str, str]] = Record()
        super().__init__(_ProxyHandler, self)

    @property
    def log(self) -> list[tuple[str, str]]:
        return self.requests.seen()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for a proxy that must not be used)."""
    return free_port()
