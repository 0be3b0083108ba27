"""A hostile or broken token endpoint must never leak a token, hang a task or exhaust a worker (issue 15).

A small server of the suite's own on 127.0.0.1 answers token requests the way an attacker or a broken
gateway would: a giant or endless body, a gzip bomb, a body trickling one byte at a time, JSON nested
100,000 deep, a token with CR/LF or thousands of kilobytes long, odd expiries, a `Date` header from a
clock hours or days away from ours. Each reproduction goes through what a user calls: `hook.run`,
`get_conn()`, `test_connection()`, `get_token()` and the async client (aiohttp).

Also here, as it is tested the same way: a placeholder value `.` or `..` in a URL path is refused
(issue 15, item 11) rather than resolved away by the client into another endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.errors import (
    ConfigurationError,
    CustomTokenError,
    TokenRequestError,
    TokenResponseError,
)
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.token import Token
from tests.serving import Serving

pytestmark = pytest.mark.timeout(60)

PASSWORD = "client-secret-5d1c"
MiB = 1024 * 1024

# -- the hostile server ----------------------------------------------------------------------------------

Writer = Callable[["Handler"], None]


@dataclass
class HostileServer:
    """Answers each path with a `Writer`; records what it was asked and how much body it wrote."""

    routes: dict[str, Writer] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    written: list[int] = field(default_factory=list)  # body bytes written, per answer
    stopping: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def token_requests(self) -> int:
        return sum(1 for _, path in self.seen if path == "/token")


class Handler(socketserver.StreamRequestHandler):
    """One request per connection, parsed by hand, so that an answer can be anything at all."""

    server: Any

    def handle(self) -> None:
        line = self.rfile.readline(65537)
        if not line:
            return
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.rfile.read(int(headers.get("content-length") or 0))
        hostile: HostileServer = self.server.state
        path = urlsplit(target).path
        hostile.seen.append((method, path))
        hostile.written.append(0)
        writer = hostile.routes.get(path, answer({"error": "not found"}, status=404))
        try:
            writer(self)
        except OSError:  # the client hung up: what a bounded reader does
            pass

    def head(self, status: int, headers: list[tuple[str, str]], date: float | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", "Connection: close"]
        lines.append(f"Date: {formatdate(time.time() if date is None else date, usegmt=True)}")
        lines += [f"{name}: {value}" for name, value in headers]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def body(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.server.state.written[-1] += len(data)


def answer(
    payload: Any,
    *,
    status: int = 200,
    date: float | None = None,
    content_type: str = "application/json",
    encoding: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Writer:
    """A complete answer: `payload` (JSON unless bytes), optionally gzip-encoded, with a chosen Date
    and more `headers`."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if encoding == "gzip":
        data = gzip.compress(data)

    def write(handler: Handler) -> None:
        head = [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers]
        if encoding:
            head.append(("Content-Encoding", encoding))
        handler.head(status, head, date)
        handler.body(data)

    return write


def in_turn(*writers: Writer) -> Writer:
    """Each answer in turn, the last one from then on."""
    queue = list(writers)

    def write(handler: Handler) -> None:
        (queue.pop(0) if len(queue) > 1 else queue[0])(handler)

    return write


def endless(status: int = 200, cap: int = 64 * MiB) -> Writer:
    """A body without a length that never ends (until `cap`, so that 0.1 fails rather than hangs)."""
    block = b'{"access_token": "' + b"x" * (64 * 1024)

    def write(handler: Handler) -> None:
        handler.head(status, [("Content-Type", "application/json")])
        for _ in range(cap // len(block)):
            if handler.server.state.stopping.is_set():
                return
            handler.body(block)

    return write


@cache
def gzip_bomb() -> bytes:
    """256 MiB of zeros in 256 KiB: 32 gzip members of 8 MiB each (one gzip stream, RFC 1952)."""
    return gzip.compress(b"\0" * 8 * MiB, compresslevel=9) * 32


def bomb() -> Writer:
    data = gzip_bomb()

    def write(handler: Handler) -> None:
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(data))),
        ]
        handler.head(200, headers)
        handler.body(data)

    return write


def trickle(every: float = 0.25, for_at_most: float = 10.0) -> Writer:
    """Headers at once, then a promised 100 kB body one byte every `every` seconds."""

    def write(handler: Handler) -> None:
        handler.head(200, [("Content-Type", "application/json"), ("Content-Length", "100000")])
        ends = time.monotonic() + for_at_most
        while time.monotonic() < ends and not handler.server.state.stopping.is_set():
            handler.body(b" ")
            time.sleep(every)

    return write


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    state = HostileServer()
    state.routes["/api/whoami"] = answer({"ok": True})
    state.routes["/api/v1"] = answer({"endpoint": "v1, not the tenant's"})
    with Serving(Handler, state) as serving:  # a socketserver handler: answers written by hand
        state.url = serving.url
        yield state
        state.stopping.set()


@pytest.fixture
def connect(hostile: HostileServer, make_conn: Callable[..., str]) -> Callable[..., CustomTokenHook]:
    """A connection whose token endpoint answers with `writer`; a fresh hook for it."""

    def make(writer: Writer, **overrides: Any) -> CustomTokenHook:
        hostile.routes["/token"] = writer
        extra = {
            "integration_key": "hostile",
            "access_endpoint": f"{hostile.url}/token",
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
            **overrides,
        }
        make_conn("hostile", host=hostile.url, login="dev", password=PASSWORD, extra=extra)
        return CustomTokenHook("hostile")

    return make


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", "0")


# -- what a user calls -------------------------------------------------------------------------------------

SURFACES = ["run", "get_conn", "test_connection", "async"]
TRANSPORTS = ["requests", "aiohttp"]


async def _async_request(hook: CustomTokenHook, endpoint: str) -> Any:
    async with AsyncCustomTokenClient(hook.source) as client:
        return await client.request("GET", endpoint)


async def _async_token(hook: CustomTokenHook) -> str:
    async with AsyncCustomTokenClient(hook.source) as client:
        return await client.get_token()


def fetch(hook: CustomTokenHook, transport: str) -> str:
    """The token, fetched over requests (`get_token`) or aiohttp (the async client)."""
    return hook.get_token() if transport == "requests" else asyncio.run(_async_token(hook))


def failure(hook: CustomTokenHook, surface: str, error: type[CustomTokenError]) -> str:
    """Have `surface` fetch the token, which must fail with `error`; the message the user gets."""
    if surface == "test_connection":
        ok, message = hook.test_connection()
        assert not ok, message
        return message
    with pytest.raises(error) as caught:
        if surface == "run":
            hook.run("/api/whoami")
        elif surface == "get_conn":
            hook.get_conn().get(f"{hook.account.base_url}/api/whoami", timeout=10)
        elif surface == "async":
            asyncio.run(_async_request(hook, "/api/whoami"))
        else:
            fetch(hook, surface)
    return str(caught.value)


def peak_memory(hook: CustomTokenHook, fn: Callable[[], Any]) -> int:
    """Peak bytes Python allocated while `fn` ran (its exception, if any, propagates).

    The account is built first: tracing Airflow's connection lookup would only slow the test down.
    """
    hook.account
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def cached(hook: CustomTokenHook) -> Token:
    token = PROCESS_CACHE.peek(hook.account.cache_key, 0)
    assert token is not None
    return token


def jwt(claims_json: str) -> str:
    """An unsigned JWT whose claims are exactly `claims_json` (which may be what json.dumps refuses)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"none"}')
    return f"{header}.{b64(claims_json.encode())}.c2lnbmF0dXJl"


# -- item 2: a token that cannot be sent -------------------------------------------------------------------

CRLF_TOKEN = "leak-me-7f3a\r\nX-Injected: evil"


@pytest.mark.parametrize("surface", SURFACES)
def test_a_token_with_cr_lf_is_a_token_location_error_that_does_not_quote_it(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, surface: str
) -> None:
    hook = connect(answer({"access_token": CRLF_TOKEN, "expires_in": 3600}))

    message = failure(hook, surface, TokenResponseError)

    assert "'access_token' (access_response_path)" in message and "line break" in message
    for part in ("leak-me", "7f3a", "X-Injected", "evil"):
        assert part not in message
    assert ("GET", "/api/whoami") not in hostile.seen  # nothing was sent with it


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("leak-me\x00nul", "control character"),
        ("leak-me\x1bescape", "control character"),
        ("leak-me\x7fdel", "control character"),
        ("leak-me\u2028line", "line break"),
        ("leak-me\nlf", "line break"),
        ("leak-mé-accent", "other than ASCII"),
    ],
    ids=["nul", "escape", "del", "line-separator", "lf", "non-ascii-in-a-header"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_token_a_header_cannot_carry_is_refused(
    connect: Callable[..., CustomTokenHook], transport: str, token: str, what: str
) -> None:
    hook = connect(answer({"access_token": token}))

    message = failure(hook, transport, TokenResponseError)

    assert "'access_token' (access_response_path)" in message and what in message
    assert "leak-me" not in message


def test_a_non_ascii_token_is_fine_in_a_url(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer
) -> None:
    hook = connect(answer({"access_token": "tök-ünïcode"}), inject_as="url", inject_name="key")

    assert hook.run("/api/whoami").json() == {"ok": True}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_token_over_16_kib_is_refused_at_once(
    connect: Callable[..., CustomTokenHook], transport: str
) -> None:
    """Before: a 3 MB token took 19 s in `get_token` (the masker compiling it), and was used."""
    hook = connect(answer({"access_token": "leak-me" + "A" * 20_000}))

    started = time.monotonic()
    message = failure(hook, transport, TokenResponseError)

    assert time.monotonic() - started < 2
    assert "'access_token' (access_response_path)" in message and "20007 bytes" in message
    assert "max_token_bytes (16384" in message and "leak-me" not in message


def test_max_token_bytes_is_configurable(
    connect: Callable[..., CustomTokenHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__MAX_TOKEN_BYTES", "32768")
    long_token = "B" * 20_000
    hook = connect(answer({"access_token": long_token}))

    assert hook.get_token() == long_token


# -- item 3: bounded token answers -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_endless_body_is_read_up_to_max_token_response_bytes(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, transport: str
) -> None:
    """Before: a 1 GiB body was read whole (3.2 GiB of memory); an endless one ended in MemoryError."""
    hook = connect(endless())
    messages: list[str] = []

    started = time.monotonic()
    peak = peak_memory(hook, lambda: messages.append(failure(hook, transport, TokenResponseError)))

    assert time.monotonic() - started < 5
    assert peak < 16 * MiB, f"{peak / MiB:.1f} MiB"
    [message] = messages
    assert "'access_token' (access_response_path)" in message
    assert "more than 1048576 bytes ([custom_token] max_token_response_bytes)" in message
    assert hostile.token_requests() == 1  # not retried: the answer is wrong, not the network


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gzip_bomb_is_bounded_after_decompression(
    connect: Callable[..., CustomTokenHook], transport: str
) -> None:
    """Before: a gzip bomb ended in MemoryError after 17-23 s. 256 KiB sent here inflate to 256 MiB."""
    hook = connect(bomb())
    messages: list[str] = []

    started = time.monotonic()
    peak = peak_memory(hook, lambda: messages.append(failure(hook, transport, TokenResponseError)))

    assert time.monotonic() - started < 5
    assert peak < 16 * MiB, f"{peak / MiB:.1f} MiB"
    assert "max_token_response_bytes" in messages[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_large_or_compressed_answer_under_the_bound_is_read_whole(
    connect: Callable[..., CustomTokenHook], transport: str
) -> None:
    payload = {"access_token": "tok-large-answer", "expires_in": 600, "padding": "p" * (MiB - 100)}
    hook = connect(answer(payload, encoding="gzip"))

    assert fetch(hook, transport) == "tok-large-answer"


def test_max_token_response_bytes_is_configurable(
    connect: Callable[..., CustomTokenHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__MAX_TOKEN_RESPONSE_BYTES", "2048")
    hook = connect(answer({"access_token": "tok-padded", "padding": "p" * 3000}))

    with pytest.raises(TokenResponseError, match=r"more than 2048 bytes"):
        hook.get_token()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_trickling_answer_ends_at_the_timeout_of_the_whole_request(
    connect: Callable[..., CustomTokenHook], no_retries: None, transport: str
) -> None:
    """Before: one byte every 0.5 s held a sync token request 30 s and more with timeout=2."""
    hook = connect(trickle(), timeout=2)

    started = time.monotonic()
    message = failure(hook, transport, TokenRequestError)
    elapsed = time.monotonic() - started

    assert 1.8 <= elapsed < 3.5, f"{elapsed:.2f} s"
    assert "timed out" in message and f"{hook.account.token_request.url}" in message
    assert PASSWORD not in message


def test_a_trickling_answer_fails_test_connection_in_time(
    connect: Callable[..., CustomTokenHook], no_retries: None
) -> None:
    hook = connect(trickle(), timeout=1)

    started = time.monotonic()
    message = failure(hook, "test_connection", TokenRequestError)

    assert time.monotonic() - started < 2.5
    assert "timed out" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_json_nested_100000_deep_is_a_token_location_error(
    connect: Callable[..., CustomTokenHook], transport: str
) -> None:
    """Before: RecursionError."""
    hook = connect(answer(b"[" * 100_000 + b"]" * 100_000))

    message = failure(hook, transport, TokenResponseError)

    assert "'access_token' is a JSON path" in message and "nested too deeply" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_error_body_is_read_only_as_far_as_the_message_quotes(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, no_retries: None, transport: str
) -> None:
    """A 500 whose body never ends: the error comes at once, with its excerpt."""
    hook = connect(endless(status=500))

    started = time.monotonic()
    peak = peak_memory(hook, lambda: failure(hook, transport, TokenRequestError))

    assert time.monotonic() - started < 5
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"
    with pytest.raises(TokenRequestError) as caught:
        fetch(hook, transport)
    assert caught.value.status == 500 and 'body: {"access_token": "xxxx' in str(caught.value)


# -- item 8: odd expiries ----------------------------------------------------------------------------------

HUGE = "1" + "0" * 400  # 10**400: valid JSON, no float holds it


def token_answer(token: str) -> str:
    return json.dumps({"access_token": token})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (f'{{"access_token": "tok-odd", "expires_in": {HUGE}}}', "'expires_in' (access_expiry_path)"),
        ('{"access_token": "tok-odd", "expires_in": Infinity}', "'expires_in' (access_expiry_path)"),
        ('{"access_token": "tok-odd", "expires_in": "1e400"}', "'expires_in' (access_expiry_path)"),
        (token_answer(jwt(f'{{"exp": {HUGE}}}')), "JWT whose exp claim holds a number too large"),
        (token_answer(jwt('{"exp": NaN}')), "JWT whose exp claim holds nan"),
        (token_answer(jwt('{"exp": Infinity}')), "JWT whose exp claim holds inf"),
    ],
    ids=[
        "expires_in-10e400",
        "expires_in-infinity",
        "expires_in-text-1e400",
        "jwt-exp-10e400",
        "jwt-exp-nan",
        "jwt-exp-infinity",
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_expiry_that_is_not_a_finite_time_is_a_token_location_error(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, transport: str, body: str, named: str
) -> None:
    """Before: 10**400 raised OverflowError; a JWT exp of NaN was accepted and never valid (a token
    request on every call); Infinity was cached forever."""
    hook = connect(answer(body.encode()))

    message = failure(hook, transport, TokenResponseError)

    assert named in message
    assert "tok-odd" not in message and "c2lnbmF0dXJl" not in message
    assert hostile.token_requests() == 1


@pytest.mark.parametrize(
    ("expires_in", "lifetime", "note"),
    [
        (10**8, 86400, "capped by max_token_lifetime"),  # three years, read as a lifetime
        (0, 1, "raised to the minimum of 1 s"),
        (-30, 1, "raised to the minimum of 1 s"),
    ],
)
def test_a_lifetime_is_kept_between_one_second_and_max_token_lifetime(
    connect: Callable[..., CustomTokenHook], expires_in: int, lifetime: float, note: str
) -> None:
    hook = connect(answer({"access_token": "tok-clamped", "expires_in": expires_in}))

    hook.get_token()

    token = cached(hook)
    assert token.lifetime == pytest.approx(lifetime)
    assert note in token.expiry_source


def test_max_token_lifetime_is_configurable_and_bounds_the_default_lifetime_too(
    connect: Callable[..., CustomTokenHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__MAX_TOKEN_LIFETIME", "600")
    hook = connect(answer({"access_token": "tok-default"}), access_lifetime=600)
    hook.get_token()
    assert cached(hook).lifetime == pytest.approx(600)

    # a default lifetime the cache would cut short is a configuration error (issue 19, item 14)
    hook = connect(answer({"access_token": "tok-default"}), access_lifetime=7200)
    with pytest.raises(ConfigurationError) as caught:
        hook.get_token()
    assert "access_lifetime: expected at most [custom_token] max_token_lifetime (600 s), found 7200" in str(
        caught.value
    )


def _absolute(style: str, when: float) -> dict[str, Any]:
    if style == "epoch":
        return {"access_token": "tok-skewed", "expires_in": int(when)}
    if style == "iso":
        iso = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"access_token": "tok-skewed", "expires_in": iso}
    return {"access_token": jwt(json.dumps({"exp": int(when)}))}


@pytest.mark.parametrize("style", ["epoch", "iso", "jwt"])
@pytest.mark.parametrize(
    "server_minus_local",
    [-2 * 3600, 30 * 86400],
    ids=["local-clock-2h-ahead", "local-clock-30d-behind"],
)
def test_an_absolute_expiry_is_read_against_the_servers_date(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, style: str, server_minus_local: float
) -> None:
    """Before: two hours ahead, every call fetched a new token (it looked expired an hour ago);
    thirty days behind, a dead token counted as valid for a month."""
    server_now = time.time() + server_minus_local
    hook = connect(answer(_absolute(style, server_now + 3600), date=server_now))

    first = hook.get_token()
    assert hook.get_token() == first
    assert hostile.token_requests() == 1
    token = cached(hook)
    assert token.lifetime == pytest.approx(3600, abs=5)
    assert "read against the server's clock" in token.expiry_source


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_transports_read_the_servers_date(
    connect: Callable[..., CustomTokenHook], transport: str
) -> None:
    server_now = time.time() - 2 * 3600
    hook = connect(answer(_absolute("epoch", server_now + 3600), date=server_now))

    fetch(hook, transport)

    assert cached(hook).lifetime == pytest.approx(3600, abs=5)


# -- item 11: a placeholder value never removes a path segment ------------------------------------------


@pytest.mark.parametrize("value", ["..", "."])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dot_segment_value_never_reaches_another_endpoint(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, transport: str, value: str
) -> None:
    """Before: `/api/tenants/{tenant}/v1` with tenant `..` went out as `/api/v1` (urllib3, yarl)."""
    hook = connect(answer({"access_token": "tok-fine"}), integration_parameters={"tenant": value})

    with pytest.raises(ConfigurationError) as caught:
        if transport == "requests":
            hook.run("/api/tenants/{tenant}/v1")
        else:
            asyncio.run(_async_request(hook, "/api/tenants/{tenant}/v1"))

    message = str(caught.value)
    assert "endpoint: placeholder {tenant}" in message and "must not be '.' or '..'" in message
    assert not [path for _, path in hostile.seen if path.startswith("/api")]


def test_a_dot_segment_value_in_the_base_url_is_a_configuration_error(
    hostile: HostileServer, make_conn: Callable[..., str]
) -> None:
    extra = {
        "integration_key": "hostile",
        "access_endpoint": "/token",
        "access_verb": "POST",
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        "integration_parameters": {"tenant": ".."},
    }
    make_conn("hostile", host=f"{hostile.url}/api/tenants/{{tenant}}", extra=extra)

    with pytest.raises(ConfigurationError) as caught:
        CustomTokenHook("hostile").run("/v1")

    assert "host: placeholder {tenant}" in str(caught.value) and "must not be '.' or '..'" in str(
        caught.value
    )
    assert hostile.seen == []


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("...", "/api/tenants/.../v1"),
        ("a..b", "/api/tenants/a..b/v1"),
        ("%2E%2E", "/api/tenants/%252E%252E/v1"),
    ],
)
def test_values_that_are_not_dot_segments_stay_one_segment(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, value: str, sent: str
) -> None:
    hostile.routes[sent] = answer({"ok": True})
    hook = connect(answer({"access_token": "tok-fine"}), integration_parameters={"tenant": value})

    assert hook.run("/api/tenants/{tenant}/v1").json() == {"ok": True}
    assert ("GET", sent) in hostile.seen


# -- issue 19, item 12: a Retry-After that is neither digits nor a date -----------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("retry_after", ["²", "soon"])
def test_a_token_endpoints_odd_retry_after_counts_as_absent(
    connect: Callable[..., CustomTokenHook], hostile: HostileServer, transport: str, retry_after: str
) -> None:
    busy = answer({"error": "busy"}, status=503, headers=(("Retry-After", retry_after),))
    hook = connect(in_turn(busy, answer({"access_token": "tok-after-503", "expires_in": 3600})))

    assert fetch(hook, transport) == "tok-after-503"  # retried after the backoff, not a ValueError

    assert hostile.token_requests() == 2
