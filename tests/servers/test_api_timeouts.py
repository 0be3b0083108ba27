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
        extra = demo_extra(demo, allowed_hosts=[silent], **overrides)
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
