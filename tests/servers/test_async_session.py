"""The async client's session (issue 18): one aiohttp session per event loop, shared by every client open on
it (the triggerer's triggers), its connections kept alive and pooled, closed by the last client out.

The API here records the client port of every request it serves: one port is one TCP connection.
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.serving import Handler, Record, Serving

pytestmark = pytest.mark.timeout(60)


class _Api(Handler):
    def do_POST(self) -> None:  # the token endpoint
        self.read_body()
        self.answer_json(200, {"access_token": "tok-shared-session-1", "expires_in": 600})

    def do_GET(self) -> None:
        self.server.state.add(self.client_address[1])
        self.answer_json(200, {"ok": True})


@pytest.fixture
def api(make_conn):
    ports: Record[int] = Record()
    with Serving(_Api, ports) as server:
        extra = {
            "integration_key": "pooled",
            "access_endpoint": "/token",
            "access_verb": "POST",
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
        }
        yield make_conn("pooled", host=server.url, extra=extra), ports


def test_clients_on_one_loop_share_a_kept_alive_connection_and_the_last_closes_it(api):
    conn_id, ports = api
    source = CustomTokenHook(conn_id).source

    async def two_clients_in_turn() -> tuple[bool, bool]:
        async with AsyncCustomTokenClient(source) as first:
            assert (await first.request("GET", "/a")).status == 200
            async with AsyncCustomTokenClient(source) as second:
                assert (await second.request("GET", "/b")).status == 200
                same = first._session is second._session
            still_open = not first._session.closed  # the second one out is not the last
        return same, still_open

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        same, still_open = asyncio.run(two_clients_in_turn())
        gc.collect()  # an unclosed session or connector would warn here
    assert same and still_open
    assert len(ports.seen()) == 2 and len(set(ports.seen())) == 1  # two requests, one TCP connection


def test_a_new_loop_gets_a_new_session(api):
    conn_id, _ = api
    source = CustomTokenHook(conn_id).source

    async def session_of_a_client() -> object:
        async with AsyncCustomTokenClient(source) as client:
            await client.request("GET", "/c")
            return client._session

    first, second = asyncio.run(session_of_a_client()), asyncio.run(session_of_a_client())
    assert first is not second
    assert first.closed and second.closed  # type: ignore[attr-defined]
