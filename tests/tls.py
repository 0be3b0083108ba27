"""A tiny HTTPS redirect server on 127.0.0.1 with a self-signed certificate (made with `cryptography`).

`RedirectServer` listens on one loopback port and speaks both protocols on it: a connection that opens
with a TLS handshake is served over TLS and answered with a redirect (`302` to `redirect_to`); a plain
HTTP connection is recorded and answered `200`. So `https://127.0.0.1:P/...` can redirect to
`http://127.0.0.1:P/...`: a pure https -> http downgrade, same host, same port. Every request is kept in
`log` (scheme, method, path, query, headers), for tests to check what each side received.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.serving import HOST, Handler, Record, Serving


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate and key for 127.0.0.1 / localhost; return (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class _Handler(Handler):
    def do_GET(self) -> None:
        body = self.read_body()
        origin: RedirectServer = self.server.state
        tls = isinstance(self.connection, ssl.SSLSocket)
        parts = urlsplit(self.path)
        entry = {
            "scheme": "https" if tls else "http",
            "method": self.command,
            "path": parts.path,
            "query": dict(parse_qsl(parts.query, keep_blank_values=True)),
            "query_string": parts.query,
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", "replace"),
        }
        origin.requests.add(entry)
        target = origin.redirect_to if tls else origin.plain_redirect_to
        if target is not None:
            location = target(origin.port, self.path)
            self.answer(302, json.dumps({"location": location}).encode(), ("Location", location))
        else:
            self.answer_json(200, {"ok": True})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


Target = Callable[[int, str], str] | str


def _target(value: Target) -> Callable[[int, str], str]:
    if isinstance(value, str):
        return lambda port, path: value
    return value


class RedirectServer(Serving):
    """HTTPS (self-signed) that redirects, plus plain HTTP on the same port that records and answers 200.

    `redirect_to(port, path)` returns the Location for a request received over TLS; by default the same
    path over plain http on the same host and port. With `plain_redirect_to`, plain HTTP requests are
    redirected too (instead of answered 200).
    """

    def __init__(self, redirect_to: Target | None = None, *, plain_redirect_to: Target | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="custom-token-tls-")
        cert, key = self_signed_cert(Path(self._dir.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        downgrade: Target = lambda port, path: f"http://{HOST}:{port}{path}"  # noqa: E731
        self.redirect_to = _target(downgrade if redirect_to is None else redirect_to)
        self.plain_redirect_to = None if plain_redirect_to is None else _target(plain_redirect_to)
        self.requests: Record[dict[str, Any]] = Record()
        super().__init__(_Handler, self, tls=context, plain_too=True)

    @property
    def https_url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.requests.seen()

    def received(self, scheme: str) -> list[dict[str, Any]]:
        """The requests received over `scheme` ("https" or "http")."""
        return [entry for entry in self.log if entry["scheme"] == scheme]

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._dir.cleanup()
