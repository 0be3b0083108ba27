"""Stdlib-only demo token server plus a token-protected API, bound to loopback only.

`DemoServer` is the HTTP lifecycle (bind, start, stop) over `DemoState` (what the API remembers, and
its controls). The rest lives beside it: `httpd` (HTTP plumbing), `routes` (which path goes where),
`tokens` and `session` (the token routes), `api` (the protected API), `control` (``/_control/``) and
`faults` (injected token-endpoint faults).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Self

from airflow_custom_token.demo import routes
from airflow_custom_token.demo.api import ITEMS
from airflow_custom_token.demo.httpd import HTTPServer, is_loopback
from airflow_custom_token.demo.routes import TOKEN_PATHS
from airflow_custom_token.demo.session import SESSION_API, SESSION_LOGIN
from airflow_custom_token.demo.state import DEFAULT_ACCOUNTS, EXPIRY_STYLES, LOG_CAP, DemoState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_custom_token.demo.httpd import Request, Response

__all__ = [
    "DEFAULT_ACCOUNTS",
    "EXPIRY_STYLES",
    "ITEMS",
    "LOG_CAP",
    "SESSION_API",
    "SESSION_LOGIN",
    "TOKEN_PATHS",
    "DemoServer",
    "is_loopback",
]


class DemoServer(DemoState):
    """Token server plus token-protected API on loopback; state readable in-process and over HTTP."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lifetime: int = 3600,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        if not is_loopback(host):
            msg = f"refusing to bind to non-loopback host {host!r} (use 127.0.0.1, ::1 or localhost)"
            raise ValueError(msg)
        self.host = host
        super().__init__(lifetime=lifetime, accounts=accounts)
        self._httpd = HTTPServer(host, port, self._respond)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def start(self) -> Self:
        """Serve in a background daemon thread."""
        if self._thread is not None:
            msg = "DemoServer already started"
            raise RuntimeError(msg)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _respond(self, req: Request) -> Response:
        return routes.respond(self, req)
