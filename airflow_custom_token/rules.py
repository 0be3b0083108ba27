"""The rules of an API request, written once and free of I/O: inject, guard redirects, refresh, retry.

`request_rules(account, request)` is a generator in the manner of httpx's `auth_flow`: it yields
commands and receives their outcomes. A transport only carries them out, with one small driver:
`drive` (sync: requests, in `auth.py`) or `adrive` (async: aiohttp, in `aio.py`):

- `GetToken()`: send back the account's current `Token` (cache, else a token request);
- `Discard(token)`: drop `token` from the caches if it is still the cached one; send back None;
- `Send(request)`: send `request` as it is, following no redirect; send back its `Head`, or throw the
  transport error (connection refused, timeout) into the generator;
- `Wait(seconds)`: back off before the next attempt (API retries); send back None.

The transport sends every hop itself: a redirect the rules follow is one more `Send`. The generator
returns a `Result` when the last `Head` is the answer, and raises the transport error it was thrown when
that is final. What it decides:

- The request it holds is never injected: the credentials (request parameters and the token) are
  added afresh to every request it yields, and only when the target is one of the account's allowed
  origins (`ConnectedAccount.is_allowed`: scheme, host and port, so https -> http loses them too).
  The request's own headers win over the request parameters; the token header wins over all.
- A redirect is followed to `urljoin(current, Location)` (unless `follow_redirects` is False: then the
  `Result` names the next hop, for a library that follows redirects itself). If the current request
  carried the account's query parameters, a Location that repeats them (servers often redirect to
  `<elsewhere><request URI>`) is stripped of them first: another origin never receives them, the same
  origin receives them once. A hop to another host drops the request's own Authorization header (as
  requests and httpx do). 303 (and 301/302 after a POST) turn the request into a GET without body.
  A Location that is not a URL (`http://[::1/x`, a port out of range) is a `RequestError`, not followed.
- A status in `refresh_on`, answered to a request that carried the token, discards that token; the
  first time, the request is sent again with a new token (unless its body is a stream that cannot be
  sent twice: `NOT_RESENT`); a token rejected on that retry is discarded too, and the answer stands.
- With a `RetryPolicy` (None: no API retries), an idempotent request (`options.IDEMPOTENT_METHODS`)
  whose body can be sent again is retried after a transport error or a 429/502/503/504, after
  `Wait(policy.delay(attempt, Retry-After))`, up to `policy.retries` times per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from airflow_custom_token import metrics
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.account.urls import add_query, masked_url
from airflow_custom_token.errors import RequestError
from airflow_custom_token.options import IDEMPOTENT_METHODS
from airflow_custom_token.redaction import known, redact_string
from airflow_custom_token.retry import RetryPolicy, parse_retry_after
from airflow_custom_token.token import Token

NOT_RESENT = (
    "the token was refreshed, but the request was not retried because its body is a stream or generator "
    "that cannot be sent twice"
)
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # answers that say "try again" (API retries)
BODY_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class ApiRequest:
    """An API request as the rules see it. `body` is the transport's own, carried along untouched."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = field(default=None, repr=False, compare=False)
    replayable: bool = True  # False: the body is a stream or generator that cannot be sent twice
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)  # what the rules injected

    def __repr__(self) -> str:  # the query and the headers may hold credentials
        return f"<ApiRequest {self.method} {urlsplit(self.url)._replace(query='').geturl()}>"

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)

    def describe(self, secrets: tuple[str, ...] = ()) -> str:
        """`METHOD url` with every injected or secret value masked."""
        return f"{self.method} {masked_url(self.url, (*secrets, *self.secrets))}"


@dataclass(frozen=True)
class Head:
    """What the rules need of an answer: its status and headers (a case-insensitive mapping, or a plain
    one with lower-case names)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GetToken:
    """Send back the account's current token."""


@dataclass(frozen=True)
class Discard:
    """Drop this token from the caches (if it is still the cached one); send back None."""

    token: Token


@dataclass(frozen=True)
class Send:
    """Send this request, following no redirect; send back its `Head` or throw the transport error."""

    request: ApiRequest


@dataclass(frozen=True)
class Wait:
    """Wait this many seconds (backoff before an API retry); send back None."""

    seconds: float


@dataclass(frozen=True)
class Result:
    """The last `Head` received is the answer. `note` says why a refresh was not followed by a retry;
    `redirect` is the (un-injected) next hop of a redirect not followed (`follow_redirects=False`)."""

    note: str | None = None
    refreshed: bool = False
    redirect: ApiRequest | None = None


Command = GetToken | Discard | Send | Wait
Rules = Generator[Command, Any, Result]


# ---------------------------------------------------------------------------------------------------
# Injection, written once


def concerns(account: ConnectedAccount, url: str) -> bool:
    """Does a request to `url` take the account's credentials (and so its rules) at all?"""
    return bool(url) and account.is_allowed(url)


def inject(account: ConnectedAccount, request: ApiRequest, token: Token) -> ApiRequest:
    """`request` with the account's credentials.

    The request's own headers win over the request parameters; the token header replaces a header of
    the same name.
    """
    headers, query, secrets = _credentials(account, token)
    token_header = account.inject_name.lower() if account.inject_as == "header" else None
    own = {name.lower() for name, _ in request.headers}
    added = [(n, v) for n, v in headers if n.lower() == token_header or n.lower() not in own]
    names = {n.lower() for n, _ in added}
    kept = [(n, v) for n, v in request.headers if n.lower() not in names]
    return ApiRequest(
        request.method,
        add_query(request.url, query),
        (*kept, *added),
        request.body,
        request.replayable,
        secrets,
    )


# The credentials of the last few (account, token) pairs: rendered once per token, not per request.
_CREDENTIALS: dict[tuple[int, int], tuple[Any, ...]] = {}
_CREDENTIALS_KEPT = 64


def _credentials(
    account: ConnectedAccount, token: Token
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[str, ...]]:
    """`account.credentials` and `account.token_values` for `token`, computed once per token (both are
    frozen: the entry keeps them, so that their ids stay theirs while it is cached)."""
    key = (id(account), id(token))
    found = _CREDENTIALS.get(key)
    if found is not None and found[0] is account and found[1] is token:
        return found[2], found[3], found[4]
    headers, query = account.credentials(token.value, token.outputs)
    secrets = account.token_values(token.value, token.outputs)
    if len(_CREDENTIALS) >= _CREDENTIALS_KEPT:
        _CREDENTIALS.clear()
    _CREDENTIALS[key] = (account, token, tuple(headers), tuple(query), secrets)
    return tuple(headers), tuple(query), secrets


def uninjected(account: ConnectedAccount, request: ApiRequest) -> ApiRequest:
    """`request` without anything the account's credentials could have added to it (by name)."""
    header_names = {n.lower() for n in account.added_names[0]}
    return replace(
        request,
        url=account.without_added_params(request.url),
        headers=tuple((n, v) for n, v in request.headers if n.lower() not in header_names),
        secrets=(),
    )


def _same_host(old: str, new: str) -> bool:
    """requests' `should_strip_auth` read the other way round: may an Authorization header go along?"""
    before, after = urlsplit(old), urlsplit(new)
    if before.hostname != after.hostname:
        return False
    if before.scheme == "http" and after.scheme == "https" and before.port in (80, None):
        return after.port in (443, None)  # the upgrade to https on the standard ports keeps it
    return (before.scheme, before.port or _DEFAULT_PORTS.get(before.scheme)) == (
        after.scheme,
        after.port or _DEFAULT_PORTS.get(after.scheme),
    )


def redirected(
    account: ConnectedAccount, request: ApiRequest, head: Head, carried: bool
) -> ApiRequest | None:
    """The (un-injected) request a redirect leads to, or None if `head` is not a redirect."""
    if head.status not in REDIRECT_STATUSES:
        return None
    location = head.headers.get("location")
    if not location:
        return None
    try:  # `http://[::1/x` (an unclosed bracket) or a port out of range cannot be followed
        target = urljoin(request.url, location.strip())
        urlsplit(target).port  # noqa: B018 - raises on a port that is not one
    except ValueError as exc:
        reason = redact_string(str(exc), (*known(), *account.secrets))
        raise RequestError(
            f"{request.describe(account.secrets)}: answered {head.status} with a Location that is not "
            f"a valid URL ({reason}): not followed"
        ) from None
    if carried:  # a Location that repeats our query parameters must not carry them on
        target = account.without_added_params(target)
    method, body, headers, replayable = request.method, request.body, request.headers, request.replayable
    if (head.status == 303 and method != "HEAD") or (head.status in (301, 302) and method == "POST"):
        method, body, replayable = "GET", None, True
        headers = tuple((n, v) for n, v in headers if n.lower() not in BODY_HEADERS)
    if not _same_host(request.url, target):
        headers = tuple((n, v) for n, v in headers if n.lower() != "authorization")
    return replace(request, method=method, url=target, headers=headers, body=body, replayable=replayable)


# ---------------------------------------------------------------------------------------------------
# The rules


def request_rules(
    account: ConnectedAccount,
    request: ApiRequest,
    *,
    retry: RetryPolicy | None = None,
    refresh: bool = True,
    follow_redirects: bool = True,
    max_redirects: int = MAX_REDIRECTS,
) -> Rules:
    """The rules of one API call (see the module's docstring). `request` carries no credentials.

    :param retry: the API retry policy; None: no API retries.
    :param refresh: False: never discard or replace the token (checking one token, `test_connection`).
    :param follow_redirects: False: a redirect is the answer, and `Result.redirect` its next hop.
    :param max_redirects: raise `RequestError` past this many redirects.
    """
    base = request
    refreshed = False
    attempts = 0  # API retries so far
    redirects = 0
    while True:
        token: Token | None = None
        outgoing = base
        if concerns(account, base.url):
            token = yield GetToken()
            outgoing = inject(account, base, token)
        try:
            head: Head = yield Send(outgoing)
        except Exception:  # a transport error, thrown in by the driver
            if retry is None or not _may_retry(base, attempts, retry):
                raise
            attempts += 1
            metrics.incr("api_retry", account.integration_key)
            yield Wait(retry.delay(attempts, None))
            continue

        target = redirected(account, base, head, carried=token is not None)
        if target is not None:
            if not follow_redirects:
                return Result(refreshed=refreshed, redirect=target)
            redirects += 1
            if redirects > max_redirects:
                raise RequestError(f"{target.describe(account.secrets)}: more than {max_redirects} redirects")
            base = target
            continue

        if head.status in account.refresh_on and token is not None and refresh:
            yield Discard(token)  # rejected: whether on the first try or on the refresh retry
            if refreshed:
                return Result(refreshed=True)
            if not base.replayable:
                return Result(note=NOT_RESENT)
            refreshed = True
            continue

        if retry is not None and head.status in RETRY_STATUSES and _may_retry(base, attempts, retry):
            attempts += 1
            metrics.incr("api_retry", account.integration_key)
            yield Wait(retry.delay(attempts, parse_retry_after(head.headers.get("retry-after"))))
            continue
        return Result(refreshed=refreshed)


def api_policy(account: ConnectedAccount, waits: RetryPolicy) -> RetryPolicy | None:
    """The API retry policy of `account`: its `request_retries`, with the backoff and the Retry-After cap
    of `waits` (the token requests' policy, from `[custom_token]`); None when it retries nothing."""
    if account.request_retries <= 0:
        return None
    return replace(waits, retries=account.request_retries)


def _may_retry(request: ApiRequest, attempts: int, retry: RetryPolicy) -> bool:
    return request.method.upper() in IDEMPOTENT_METHODS and request.replayable and attempts < retry.retries


# ---------------------------------------------------------------------------------------------------
# The drivers: one per kind of transport, a few lines each


class Tokens(Protocol):
    """What a driver needs of the token side: the current token, and dropping a rejected one."""

    def current(self) -> Token: ...

    def discard(self, token: Token) -> None: ...


class AsyncTokens(Protocol):
    async def current(self) -> Token: ...

    async def discard(self, token: Token) -> None: ...


def drive(
    rules: Rules,
    send: Callable[[ApiRequest], Head],
    tokens: Tokens,
    transport_errors: tuple[type[BaseException], ...],
) -> Result:
    """Carry out `rules` over a synchronous transport: `send` sends one request (no redirect followed)
    and returns the `Head` of its answer, or raises one of `transport_errors` when it got none."""
    outcome: Any = None
    error: BaseException | None = None
    while True:
        try:
            command = rules.throw(error) if error is not None else rules.send(outcome)
        except StopIteration as stop:
            result: Result = stop.value
            return result
        outcome = error = None
        if isinstance(command, Send):
            try:
                outcome = send(command.request)
            except transport_errors as exc:
                error = exc
        elif isinstance(command, GetToken):
            outcome = tokens.current()
        elif isinstance(command, Discard):
            tokens.discard(command.token)
        else:
            time.sleep(command.seconds)


async def adrive(
    rules: Rules,
    send: Callable[[ApiRequest], Awaitable[Head]],
    tokens: AsyncTokens,
    transport_errors: tuple[type[BaseException], ...],
) -> Result:
    """`drive` for an asynchronous transport."""
    outcome: Any = None
    error: BaseException | None = None
    while True:
        try:
            command = rules.throw(error) if error is not None else rules.send(outcome)
        except StopIteration as stop:
            result: Result = stop.value
            return result
        outcome = error = None
        if isinstance(command, Send):
            try:
                outcome = await send(command.request)
            except transport_errors as exc:
                error = exc
        elif isinstance(command, GetToken):
            outcome = await tokens.current()
        elif isinstance(command, Discard):
            await tokens.discard(command.token)
        else:
            await asyncio.sleep(command.seconds)
