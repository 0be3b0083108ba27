"""The tests' own servers on 127.0.0.1: a handler served on a free port in a daemon thread, stopped cleanly.

- `Serving(handler, state)`: a `ThreadingHTTPServer` on 127.0.0.1 (a free port; `port` and `url` are known
  before it starts) that serves `handler` in a daemon thread from `with` to its end. The handler finds the
  test's `state` as `self.server.state`.
- `Serving(..., tls=context)`: each connection opens with the TLS handshake; a refused one is passed to
  `refused(why)`. With `plain_too=True`, only a connection whose first byte is a handshake is wrapped, the
  others stay plain HTTP: https and http on one port.
- `serve(handler, state)`: for a fixture, `yield from serve(_Handler, State())`: `state.url` is set and the
  server runs until the test ends.
- `Handler`: the base of the handlers: HTTP/1.1, quiet, `read_body()`, `answer(...)`, `answer_json(...)`
  and `answer_long(...)` (a long body, written until the client hangs up).
- `Record`: what a server saw, in order, added from the connections' threads and read as a copy.
- `free_port()`: a port on 127.0.0.1 that nothing listens on.

A client that hangs up is not an error; any other exception in a handler is printed, as the standard
library does.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

HOST = "127.0.0.1"
TLS_HANDSHAKE = b"\x16"  # the first byte of a TLS connection: record type "handshake"

T = TypeVar("T")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a refused connection, or a port for a server to take)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ignore(why: str) -> None:
    """A refused handshake nobody asked to hear about."""


class Server(ThreadingHTTPServer):
    """The server `Serving` runs; `state` is the test's, for the handler."""

    daemon_threads = True

    def __init__(
        self,
        handler: type[socketserver.BaseRequestHandler],
        state: Any,
        tls: ssl.SSLContext | None,
        plain_too: bool,
        refused: Callable[[str], None],
    ) -> None:
        self.state = state
        self.tls = tls
        self.plain_too = plain_too
        self.refused = refused
        super().__init__((HOST, 0), handler)

    def server_bind(self) -> None:
        """Bind without `HTTPServer`'s reverse lookup of 127.0.0.1."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake, if there is one."""
        if self.tls is not None:
            request.settimeout(10)
            try:
                if not self.plain_too or request.recv(1, socket.MSG_PEEK) == TLS_HANDSHAKE:
                    request = self.tls.wrap_socket(request, server_side=True)
            except OSError as exc:  # ssl.SSLError included
                self.refused(str(exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client that hung up: what the tests expect
            return
        super().handle_error(request, client_address)


class Serving:
    """`handler` served on 127.0.0.1 (a free port) in a daemon thread, from `with` to its end."""

    def __init__(
        self,
        handler: type[socketserver.BaseRequestHandler],
        state: Any = None,
        *,
        tls: ssl.SSLContext | None = None,
        plain_too: bool = False,
        refused: Callable[[str], None] = _ignore,
    ) -> None:
        self.server = Server(handler, state, tls, plain_too, refused)
        self.port: int = self.server.server_port
        self.url = f"{'https' if tls is not None else 'http'}://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self._thread.join()
        self.server.server_close()


def serve(handler: type[BaseHTTPRequestHandler], state: T) -> Iterator[T]:
    """For a fixture: `state`, its `url` set to the server's, served by `handler` until the test ends."""
    with Serving(handler, state) as serving:
        state.url = serving.url  # type: ignore[attr-defined]
        yield state


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive), no access log; `self.server.state` is the test's state."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: bytes = b"{}", *headers: tuple[str, str]) -> None:
        """A whole answer: `body` as JSON, with its length, and `headers`."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, status: int, payload: Any, *headers: tuple[str, str]) -> None:
        self.answer(status, json.dumps(payload).encode(), *headers)

    def answer_long(self, status: int, size: int, *, chunk: int = 65536, pause: float = 0.0) -> int:
        """An answer whose plain-text body of `size` bytes is written `chunk` bytes at a time (`pause`
        seconds apart) until it is whole or the client hangs up; returns how many bytes were written."""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        written, part = 0, b"x" * chunk
        try:
            while written < size:
                self.wfile.write(part)
                self.wfile.flush()
                written += len(part)
                if pause:
                    time.sleep(pause)
        except OSError:  # the client hung up: it read what it needed
            self.close_connection = True
        return written


class Record(Generic[T]):
    """What a server saw, in order: `add` from the connections' threads, `seen()` for the test."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._lock = threading.Lock()

    def add(self, item: T) -> None:
        with self._lock:
            self._items.append(item)

    def seen(self) -> list[T]:
        with self._lock:
            return list(self._items)
