"""Where a connected account's token comes from: the caches, else one fetch under the retry policy.

`TokenSource` is shared by the sync hook and the async trigger. The only thing they bring is `send`:
a function that carries an `HttpRequest` over the wire and returns an `HttpResponse` (or raises
`TokenRequestError` for a transport failure).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

from airflow_custom_token import redaction
from airflow_custom_token.cache import PROCESS_CACHE, HostStore, TokenCache, host_store
from airflow_custom_token.flow import HttpResponse, Token, read_token
from airflow_custom_token.settings import FernetFactory, Settings, airflow_fernet
from airflow_custom_token.spec import ConnectedAccount, HttpRequest

Send = Callable[[HttpRequest], HttpResponse]
AsyncSend = Callable[[HttpRequest], Awaitable[HttpResponse]]


class TokenSource:
    """Tokens for one connected account, cached per process and (optionally) per host."""

    def __init__(
        self,
        account: ConnectedAccount,
        settings: Settings,
        *,
        cache: TokenCache = PROCESS_CACHE,
        fernet: FernetFactory = airflow_fernet,
    ) -> None:
        self.account = account
        self.settings = settings
        self.cache = cache
        self.key = account.cache_key
        self.margin = settings.refresh_margin
        self._fernet = fernet
        self._store: HostStore | None = None
        self._store_resolved = False
        self._registered: str | None = None  # the token whose secrets this source last registered
        request = account.token_request
        if request.timeout is None:
            request = dataclasses.replace(request, timeout=settings.token_request_timeout)
        self.request = request

    def __repr__(self) -> str:
        return f"<TokenSource {self.account.describe()} key={self.key}>"

    @property
    def store(self) -> HostStore | None:
        if not self._store_resolved:
            self._store_resolved = True
            if self.settings.host_cache:
                self._store = host_store(self.settings.cache_dir, self._fernet)
        return self._store

    def secrets(self, token: Token) -> tuple[str, ...]:
        """Every string that must never be shown: the token, its injected form, the account's secrets."""
        return (token.value, self.account.injection_value(token.value), *self.account.secrets)

    # -- sync -----------------------------------------------------------------------------------
    def get(self, send: Send) -> Token:
        token = self.cache.peek(self.key, self.margin)
        if token is None:
            token = self.cache.get(self.key, lambda: self._fetch(send), self.margin, self.store)
        if token.value != self._registered:  # another source (same key, other template) may have fetched it
            redaction.register(*self.secrets(token))
            self._registered = token.value
        return token

    def _fetch(self, send: Send) -> Token:
        import tenacity

        for attempt in tenacity.Retrying(**self.settings.retry.tenacity_options()):
            with attempt:
                token = read_token(self.account, send(self.request), time.time())
        redaction.register(*self.secrets(token))
        return token

    def discard(self, token: Token | None) -> None:
        """Drop `token` if it is still the cached one (None: drop whatever is cached)."""
        self.cache.discard(self.key, token, self.store)

    # -- async ----------------------------------------------------------------------------------
    async def aget(self, send: AsyncSend) -> Token:
        token = self.cache.peek(self.key, self.margin)
        if token is None:
            token = await self.cache.aget(self.key, lambda: self._afetch(send), self.margin, self.store)
        if token.value != self._registered:
            await redaction.aregister(*self.secrets(token))
            self._registered = token.value
        return token

    async def _afetch(self, send: AsyncSend) -> Token:
        import tenacity

        async for attempt in tenacity.AsyncRetrying(**self.settings.retry.tenacity_options()):
            with attempt:
                token = read_token(self.account, await send(self.request), time.time())
        await redaction.aregister(*self.secrets(token))
        return token

    async def adiscard(self, token: Token | None) -> None:
        import asyncio

        await asyncio.to_thread(self.discard, token)
