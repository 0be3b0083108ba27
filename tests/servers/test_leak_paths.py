"""No token, additional output or client secret in an exception or a log line (issue 15, item 6).

A token API of the suite's own on 127.0.0.1 issues tokens such as `tk+1f2e.../==`, and the client secret is
`cl+ient/secret==`: their URL-encoded forms (`tk%2B...%2F%3D%3D`) differ from them, which is how they reach
an error message or a log line (urllib3 quotes the URL it sent or could not reach). Each path is what a
user calls: `hook.run`, the session of `hook.get_conn()`, `CustomTokenAuth` on a plain `requests.Session`,
the async client, `test_connection()`; always with urllib3's and aiohttp's DEBUG logging on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import pytest
import requests

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.errors import RequestError, TokenRequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.settings import Settings
from tests.serving import Handler, free_port, serve

pytestmark = pytest.mark.timeout(60)

CLIENT_SECRET = "cl+ient/secret=="
ERROR_BODY = 64 * 1024 * 1024  # what the API's error answer holds: far more than an excerpt
URL_INJECTION = {"inject_as": "url", "inject_name": "tk", "inject_template": "{token}"}
HEADER_INJECTION = {
    "inject_as": "header",
    "inject_name": "Authorization",
    "inject_template": "Bearer {token}",
}


# -- the servers -------------------------------------------------------------------------------------------


@dataclass
class LeakApi:
    """What the token API issued and how much of its error answer it could write."""

    issued: list[str] = field(default_factory=list)
    error_written: list[int] = field(default_factory=list)
    error_done: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def secrets(self) -> list[str]:
        """Every value that must never be shown: the tokens, their injected forms, the client secret."""
        return [*self.issued, *(f"Bearer {t}" for t in self.issued), CLIENT_SECRET]


class _Handler(Handler):
    def do_GET(self) -> None:
        self.read_body()
        api: LeakApi = self.server.state
        parts = urlsplit(self.path)
        if parts.path == "/token":
            token = f"tk+{secrets.token_hex(8)}/=="
            api.issued.append(token)
            self.answer(200, json.dumps({"access_token": token, "expires_in": 3600}).encode())
        elif parts.path == "/api/redirect":  # on the origin, repeating the query (the token with it)
            self.answer(302, b"{}", ("Location", f"/api/slow?{parts.query}"))
        elif parts.path == "/api/slow":
            time.sleep(3)
            with contextlib.suppress(OSError):  # the client gave up waiting
                self.answer(200)
        elif parts.path == "/api/error":
            self._error()
        else:
            self.answer(200)

    do_POST = do_GET

    def _error(self) -> None:
        """A 500 whose body is far larger than what an error message quotes; counts what it could write."""
        api: LeakApi = self.server.state
        api.error_written.append(self.answer_long(500, ERROR_BODY))
        api.error_done.set()


@pytest.fixture
def api() -> Iterator[LeakApi]:
    yield from serve(_Handler, LeakApi())


@pytest.fixture
def dead() -> str:
    """An origin on 127.0.0.1 where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


class AnswersOnce:
    """Answers its first request 401, then listens no more: the next connection is refused."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.sock.close()  # before answering: the retry that follows the 401 is refused for sure
        with conn:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                data += chunk
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """urllib3's and aiohttp's DEBUG logging on, as a user chasing a problem would turn it on."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    return caplog


# -- helpers ---------------------------------------------------------------------------------------------


def leaked(text: str, values: Iterable[str]) -> list[str]:
    """Every form (raw, percent-encoded, form-encoded) of `values` that `text` holds."""
    forms = {f for v in values for f in (v, quote(v, safe=""), quote_plus(v), quote(v))}
    return sorted(f for f in forms if f in text)


def shown(error: BaseException) -> str:
    """All that a traceback of `error` shows: its message and every error it chains."""
    return "".join(traceback.format_exception(error))


def extra(
    api: LeakApi, *, verb: str = "GET", injection: dict[str, str] = URL_INJECTION, **more: Any
) -> dict[str, Any]:
    """A GET token request (the client secret in its query) and the token in the API's query."""
    return {
        "integration_key": "leaky",
        "access_endpoint": f"{api.url}/token",
        "access_verb": verb,
        "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
        **injection,
        **more,
    }


@pytest.fixture
def account(api: LeakApi, make_conn: Callable[..., str]) -> Callable[..., CustomTokenHook]:
    """`account(host)`: a hook of a connection whose API is at `host`, its token endpoint on `api`."""

    def make(host: str, **more: Any) -> CustomTokenHook:
        make_conn("leaky", host=host, login="dev", password=CLIENT_SECRET, extra=extra(api, **more))
        return CustomTokenHook("leaky")

    return make


# -- transport errors ----------------------------------------------------------------------------------


def test_session_of_get_conn_masks_the_token_in_a_transport_error(
    account: Callable[..., CustomTokenHook], api: LeakApi, dead: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """requests' message quotes the URL it could not reach: `url: /api/ok?tk=<token, URL-encoded>`."""
    hook = account(dead)
    hook.get_token()

    with pytest.raises(requests.ConnectionError) as caught:  # still requests' own type
        hook.get_conn().get(f"{dead}/api/ok", timeout=5)

    assert api.issued, "a token was fetched and sent"
    assert "/api/ok?tk=***" in str(caught.value)
    assert leaked(shown(caught.value), api.secrets()) == []
    assert leaked(debug_logs.text, api.secrets()) == []


def test_plain_session_masks_the_token_in_a_transport_error_of_the_refresh_retry(
    api: LeakApi, debug_logs: pytest.LogCaptureFixture
) -> None:
    """`CustomTokenAuth` on a plain `requests.Session`: the retry after a 401 is the auth's own send, so its
    transport error is the auth's to mask. (The first send's error is requests' alone: see the docstring of
    `CustomTokenAuth` and `test_masker_holds_every_form_of_the_token` for what covers it.)"""
    origin = AnswersOnce()
    auth = CustomTokenAuth.from_values(
        origin.url, extra(api), login="dev", password=CLIENT_SECRET, settings=Settings(host_cache=False)
    )

    with pytest.raises(requests.ConnectionError) as caught:
        requests.Session().get(f"{origin.url}/api/ok", auth=auth, timeout=5)

    assert len(api.issued) == 2, "the token rejected by the 401, and the new one the retry carried"
    assert leaked(shown(caught.value), api.secrets()) == []
    assert leaked(debug_logs.text, api.secrets()) == []


@pytest.mark.parametrize("injection", [URL_INJECTION, HEADER_INJECTION], ids=["url", "header"])
def test_every_public_path_masks_a_transport_error(
    account: Callable[..., CustomTokenHook],
    api: LeakApi,
    dead: str,
    debug_logs: pytest.LogCaptureFixture,
    injection: dict[str, str],
) -> None:
    hook = account(dead, injection=injection, test_endpoint="/api/ok")
    texts: list[str] = []

    with pytest.raises(RequestError) as run_error:
        hook.run("/api/ok")
    texts.append(shown(run_error.value))
    with pytest.raises(requests.ConnectionError) as session_error:
        hook.get_conn().get(f"{dead}/api/ok?page=1", timeout=5)
    texts.append(shown(session_error.value))
    ok, message = hook.test_connection()
    assert not ok and message.startswith("Test endpoint failed: ")
    texts.append(message)

    async def call() -> None:
        async with AsyncCustomTokenClient(hook.source) as client:
            await client.request("GET", "/api/ok")

    with pytest.raises(RequestError) as async_error:
        asyncio.run(call())
    texts.append(shown(async_error.value))

    assert api.issued, "a token was fetched, and sent to the origin that refused it"
    assert [leaked(text, api.secrets()) for text in texts] == [[], [], [], []]
    assert leaked(debug_logs.text, api.secrets()) == []


def test_token_request_that_gets_no_answer_masks_the_client_secret(
    api: LeakApi, dead: str, make_conn: Callable[..., str], debug_logs: pytest.LogCaptureFixture
) -> None:
    make_conn(
        "leaky",
        host=api.url,
        login="dev",
        password=CLIENT_SECRET,
        extra=extra(api, access_endpoint=f"{dead}/token"),
    )
    hook = CustomTokenHook("leaky")

    with pytest.raises(TokenRequestError) as caught:
        hook.get_token()
    ok, message = hook.test_connection()

    assert not ok
    assert leaked(shown(caught.value) + message + debug_logs.text, [CLIENT_SECRET]) == []


def test_async_timeout_after_a_same_origin_redirect_that_repeats_the_query(
    account: Callable[..., CustomTokenHook], api: LeakApi, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The origin redirects to `/api/slow?tk=<token>`, which answers too late: the timeout error names the
    request it gave up on, whose query carries the token (once: the rules strip the repeated one)."""
    hook = account(api.url)

    async def call() -> None:
        async with AsyncCustomTokenClient(hook.source) as client:
            await client.request("GET", "/api/redirect", timeout=1)

    with pytest.raises(RequestError) as caught:
        asyncio.run(call())

    assert "/api/slow?tk=***" in str(caught.value) and "timed out" in str(caught.value)
    assert leaked(shown(caught.value), api.secrets()) == []
    assert leaked(debug_logs.text, api.secrets()) == []


# -- Airflow's masker and the HTTP clients' logs -------------------------------------------------------


@pytest.mark.parametrize("injection", [URL_INJECTION, HEADER_INJECTION], ids=["url", "header"])
def test_masker_holds_every_form_of_the_token(
    account: Callable[..., CustomTokenHook], api: LeakApi, injection: dict[str, str]
) -> None:
    """What Airflow's masker hides in task logs: the token as a URL carries it, and as the header does."""
    from tests.airflow_names import redact

    hook = account(api.url, injection=injection)
    token = hook.get_token()
    value = hook.account.injection_value(token)
    line = (
        f"url: /api/ok?tk={quote_plus(token)} path /v1/{quote(token, safe='')} raw {token} "
        f"header {value} form value={quote_plus(value)} secret={quote_plus(CLIENT_SECRET)}"
    )

    assert leaked(redact(line), [token, value, CLIENT_SECRET]) == []


@pytest.mark.parametrize("client", ["run", "get_conn", "plain session", "async"])
def test_debug_logs_of_the_http_clients_hold_no_token_or_client_secret(
    api: LeakApi, account: Callable[..., CustomTokenHook], debug_logs: pytest.LogCaptureFixture, client: str
) -> None:
    """urllib3 logs `"GET /token?client_id=dev&client_secret=cl%2Bient%2Fsecret%3D%3D HTTP/1.1" 200` and
    `"GET /api/ok?tk=tk%2B...%2F%3D%3D HTTP/1.1" 200` at DEBUG; aiohttp logs no URL, but is watched too."""
    if client == "plain session":  # no hook, no Airflow connection: the auth alone registers the secret
        auth = CustomTokenAuth.from_values(
            api.url, extra(api), login="dev", password=CLIENT_SECRET, settings=Settings(host_cache=False)
        )
        assert requests.Session().get(f"{api.url}/api/ok", auth=auth, timeout=5).status_code == 200
    elif client == "async":
        hook = account(api.url)

        async def call() -> int:
            async with AsyncCustomTokenClient(hook.source) as aio:
                return (await aio.request("GET", "/api/ok")).status

        assert asyncio.run(call()) == 200
    else:
        hook = account(api.url)
        session_get = hook.get_conn().get if client == "get_conn" else None
        response = session_get(f"{api.url}/api/ok", timeout=5) if session_get else hook.run("/api/ok")
        assert response.status_code == 200

    assert api.issued
    if client != "async":  # urllib3 logged both requests, masked
        assert '"GET /token?client_id=dev&client_secret=*** HTTP/1.1" 200' in debug_logs.text
        assert '"GET /api/ok?tk=*** HTTP/1.1" 200' in debug_logs.text
    assert leaked(debug_logs.text, api.secrets()) == []


# -- error answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["run", "run with stream", "test_connection"])
def test_an_api_error_answer_is_read_only_as_far_as_its_excerpt(
    account: Callable[..., CustomTokenHook], api: LeakApi, how: str
) -> None:
    hook = account(api.url, test_endpoint="/api/error")

    if how == "test_connection":
        ok, message = hook.test_connection()
        assert not ok
    else:
        options = {"stream": True} if how == "run with stream" else None
        with pytest.raises(RequestError) as caught:
            hook.run("/api/error", extra_options=options)
        message = str(caught.value)
        assert caught.value.status == 500

    assert "answered 500 Internal Server Error; body: " + "x" * 200 + "…" in message
    assert api.error_done.wait(10), "the server is still writing the error answer"
    assert api.error_written[0] < ERROR_BODY / 2, "the whole error answer was read"
    assert leaked(message, api.secrets()) == []


# -- a session API that echoes what it got, JSON-escaped (issue 19, items 9 and 10) ------------------------

COOKIE = "sess/AbCd+Gh=="  # the session cookie: `/`, `+`, `=`, each escaped by some JSON encoder
CSRF = "k9Zq"  # a 4-character CSRF token: under Airflow's masker's minimum length of 5
ESCAPES = {
    "slash": lambda value: value.replace("/", "\\/"),  # PHP's json_encode, and many others
    "unicode": lambda value: "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in value),
}


def escaped(values: Iterable[str]) -> list[str]:
    """Each value raw and in every escaped form the API writes it in."""
    return sorted({f for v in values for f in (v, *(escape(v) for escape in ESCAPES.values()))})


@dataclass
class EchoApi:
    """A session API: `POST /login` sets the session cookie and answers the CSRF token in a header;
    `GET /api/echo?style=...` echoes both in a JSON body, the cookie escaped so; `/api/fail` too, as a 500."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    url: str = ""


class _EchoHandler(Handler):
    def do_POST(self) -> None:
        self.read_body()
        self.answer(
            200,
            b'{"expires_in": 3600}',
            ("Set-Cookie", f"session={COOKIE}; Path=/"),
            ("X-CSRF-Token", CSRF),
        )

    def do_GET(self) -> None:
        api: EchoApi = self.server.state
        parts = urlsplit(self.path)
        style = dict(parse_qsl(parts.query)).get("style", "slash")
        cookie = (self.headers.get("Cookie") or "").removeprefix("session=")
        csrf = self.headers.get("X-CSRF-Token") or ""
        api.seen.append((cookie, csrf))
        api.styles.append(style)
        sent = f'{{"session": "{ESCAPES[style](cookie)}", "csrf": "{csrf}"}}'
        self.answer(500 if parts.path == "/api/fail" else 200, f'{{"you_sent": {sent}, "page": 1}}'.encode())


@pytest.fixture
def echo_api(make_conn: Callable[..., str]) -> Iterator[EchoApi]:
    for api in serve(_EchoHandler, EchoApi()):
        make_conn(
            "echoing",
            host=api.url,
            login="dev",
            password=CLIENT_SECRET,
            extra={
                "integration_key": "echoing",
                "access_endpoint": f"{api.url}/login",
                "access_verb": "POST",
                "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
                "access_response_path": "cookie:session",
                "access_outputs": {"csrf": "header:X-CSRF-Token"},
                "inject_as": "header",
                "inject_name": "Cookie",
                "inject_template": "session={token}",
                "request_parameters": {"header": {"X-CSRF-Token": "{csrf}"}},
            },
        )
        yield api


@pytest.mark.usefixtures("task_runner_off")
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
@pytest.mark.parametrize("style", list(ESCAPES))
def test_a_json_escaped_echo_of_the_session_cookie_is_not_in_xcom_nor_the_response_log(
    echo_api: EchoApi,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    style: str,
    deferrable: bool,
) -> None:
    from airflow_custom_token.operators.http import CustomTokenHttpOperator
    from tests.servers.test_operators import execute

    op = CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id="echoing",
        endpoint="/api/echo",
        query_params={"style": style},
        log_response=True,
        deferrable=deferrable,
    )

    with caplog.at_level(logging.INFO):
        xcom = execute(op, deferrable)

    assert echo_api.seen[-1] == (COOKIE, CSRF), "the API got the session and its CSRF token"
    assert echo_api.styles[-1] == style
    assert xcom == '{"you_sent": {"session": "***", "csrf": "***"}, "page": 1}'
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err  # Airflow's task logger writes to stdout
    assert 'Response: {"you_sent": {"session": "***", "csrf": "***"}, "page": 1}' in logs
    assert [f for f in escaped([COOKIE, CSRF, CLIENT_SECRET]) if f in logs or f in xcom] == []


@pytest.mark.parametrize("style", list(ESCAPES))
def test_an_error_that_quotes_the_escaped_cookie_and_a_short_csrf_token_shows_neither(
    echo_api: EchoApi, style: str
) -> None:
    """Airflow's masker skips values under 5 characters: the provider redacts its own messages itself."""
    hook = CustomTokenHook("echoing")

    with pytest.raises(RequestError) as caught:
        hook.run(f"/api/fail?style={style}")

    message = str(caught.value)
    assert echo_api.styles == [style] and echo_api.seen[-1] == (COOKIE, CSRF)
    assert caught.value.status == 500 and '"page": 1' in message, "the message still says what happened"
    assert '"session": "***", "csrf": "***"' in message
    assert [f for f in escaped([COOKIE, CSRF]) if f in shown(caught.value)] == []


@pytest.mark.parametrize("style", list(ESCAPES))
def test_a_trigger_event_that_echoes_the_escaped_cookie_and_a_short_csrf_token_shows_neither(
    echo_api: EchoApi, style: str
) -> None:
    from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
    from tests.triggering import run_trigger

    trigger = CustomTokenHttpTrigger(
        custom_token_conn_id="echoing", endpoint="/api/echo", query_params={"style": style}
    )

    event = run_trigger(trigger)

    assert event["status"] == "success" and echo_api.seen[-1] == (COOKIE, CSRF)
    assert json.loads(event["response"]["text"]) == {"you_sent": {"session": "***", "csrf": "***"}, "page": 1}
    assert [f for f in escaped([COOKIE, CSRF]) if f in json.dumps(event)] == []
