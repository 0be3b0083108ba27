"""Every API request is bounded in time (#19 item 11): the connection's `timeout`, else
`[custom_token] api_request_timeout`, in the sync hook, its `get_conn()` session and the async hook.

The API here is a socket on 127.0.0.1 that accepts connections and never answers (0.2's sync hook
waited on it forever).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from airflow_custom_token.errors import RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenAsyncHook, CustomTokenHook
from tests.conftest import demo_extra

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def silent() -> Iterator[str]:
    """An origin that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@pytest.fixture
def connect(demo: Any, silent: str, make_conn: Callable[..., str]) -> Callable[..., str]:
    def make(**overrides: Any) -> str:
        extra = demo_extra(demo, **{"allowed_hosts": [silent], **overrides})
        return make_conn("silent", host=demo.url, login="dev", password="dev-secret", extra=extra)

    return make


def test_sync_run_times_out_after_the_configured_default(
    connect: Callable[..., str], silent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__API_REQUEST_TIMEOUT", "1")
    hook = CustomTokenHook(connect())
    hook.get_token()  # the token endpoint answers; only the API is silent

    started = time.monotonic()
    with pytest.raises(RequestError, match=r"GET http://127\.0\.0\.1:\d+/x failed: ReadTimeout"):
        hook.run(f"{silent}/x")
    assert time.monotonic() - started < 10


def test_the_connections_timeout_wins_and_bounds_a_get_conn_session(
    connect: Callable[..., str], silent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__API_REQUEST_TIMEOUT", "3000")
    hook = CustomTokenHook(connect(timeout=1))
    session = hook.get_conn()

    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.get(f"{silent}/x")
    assert time.monotonic() - started < 10
    assert hook.account.api_timeout == 1


def test_async_run_times_out_after_the_same_default(
    connect: Callable[..., str], silent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__API_REQUEST_TIMEOUT", "1")
    hook = CustomTokenAsyncHook(connect())

    started = time.monotonic()
    with pytest.raises(RequestError, match=r"GET http://127\.0\.0\.1:\d+/x timed out"):
        asyncio.run(hook.run(f"{silent}/x"))
    assert time.monotonic() - started < 10


# -- the same bytes, sync and async (#19 item 13) ---------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """An API on 127.0.0.1 that answers 200 and records each request line's target as received."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("value", ["..;", "a%3Bb", "a%2Fb", "x;y"])
def test_sync_and_async_send_the_same_path_for_a_placeholder(
    connect: Callable[..., str], recorder: tuple[str, list[str]], value: str
) -> None:
    url, seen = recorder
    conn_id = connect(allowed_hosts=[url])
    endpoint = f"{url}/tenants/{{tenant}}/v1/admin"

    CustomTokenHook(conn_id, {"tenant": value}).run(endpoint)
    asyncio.run(CustomTokenAsyncHook(conn_id, {"tenant": value}).run(endpoint))

    sync_path, async_path = (path.split("?", 1)[0] for path in seen)
    assert sync_path == async_path
    assert ".." not in sync_path.split("/") and "/v1/admin" in sync_path and "%" in sync_path
