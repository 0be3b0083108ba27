"""An API that answers badly (issue 15, leftovers): a Location that is not a URL, a 401 with a huge or
trickling body. A server of the suite's own on 127.0.0.1; each client the provider offers.

- A redirect whose Location cannot be parsed (`http://[::1/x`, a port out of range) is a `RequestError`
  that names the problem and quotes no secret, from `hook.run`, a plain session with `CustomTokenAuth`
  and the async client (it was a plain `ValueError` from `urljoin`).
- A 401 answer's body is drained (bounded: `auth.DRAIN_BYTES`, `auth.DRAIN_SECONDS`) before the refresh
  retry, never read whole: a 256 MiB body is not read, a trickling one does not hold the retry.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_custom_token import auth
from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.errors import RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.serving import Handler, serve

pytestmark = pytest.mark.timeout(60)

CLIENT_SECRET = "cl+ient/secret=="
HUGE = 256 * 1024 * 1024  # the 401's body: far more than anyone should read
TRICKLE = 400  # bytes of a 401 body sent one every 0.1 s: 40 s to read whole
BAD_LOCATIONS = {"unclosed-bracket": "http://[::1/x", "port-out-of-range": "http://127.0.0.1:99999/x"}


@dataclass
class Api:
    """What the server issued, and how much of each 401 body it could write before the client left."""

    url: str = ""
    location: str = ""
    issued: list[str] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    retried: list[str] = field(default_factory=list)  # the tokens the API accepted (on the retry)
    ports: list[int] = field(default_factory=list)  # the client's port of each API request: its connection


class _Handler(Handler):
    def do_POST(self) -> None:
        self.read_body()
        api: Api = self.server.state
        token = f"tk+{secrets.token_hex(8)}/=="
        api.issued.append(token)
        self.answer(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())

    def do_GET(self) -> None:
        api: Api = self.server.state
        path = urlsplit(self.path).path
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        api.ports.append(self.client_address[1])
        if path == "/api/redirect":
            self.answer(302, b"{}", ("Location", api.location))
        elif path in ("/api/huge-401", "/api/trickling-401") and token == api.issued[0]:
            self._unauthorized(trickle=path == "/api/trickling-401")
        elif path == "/api/small-401" and token == api.issued[0]:
            self.answer(401, b'{"error": "invalid_token"}')
        else:
            api.retried.append(token)
            self.answer(200, b'{"ok": true}')

    def _unauthorized(self, *, trickle: bool) -> None:
        """A 401 whose body is huge (or trickles); counts what it could write before the client left."""
        api: Api = self.server.state
        if trickle:
            written = self.answer_long(401, TRICKLE, chunk=1, pause=0.1)
        else:
            written = self.answer_long(401, HUGE)
        api.written.append(written)
        api.done.set()


@pytest.fixture
def api() -> Iterator[Api]:
    yield from serve(_Handler, Api())


@pytest.fixture
def hook(api: Api, make_conn: Callable[..., str]) -> CustomTokenHook:
    extra = {
        "integration_key": "hostile",
        "access_endpoint": f"{api.url}/token",
        "access_verb": "POST",
        "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
    }
    make_conn("hostile", host=api.url, login="dev", password=CLIENT_SECRET, extra=extra)
    return CustomTokenHook("hostile")


def secret_free(message: str, api: Api) -> bool:
    return not any(value in message for value in (*api.issued, CLIENT_SECRET))


# -- a Location that is not a URL ---------------------------------------------------------------------


@pytest.mark.parametrize("problem", sorted(BAD_LOCATIONS))
def test_hook_run_refuses_a_location_that_is_not_a_url(hook: CustomTokenHook, api: Api, problem: str) -> None:
    api.location = BAD_LOCATIONS[problem]

    with pytest.raises(RequestError) as caught:
        hook.run("/api/redirect")

    message = str(caught.value)
    assert "answered 302 with a Location that is not a valid URL" in message
    assert "/api/redirect" in message and secret_free(message, api)
    assert ("Invalid IPv6 URL" if problem == "unclosed-bracket" else "Port out of range") in message


def test_custom_token_auth_on_a_plain_session_refuses_it(hook: CustomTokenHook, api: Api) -> None:
    api.location = BAD_LOCATIONS["unclosed-bracket"]
    session = requests.Session()
    session.auth = CustomTokenAuth(hook.source)

    with pytest.raises(RequestError, match="Location that is not a valid URL") as caught:
        session.get(f"{api.url}/api/redirect", timeout=10)

    assert secret_free(str(caught.value), api)


@pytest.mark.parametrize("problem", sorted(BAD_LOCATIONS))
def test_the_async_client_refuses_a_location_that_is_not_a_url(
    hook: CustomTokenHook, api: Api, problem: str
) -> None:
    api.location = BAD_LOCATIONS[problem]

    async def go() -> Any:
        async with AsyncCustomTokenClient(hook.source) as client:
            return await client.request("GET", "/api/redirect")

    with pytest.raises(RequestError) as caught:
        asyncio.run(go())

    message = str(caught.value)
    assert "answered 302 with a Location that is not a valid URL" in message
    assert "/api/redirect" in message and secret_free(message, api)


# -- a 401 with a huge or trickling body --------------------------------------------------------------


def test_a_huge_401_body_is_not_read_before_the_refresh_retry(hook: CustomTokenHook, api: Api) -> None:
    response = hook.run("/api/huge-401")

    assert response.status_code == 200 and response.json() == {"ok": True}
    assert api.retried == api.issued[1:2]  # the retry carried the new token
    assert api.done.wait(10)
    # what the server got out before the client hung up: the drained part and the sockets' buffers
    assert api.written[0] < 32 * 1024 * 1024, api.written
    assert api.ports[0] != api.ports[1]  # the retry went over a new connection: the old one was closed


def test_a_huge_401_body_on_a_plain_session_with_custom_token_auth(hook: CustomTokenHook, api: Api) -> None:
    session = requests.Session()
    session.auth = CustomTokenAuth(hook.source)

    response = session.get(f"{api.url}/api/huge-401", timeout=10)

    assert response.status_code == 200
    assert api.done.wait(10) and api.written[0] < 32 * 1024 * 1024, api.written


def test_a_trickling_401_body_does_not_hold_the_retry(hook: CustomTokenHook, api: Api) -> None:
    """One byte every 0.1 s: read whole, the retry would wait 40 s; drained, about `DRAIN_SECONDS`."""
    started = time.monotonic()

    response = hook.run("/api/trickling-401", extra_options={"timeout": 5})

    assert response.status_code == 200
    assert time.monotonic() - started < auth.DRAIN_SECONDS + 15  # 40 s and more when read whole
    assert api.done.wait(10) and api.written[0] < TRICKLE


def test_a_small_401_body_is_still_in_the_history(hook: CustomTokenHook, api: Api) -> None:
    """Drained to its end, a 401's body stays readable in the retry's `history`, as it always was."""
    response = hook.run("/api/small-401")

    assert response.status_code == 200
    [rejected] = response.history
    assert rejected.status_code == 401 and rejected.json() == {"error": "invalid_token"}
    assert api.ports[0] == api.ports[1]  # drained: the retry went over the same connection
