"""Refresh on `refresh_on`, redirects on the origin and API retries, against a strict API on 127.0.0.1.

The API here is stricter than the demo's: a request that carries a token twice, or any query parameter
twice (`?tk=OLD&tk=NEW`), is answered 400, since an API that reads the first value would reject it. It
records every token it receives. Each client the provider offers is checked: `hook.run`, the session
of `hook.get_conn()`, `CustomTokenAuth` on a plain `requests.Session`, and the async client.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth, authenticated_session
from airflow_custom_token.errors import RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.settings import Settings
from tests.serving import Handler, serve

pytestmark = pytest.mark.timeout(60)

PASSWORD = "strict-secret"
INJECTIONS = {
    "url": {"inject_as": "url", "inject_name": "tk", "inject_template": "{token}"},
    "header": {"inject_as": "header", "inject_name": "Authorization", "inject_template": "Bearer {token}"},
}
FAST = RetryPolicy(retries=2, wait_base=0.01, wait_max=0.05, retry_after_max=0.1)


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    tokens: list[str]
    status: int


@dataclass
class StrictApi:
    """State of the server: tokens issued and valid, what the API saw, faults to play."""

    issued: list[str] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    reject_all: bool = False
    faults: list[int | str] = field(default_factory=list)  # statuses to answer, or "drop" the connection
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def revoke(self) -> None:
        with self.lock:
            self.valid.clear()

    def api_tokens(self) -> list[str]:
        """The token each API request carried, in order (requests to /hop excluded)."""
        return [t for s in self.seen if s.path.startswith("/api/") for t in s.tokens]


class _Handler(Handler):
    def do_GET(self) -> None:
        self.read_body()
        state: StrictApi = self.server.state
        parts = urlsplit(self.path)
        if parts.path == "/token":
            token = f"tok-{len(state.issued) + 1}-{secrets.token_hex(6)}"
            with state.lock:
                state.issued.append(token)
                state.valid.add(token)
            self.answer_json(200, {"access_token": token, "expires_in": 3600})
            return
        query = parse_qsl(parts.query, keep_blank_values=True)
        tokens = [v for k, v in query if k == "tk"]
        tokens += [v.removeprefix("Bearer ") for v in self.headers.get_all("Authorization") or []]
        names = [k for k, _ in query]
        with state.lock:
            fault = state.faults.pop(0) if state.faults and parts.path.startswith("/api/") else None
            valid = not state.reject_all and len(tokens) == 1 and tokens[0] in state.valid
        if fault == "drop":  # no answer at all: the connection closes
            state.seen.append(Seen(self.command, parts.path, query, tokens, 0))
            self.close_connection = True
            return
        if len(set(names)) != len(names) or len(tokens) > 1:
            status, payload = 400, {"error": f"a parameter or the token was sent twice: {sorted(names)}"}
        elif parts.path == "/hop":  # an open redirect on the origin that repeats the query string
            status, payload = 302, {}
        elif isinstance(fault, int):
            status, payload = fault, {"error": "try again"}
        else:
            status, payload = (200, {"ok": True}) if valid else (401, {"error": "invalid_token"})
        state.seen.append(Seen(self.command, parts.path, query, tokens, status))
        if status == 302:
            self.answer_json(302, payload, ("Location", f"/api/data?{parts.query}"))
        elif fault == 429:
            self.answer_json(status, payload, ("Retry-After", "0"))
        else:
            self.answer_json(status, payload)

    do_POST = do_PUT = do_DELETE = do_GET


@pytest.fixture
def api() -> Iterator[StrictApi]:
    yield from serve(_Handler, StrictApi())


Call = Callable[..., int]


@pytest.fixture
def client(api: StrictApi, make_conn: Callable[..., str]) -> Callable[..., Call]:
    """`client(kind, injection)`: a function that sends GET <path> the way `kind` does; returns the status.

    Each kind keeps its objects across calls (its hook, its session), as a task would.
    """

    def make(kind: str, injection: str = "url", retry: RetryPolicy | None = None) -> Call:
        extra = {
            "integration_key": "strict",
            "access_endpoint": f"{api.url}/token",
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            "request_parameters": {"url": {"tenant": "t1"}},
            **INJECTIONS[injection],
        }
        make_conn("strict", host=api.url, login="dev", password=PASSWORD, extra=extra)
        hook = CustomTokenHook("strict")
        if kind == "run":
            assert retry is None, "run() takes its API retries from the connection"
            return lambda path, **params: (
                hook.run(path, params=params, extra_options={"check_response": False}).status_code
            )
        if kind == "get_conn":
            session = (
                hook.get_conn()
                if retry is None
                else authenticated_session(CustomTokenAuth(hook.source, retry=retry))
            )
            return lambda path, **params: (
                session.get(f"{api.url}{path}", params=params, timeout=10).status_code
            )
        if kind == "auth":
            auth = CustomTokenAuth.from_values(
                api.url, extra, login="dev", password=PASSWORD, settings=Settings(host_cache=False)
            )
            auth.retry = retry
            plain = requests.Session()
            return lambda path, **params: (
                plain.get(f"{api.url}{path}", params=params, auth=auth, timeout=10).status_code
            )

        def call(path: str, **params: Any) -> int:
            async def go() -> int:
                async with AsyncCustomTokenClient(hook.source, retry=retry) as aio:
                    return (await aio.request("GET", path, params=params)).status

            return asyncio.run(go())

        return call

    return make


CLIENTS = ["run", "get_conn", "auth", "async"]


# -- issue 15, item 1: the refresh retry carries the new token only ------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_the_retry_after_a_401_carries_only_the_new_token(
    api: StrictApi, client: Callable[..., Call], kind: str, injection: str
) -> None:
    call = client(kind, injection)
    assert call("/api/data", page="2") == 200
    api.revoke()

    assert call("/api/data", page="2") == 200

    assert [s.status for s in api.seen] == [200, 401, 200]
    assert api.api_tokens() == [api.issued[0], api.issued[0], api.issued[1]]
    retry = api.seen[-1]
    assert len(retry.tokens) == 1  # the server also answers 400 to a token sent twice
    assert dict(retry.query)["page"] == "2" and [k for k, _ in retry.query].count("tenant") == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_refresh_after_a_same_origin_redirect_carries_only_the_new_token(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind)
    assert call("/api/data") == 200
    api.revoke()

    assert call("/hop", page="2") == 200

    assert [(s.path, s.status) for s in api.seen[1:]] == [
        ("/hop", 302),
        ("/api/data", 401),
        ("/api/data", 200),
    ]
    assert api.seen[-1].tokens == [api.issued[1]]


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_redirect_on_the_origin_that_repeats_the_query_carries_the_token_once(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind)

    assert call("/hop", page="2") == 200

    hop, landed = api.seen
    assert hop.tokens == landed.tokens == [api.issued[0]]
    assert sorted(k for k, _ in landed.query) == ["page", "tenant", "tk"]


# -- issue 15, item 9: a token rejected on the refresh retry is discarded too ------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_token_rejected_on_the_retry_is_not_sent_again(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind)
    api.reject_all = True
    assert call("/api/data") == 401
    api.reject_all = False

    assert call("/api/data") == 200

    assert len(api.issued) == 3
    assert api.api_tokens() == api.issued  # the second token, rejected on the retry, was not reused


def test_run_says_it_refreshed_when_the_retry_is_rejected_too(
    api: StrictApi, client: Callable[..., Call]
) -> None:
    client("run")
    api.reject_all = True

    with pytest.raises(
        RequestError, match=r"answered 401 .*\(after fetching a new token and retrying once\)"
    ) as e:
        CustomTokenHook("strict").run("/api/data")

    assert not any(token in str(e.value) for token in api.issued)


# -- API retries (a retry policy; none by default) ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["get_conn", "auth", "async"])
def test_a_flaky_api_succeeds_with_a_retry_policy(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind, retry=FAST)
    api.faults += [503, 429]

    assert call("/api/data") == 200

    assert [s.status for s in api.seen] == [503, 429, 200]
    assert len(set(api.api_tokens())) == 1 and len(api.issued) == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_without_a_retry_policy_the_first_503_is_the_answer(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind)
    api.faults += [503]

    assert call("/api/data") == 503

    assert len(api.seen) == 1


@pytest.mark.parametrize("kind", ["get_conn", "async"])
def test_a_dropped_connection_is_retried_with_a_retry_policy(
    api: StrictApi, client: Callable[..., Call], kind: str
) -> None:
    call = client(kind, retry=FAST)
    api.faults += ["drop", "drop"]  # aiohttp itself sends an idempotent request again once

    assert call("/api/data") == 200

    assert [s.status for s in api.seen] == [0, 0, 200]


def test_the_async_clients_error_after_a_redirect_that_repeats_the_query_hides_the_token(
    api: StrictApi, client: Callable[..., Call]
) -> None:
    """Issue 15, item 6 (the async client's part): the error names the request with the token masked."""
    call = client("async")
    api.faults += ["drop", "drop"]  # aiohttp itself sends an idempotent request again once

    with pytest.raises(
        RequestError, match=r"GET http://127\.0\.0\.1:\d+/api/data\?page=2&tenant=t1&tk=\*\*\* "
    ):
        call("/hop", page="2")

    assert [s.path for s in api.seen] == ["/hop", "/api/data", "/api/data"] and len(api.issued) == 1


def test_a_post_is_sent_once_whatever_the_policy(api: StrictApi, make_conn: Callable[..., str]) -> None:
    make_conn(
        "strict",
        host=api.url,
        login="dev",
        password=PASSWORD,
        extra={
            "integration_key": "strict",
            "access_endpoint": f"{api.url}/token",
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            **INJECTIONS["url"],
        },
    )
    session = authenticated_session(CustomTokenAuth(CustomTokenHook("strict").source, retry=FAST))
    api.faults += [503]

    assert session.post(f"{api.url}/api/jobs", data=b"{}", timeout=10).status_code == 503

    assert [(s.method, s.status) for s in api.seen] == [("POST", 503)]


# -- the requests auth object ----------------------------------------------------------------------------


def test_a_prepared_request_sent_twice_is_authenticated_and_refreshed_each_time(
    api: StrictApi, client: Callable[..., Call]
) -> None:
    """The rules' state lives in the request's hook: a second send starts them over."""
    client("get_conn")
    session = CustomTokenHook("strict").get_conn()
    prepared = session.prepare_request(requests.Request("GET", f"{api.url}/api/data"))
    assert session.send(prepared, timeout=10).status_code == 200
    api.revoke()

    assert session.send(prepared, timeout=10).status_code == 200

    assert [s.status for s in api.seen] == [200, 401, 200]
    assert api.seen[-1].tokens == [api.issued[1]]


def test_from_airflow_builds_the_auth_without_importing_the_hook(
    api: StrictApi, client: Callable[..., Call]
) -> None:
    """The core never imports a surface: `CustomTokenAuth.from_airflow` reads the connection itself."""
    import os
    import subprocess
    import sys

    client("auth")  # defines the connection `strict` in the environment
    script = (
        "import sys, requests\n"
        "from airflow_custom_token.auth import CustomTokenAuth\n"
        "auth = CustomTokenAuth.from_airflow('strict')\n"
        f"status = requests.get('{api.url}/api/data', auth=auth, timeout=10).status_code\n"
        "print(status, 'airflow_custom_token.hooks.custom_token' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["200", "False"]
    assert api.api_tokens() == api.issued[:1]
