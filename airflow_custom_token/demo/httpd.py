"""The demo server's HTTP plumbing (stdlib only): parsed requests, answers, the handler and the server.

Nothing here knows the demo API: `HTTPServer` hands every `Request` to a `respond` callable and writes
the `Response` it returns (see `routes.respond`).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable
    from email.message import Message


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Response(NamedTuple):
    """One answer: status, body, content type and extra headers, written in a single send."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any, *headers: tuple[str, str]) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(payload).encode(), "application/json", headers)


def last_values(query: str) -> dict[str, str]:
    """A query string or form body as a dict, the last value of each name."""
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


class Request:
    """A parsed request, as seen by the router and recorded in the logs."""

    def __init__(self, method: str, target: str, message: Message, body: bytes) -> None:
        parts = urlsplit(target)
        self.method, self.path, self.query_string = method, parts.path, parts.query
        self.query = last_values(parts.query)
        self.message, self.headers, self.body = message, dict(message.items()), body
        self.content_type: str | None = message.get("Content-Type")
        self.form: dict[str, str] | None = None
        self.json: Any = None
        if self.content_type and "x-www-form-urlencoded" in self.content_type:
            self.form = last_values(body.decode("utf-8", "replace"))
        elif body:
            with contextlib.suppress(ValueError):
                self.json = json.loads(body)

    def record(self) -> dict[str, Any]:
        """Return the log entry for this request."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "form": self.form,
            "json": self.json,
            "headers": self.headers,
            "content_type": self.content_type,
        }

    def token_candidates(self) -> list[str]:
        """Return every header, cookie and query value, minus any leading scheme word."""
        values = [*self.headers.values(), *self.query.values()]
        for cookie in self.message.get_all("Cookie") or ():
            values.extend(part.partition("=")[2] for part in str(cookie).split(";"))
        return [value.strip().rpartition(" ")[2] for value in values]

    def client_credentials(self) -> tuple[str, str] | None:
        """Find ``(client_id, secret)`` in the JSON body, form, query or Basic auth."""
        for fields in (self.json if isinstance(self.json, dict) else None, self.form, self.query):
            for id_key, secret_key in (("client_id", "client_secret"), ("username", "password")):
                if fields and id_key in fields and secret_key in fields:
                    return str(fields[id_key]), str(fields[secret_key])
            if fields and "apiKey" in fields:
                client_id, _, secret = str(fields["apiKey"]).partition(":")
                return client_id, secret
        return self.basic_credentials()

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` the request sends, if any."""
        for header in self.message.get_all("Cookie") or ():
            for part in str(header).split(";"):
                key, sep, value = part.strip().partition("=")
                if sep and key == name:
                    return value
        return None

    def basic_credentials(self) -> tuple[str, str] | None:
        """Find ``(client_id, secret)`` in an ``Authorization: Basic`` header (RFC 7617, UTF-8)."""
        scheme, _, value = str(self.message.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):  # binascii.Error, UnicodeDecodeError
                client_id, sep, secret = base64.b64decode(value.strip()).decode().partition(":")
                return (client_id, secret) if sep else None
        return None


class Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 keep-alive handler: parse, route via the server, write once."""

    protocol_version = "HTTP/1.1"
    server_version = "airflow-custom-token-demo/1.0"
    disable_nagle_algorithm = True
    wbufsize = -1  # buffer headers + body into a single send per response
    server: HTTPServer

    def log_message(self, *args: Any, **kwargs: Any) -> None:
        """Stay quiet: no per-request lines on stderr."""

    def do_GET(self) -> None:
        """Serve every supported method through the demo router."""
        try:
            body = self._read_body()
        except ValueError:
            self._write(json_response(400, {"error": "bad_request"}, ("Connection", "close")))
            return
        self._write(self.server.respond(Request(self.command, self.path, self.headers, body)))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in str(self.headers.get("Transfer-Encoding", "")).lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # skip trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, response: Response) -> None:
        status, body, content_type, headers = response
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class HTTPServer(ThreadingHTTPServer):
    """Threading server that tracks open connections so ``stop()`` can drop them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, respond: Callable[[Request], Response]) -> None:
        self.respond = respond
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer.server_bind`` does."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, remembering it while it is open."""
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore client disconnects; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)
