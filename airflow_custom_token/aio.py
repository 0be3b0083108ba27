"""Async transport (aiohttp) for the triggerer: the same token flow and rules as the sync hook.

`AsyncCustomTokenClient.request` fetches the token through `TokenSource.aget` (never blocking the
event loop), injects it with `ConnectedAccount.credentials`, retries once on a `refresh_on` status,
and follows redirects itself so that the token only ever reaches allowed origins.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

from airflow_custom_token.errors import RequestError, TokenRequestError
from airflow_custom_token.flow import HttpResponse, masked_url, transport_error
from airflow_custom_token.source import TokenSource
from airflow_custom_token.spec import HttpRequest

MAX_REDIRECTS = 10


async def _aiohttp() -> ModuleType:
    """aiohttp, imported in a worker thread the first time.

    A first `import aiohttp` takes 100 ms or more; on the event loop it would stall every trigger of
    the triggerer. Coroutines that arrive while the import runs wait for it in worker threads too.
    """
    module = sys.modules.get("aiohttp")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    return await asyncio.to_thread(importlib.import_module, "aiohttp")


class AsyncCustomTokenClient:
    """Authenticated async requests for one connected account. Use as an async context manager."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source
        self.account = source.account
        self._session: Any = None

    async def __aenter__(self) -> AsyncCustomTokenClient:
        aiohttp = await _aiohttp()
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"<AsyncCustomTokenClient {self.account.describe()}>"

    async def _send(self, request: HttpRequest, allow_redirects: bool = False) -> HttpResponse:
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
        try:
            async with self._session.request(
                request.method,
                request.url,
                timeout=timeout,
                ssl=None if request.verify else False,
                allow_redirects=allow_redirects,
                **kwargs,
            ) as response:
                body = await response.read()
                return HttpResponse(
                    status=response.status,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    body=body,
                    cookies={k: m.value for k, m in response.cookies.items()},
                    reason=response.reason or "",
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(request, exc, self.account.secrets) from None

    async def get_token(self) -> str:
        return (await self.source.aget(self._send)).value

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
        """One authenticated request; after a `refresh_on` status, one retry with a new token.

        Placeholders resolve in the endpoint, headers and query parameters, as in `CustomTokenHook.run`.
        """
        url, headers, params = self.account.render_request(endpoint, headers, params)
        retried = False
        while True:
            token = await self.source.aget(self._send)
            response, final_url = await self._follow(
                method, url, token.value, params, headers, data, json, timeout
            )
            if response.status not in self.account.refresh_on or retried:
                return response
            if not self.account.is_allowed(final_url):
                return response  # another origin was sent no token: its 401 says nothing about ours
            await self.source.adiscard(token)
            retried = True

    async def _follow(
        self,
        method: str,
        url: str,
        token: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        data: Any,
        json: Any,
        timeout: float | None,
    ) -> tuple[HttpResponse, str]:
        """Send, following redirects; credentials go only to allowed origins. Returns the final URL too."""
        for _ in range(MAX_REDIRECTS + 1):
            extra_headers: list[tuple[str, str]] = []
            extra_query: list[tuple[str, str]] = []
            if self.account.is_allowed(url):
                extra_headers, extra_query = self.account.credentials(token)
            own = {str(k): str(v) for k, v in (headers or {}).items()}
            request = HttpRequest(
                method=method.upper(),
                url=url,
                params=(*((str(k), str(v)) for k, v in (params or {}).items()), *extra_query),
                headers=(*((n, v) for n, v in extra_headers if n not in own), *own.items()),
                form=tuple((str(k), str(v)) for k, v in data.items()) if isinstance(data, Mapping) else None,
                content=data if isinstance(data, bytes | str) else None,
                json=json,
                timeout=timeout or self.account.timeout or 60,
                verify=self.account.verify,
            )
            try:
                response = await self._send(request, allow_redirects=False)
            except TokenRequestError as exc:  # `_send` words transport failures as a token request's
                raise RequestError(str(exc).removeprefix("Token request failed: ")) from None
            location = response.headers.get("location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response, url
            url, params = urljoin(url, location), None
            if not self.account.is_allowed(url):  # a Location that repeats our query must not carry it on
                url = self.account.without_added_params(url)
            if response.status == 303 or (response.status in (301, 302) and method.upper() == "POST"):
                method, data, json = "GET", None, None
        raise RequestError(
            f"{method} {masked_url(url, self.account.secrets)}: more than {MAX_REDIRECTS} redirects"
        )
