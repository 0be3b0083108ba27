"""Async transport (aiohttp) for the triggerer: the same token flow and request rules as the sync hook.

`AsyncCustomTokenClient.request` carries the request rules (`rules.request_flow`: inject, guard
redirects, refresh once on `refresh_on`, API retries) over aiohttp: it fetches the token through
`TokenSource.aget` (never blocking the event loop) when they ask for it, sends each request they
yield (a redirect included: aiohttp follows none itself), and hands them each answer.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_custom_token import redaction, rules
from airflow_custom_token.account.urls import add_query
from airflow_custom_token.aimport import aimport
from airflow_custom_token.bounded import BoundedBody
from airflow_custom_token.errors import RequestError
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import ApiRequest, Head
from airflow_custom_token.source import TokenSource
from airflow_custom_token.tls import assl, proxy_for, tls_hint
from airflow_custom_token.token import Token
from airflow_custom_token.wire import (
    CHUNK_BYTES,
    HttpRequest,
    HttpResponse,
    transport_error,
    transport_failure,
)


class _LoopSession:
    """One `aiohttp.ClientSession` per event loop, shared by the clients open on it and closed by the
    last one out.

    A triggerer runs hundreds of triggers on one loop: one session (one connector, its kept-alive
    connections pooled) instead of one each keeps far fewer objects alive, which shortens the garbage
    collector's full passes that were the loop's longest stalls. Sharing is sound because nothing of a
    client lives in the session: `ssl=` and `proxy=` are given per request (and are part of aiohttp's
    connection key, so accounts with other certificates never share a connection), cookies are not
    kept (`DummyCookieJar`), and no default headers are set. `limit=0`: no trigger waits for another's
    connection.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSession] = weakref.WeakKeyDictionary()

    def __init__(self, session: Any) -> None:
        self.session = session
        self.users = 0

    @classmethod
    async def enter(cls) -> _LoopSession:
        aiohttp = await aimport("aiohttp")  # never a first import on the event loop
        loop = asyncio.get_running_loop()
        shared = cls._by_loop.get(loop)
        if shared is None or shared.session.closed:
            connector = aiohttp.TCPConnector(limit=0)
            shared = cls(aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()))
            cls._by_loop[loop] = shared
        shared.users += 1
        return shared

    async def leave(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        loop = asyncio.get_running_loop()
        if self._by_loop.get(loop) is self:  # a client entering from now on opens a new one
            del self._by_loop[loop]
        await self.session.close()


class AsyncCustomTokenClient:
    """Authenticated async requests for one connected account. Use as an async context manager.

    :param source: where the account's tokens come from (caches, else a token request).
    :param retry: the API retry policy (idempotent requests, on transport errors and 429/502/503/504);
        by default the connection's (`request_retries`, with `[custom_token]`'s waits: `rules.api_policy`);
        None: API requests are not retried.

    The connection's transport settings apply to token and API requests: its client certificate and CA
    bundle (one `ssl.SSLContext`, `transport.assl`) and its proxies (one per request, by scheme).
    """

    def __init__(
        self, source: TokenSource, *, retry: RetryPolicy | Literal["connection"] | None = "connection"
    ) -> None:
        self.source = source
        self.account = source.account
        self.retry = rules.api_policy(self.account, source.settings.retry) if retry == "connection" else retry
        self._session: Any = None
        self._shared: _LoopSession | None = None
        self._ssl: Any = None
        self._ssl_ready = False

    async def _ssl_option(self) -> Any:
        """aiohttp's `ssl=` for this account (built once: loading certificates blocks, in a thread)."""
        if not self._ssl_ready:
            self._ssl = await assl(self.account)
            self._ssl_ready = True
        return self._ssl

    async def __aenter__(self) -> AsyncCustomTokenClient:
        self._shared = await _LoopSession.enter()
        self._session = self._shared.session
        return self

    async def __aexit__(self, *exc: object) -> None:
        shared, self._shared, self._session = self._shared, None, None
        if shared is not None:
            await shared.leave()

    def __repr__(self) -> str:
        return f"<AsyncCustomTokenClient {self.account.describe()}>"

    async def _send_token(self, request: HttpRequest) -> HttpResponse:
        """Carry a token request: its answer read as `bounded.BoundedBody` says (bounded, one deadline)."""
        redaction.remember(*self.account.secrets)  # masked in the HTTP clients' logs from now on
        bounded = BoundedBody(request, self.source.limits, self.account.secrets)
        return await self._send(request, bounded=bounded)

    async def _send(
        self, request: HttpRequest, allow_redirects: bool = False, bounded: BoundedBody | None = None
    ) -> HttpResponse:
        """Carry one request over the wire (used for token requests too, which never follow redirects)."""
        import aiohttp

        kwargs: dict[str, Any] = {"params": list(request.params) or None, "headers": dict(request.headers)}
        if request.form is not None:
            kwargs["data"] = dict(request.form)
        elif request.content is not None:
            kwargs["data"] = request.content
        elif request.json is not None:
            kwargs["json"] = request.json
        timeout = aiohttp.ClientTimeout(total=request.timeout) if request.timeout else None
        ssl = await self._ssl_option()  # the account's `verify` (a token request's too) and certificates
        try:
            async with self._session.request(
                request.method,
                request.url,
                timeout=timeout,
                ssl=ssl,
                proxy=proxy_for(self.account, request.url),
                allow_redirects=allow_redirects,
                **kwargs,
            ) as response:
                if bounded is None:
                    body = await response.read()
                else:  # `ClientTimeout(total=...)` bounds the whole request; `bounded` its body
                    body = await bounded.aread(response.status, response.content.iter_chunked(CHUNK_BYTES))
                return HttpResponse(
                    status=response.status,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    body=body,
                    cookies={k: m.value for k, m in response.cookies.items()},
                    reason=response.reason or "",
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            hint = tls_hint(self.account.transport, request.url, exc)
            raise transport_error(request, exc, self.account.secrets, hint) from None

    async def get_token(self) -> str:
        return (await self.source.aget(self._send_token)).value

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        """One authenticated request (`prepare`, then `send`)."""
        request = self.prepare(method, endpoint, params=params, headers=headers, data=data, json=json)
        return await self.send(request, timeout)

    def prepare(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
    ) -> ApiRequest:
        """The request, without credentials: placeholders resolved in the endpoint, headers and query
        parameters (never in bodies), as in `CustomTokenHook.run`; `ConfigurationError` naming the field."""
        url, headers, params = self.account.render_request(endpoint, headers, params)
        return ApiRequest(
            method=method.upper(),
            url=add_query(url, [(str(k), str(v)) for k, v in params.items()]),
            headers=tuple((str(k), str(v)) for k, v in headers.items()),
            body=None if data is None and json is None else _Body(data, json),
        )

    async def send(self, request: ApiRequest, timeout: float | None = None) -> HttpResponse:
        """Send `request` under the request rules (refresh once on `refresh_on`, redirects followed with
        the credentials kept on the account's allowed origins, the API retry policy); `timeout`: the whole
        of each hop (default: the account's `api_timeout`)."""
        import aiohttp

        seconds = timeout or self.account.api_timeout
        hops: list[ApiRequest] = []
        answers: list[HttpResponse] = []

        async def send(hop: ApiRequest) -> Head:
            hops.append(hop)
            response = await self._send_api(hop, seconds)
            answers.append(response)
            return Head(response.status, response.headers)

        try:
            await rules.adrive(
                rules.request_rules(self.account, request, retry=self.retry),
                send,
                self,
                (TimeoutError, aiohttp.ClientConnectionError),  # no answer: what the rules may retry
            )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:  # the rules did not retry it
            raise RequestError(self._describe(hops[-1] if hops else request, exc)) from None
        return answers[-1]

    # -- tokens (`rules.AsyncTokens`) ----------------------------------------------------------
    async def current(self) -> Token:
        return await self.source.aget(self._send_token)

    async def discard(self, token: Token) -> None:
        await self.source.adiscard(token)

    async def _send_api(self, request: ApiRequest, timeout: float) -> HttpResponse:
        """Carry one API request over the wire, as the rules yielded it (never following a redirect)."""
        import aiohttp
        import yarl  # aiohttp's own dependency, loaded with it
        from requests.utils import requote_uri

        kwargs: dict[str, Any] = {"headers": dict(request.headers)}
        body = request.body
        if isinstance(body, _Body):
            if isinstance(body.data, Mapping):
                kwargs["data"] = {str(k): str(v) for k, v in body.data.items()}
            elif isinstance(body.data, bytes | str):
                kwargs["data"] = body.data
            elif body.json is not None:
                kwargs["json"] = body.json
        ssl = await self._ssl_option()
        try:
            async with self._session.request(
                request.method,
                yarl.URL(requote_uri(request.url), encoded=True),  # the same bytes requests sends
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=ssl,
                proxy=proxy_for(self.account, request.url),
                allow_redirects=False,
                **kwargs,
            ) as response:
                return HttpResponse(
                    status=response.status,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    body=await response.read(),
                    cookies={k: m.value for k, m in response.cookies.items()},
                    reason=response.reason or "",
                )
        except (TimeoutError, aiohttp.ClientConnectionError):
            raise  # the rules' to judge
        except aiohttp.ClientError as exc:  # not a transport failure the rules could retry
            raise RequestError(self._describe(request, exc)) from None

    def _describe(self, request: ApiRequest, exc: BaseException) -> str:
        """A secret-free sentence for a request that got no answer (the injected values masked)."""
        secrets = (*self.account.secrets, *request.secrets)
        described = HttpRequest(method=request.method, url=request.url)
        hint = tls_hint(self.account.transport, request.url, exc)
        return transport_failure(described, exc, secrets, hint)


@dataclass(frozen=True)
class _Body:
    """An API request's body, as `request` takes it: form fields (a mapping) or raw text, or JSON."""

    data: Any = None
    json: Any = None
