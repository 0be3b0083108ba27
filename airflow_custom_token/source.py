"""Where a connected account's token comes from: the caches (process, host, shared), else one fetch under
the retry policy.

`TokenSource` is shared by the sync hook and the async trigger. The only thing they bring is `send`:
a function that carries an `HttpRequest` over the wire and returns an `HttpResponse` (or raises
`TokenRequestError` for a transport failure).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from airflow_custom_token import login, metrics, redaction, renewal
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.aimport import aimport
from airflow_custom_token.cache import PROCESS_CACHE, HostStore, TokenCache, host_store
from airflow_custom_token.cache.host import resolved_host_store
from airflow_custom_token.cache.process import Lease
from airflow_custom_token.errors import TokenRequestError
from airflow_custom_token.settings import FernetFactory, Settings, airflow_fernet
from airflow_custom_token.token import Token, TokenLimits, read_token
from airflow_custom_token.wire import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from airflow_custom_token.cache.shared import SharedStore

Send = Callable[[HttpRequest], HttpResponse]
AsyncSend = Callable[[HttpRequest], Awaitable[HttpResponse]]


class TokenSource:
    """Tokens for one connected account, cached per process and (optionally) per host and per cluster."""

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
        self.recheck = settings.cache_recheck  # with a host or shared store (`TokenCache.get`)
        self.limits = TokenLimits.from_settings(settings)  # bounds on a token answer
        self._fernet = fernet
        self._store: HostStore | None = None
        self._store_resolved = False
        self._registered: str | None = None  # the token whose secrets this source last registered
        self._metrics = metrics.enabled()  # `[metrics]` on: cache hits, token requests, renewals counted
        self._why: str | None = None  # why the next renewal happens, when this process caused it
        request = account.token_request
        if request.timeout is None:
            request = dataclasses.replace(request, timeout=settings.token_request_timeout)
        self.request = request
        refresh = account.refresh.template if account.refresh is not None else None
        if refresh is not None and refresh.timeout is None:
            refresh = dataclasses.replace(refresh, timeout=request.timeout)
        self.refresh_request = refresh  # `{refresh_token}` (and late placeholders) still open
        # the shared cache's lease: held (and renewed) while this host's token request runs, as long as
        # it can take under the retry policy at most; other hosts wait that long at most
        retry = settings.retry
        self.lease = Lease.for_request(
            float(request.timeout or settings.token_request_timeout),
            retry.retries,
            max(retry.wait_max, retry.retry_after_max),
        )

    def __repr__(self) -> str:
        return f"<TokenSource {self.account.describe()} key={self.key}>"

    @property
    def store(self) -> HostStore | None:
        if not self._store_resolved:
            if self.settings.host_cache:
                self._store = host_store(self.settings.cache_dir, self._fernet)
                if self._store is not None:  # cached expiries are read within the configured bound
                    self._store.max_lifetime = self.settings.max_token_lifetime
            self._store_resolved = True
        return self._store

    def shared(self) -> SharedStore | None:
        """The shared cache (Redis), when `[custom_token] shared_cache_conn_id` names one."""
        conn_id = self.settings.shared_cache_conn_id.strip()
        if not conn_id:
            return None
        from airflow_custom_token.cache.shared_conn import shared_store  # on first use: see `cache`

        return self._bounded(shared_store(conn_id, self._fernet))

    def _bounded(self, store: SharedStore | None) -> SharedStore | None:
        """The store, reading within this process's bounds (entry size, lifetime)."""
        if store is not None:
            from airflow_custom_token.cache.shared import value_bound  # loaded with the store

            store.max_value_bytes = value_bound(self.settings.max_token_response_bytes)
            store.max_lifetime = self.settings.max_token_lifetime
        return store

    async def ashared(self) -> SharedStore | None:
        conn_id = self.settings.shared_cache_conn_id.strip()
        if not conn_id:
            return None
        shared = await aimport("airflow_custom_token.cache.shared_conn")  # never on the event loop
        store: SharedStore | None = await shared.ashared_store(conn_id, self._fernet)
        return self._bounded(store)

    def secrets(self, token: Token) -> tuple[str, ...]:
        """Every string that must never be shown: the token, its additional outputs, their injected
        forms, the account's secrets."""
        refresh = (token.refresh,) if token.refresh else ()
        return (*self.account.token_values(token.value, token.outputs), *refresh, *self.account.secrets)

    def usable(self, token: Token | None) -> bool:
        """A cached token that this account can use: one cached without the outputs it reads (by an
        older version) is not, and is replaced."""
        return token is not None and self.account.has_outputs(token.outputs)

    # -- sync -----------------------------------------------------------------------------------
    def get(self, send: Send) -> Token:
        token = self.cache.peek(self.key, self.margin)
        if self._metrics and self.usable(token):
            metrics.process_hit(self.key)
        for _ in range(3):  # a token without the outputs is discarded: the next is fetched, or another's
            if self.usable(token):
                break
            if token is not None:
                self.cache.discard(self.key, token, self.store, self.shared())
            fetch = functools.partial(self._fetch, send)
            try:
                token = self.cache.get(
                    self.key, fetch, self.margin, self.store, self.shared(), self.lease, self.recheck
                )
            except renewal.RefreshRejected as exc:  # never sent again: dropped from every tier
                if exc.rejected is not None:
                    self.cache.discard(self.key, exc.rejected, self.store, self.shared(), keep_refresh=False)
                raise
        assert token is not None
        if token.value != self._registered:  # another source (same key, other template) may have fetched it
            redaction.register_token(self.key, token.value, self.secrets(token))
            self._registered = token.value
        return token

    def _fetch(self, send: Send, previous: Token | None = None) -> Token:
        """One new token: with the refresh token of `previous` (the entry the caches hold, expired) or the
        seed when the account has refresh tokens, else (or when that is refused) the token request."""
        import tenacity

        self._renewing(previous)
        plan = renewal.plan(self.account, self.request, self.refresh_request, previous, time.time())
        token: Token | None = None
        for step in plan.steps:
            try:
                for attempt in tenacity.Retrying(**self._retry_options(step)):
                    with attempt:
                        token = self._attempt(send, step)
                break
            except TokenRequestError as exc:
                self._refused(step, exc)
                plan.refused(step, exc)  # raises, unless a refused refresh token falls back
        assert token is not None
        token = self._completed(plan, step, token)
        redaction.register_token(self.key, token.value, self.secrets(token))
        return token

    def check(self, send: Send) -> Token:
        """A token for the Test button and `check`: one token request sent now, bypassing the caches
        and the retries (its login steps and late placeholders included), unless the account has no
        token request without a refresh token: then the caches' token (a refresh request spends a
        single-use refresh token, whose successor the caches must keep)."""
        if self.account.refresh is not None and not self.account.refresh.full_request:
            return self.get(send)
        token = self._attempt(send, renewal.Step(self.request))
        redaction.register_token(f"{self.key}#check", token.value, self.secrets(token))
        return token

    def _retry_options(self, step: renewal.Step) -> dict[str, Any]:
        """The retry policy for one request: a refresh request only where the server did not take it."""
        options = self.settings.retry.tenacity_options()
        if step.consumes is not None:
            options["retry"] = renewal.retry_refresh
        return options

    def _exchange(self, step: renewal.Step) -> Generator[login.Outgoing, HttpResponse, Token]:
        """One attempt of `step`, sync and async alike: the login steps first (before a token request),
        then the request with its late placeholders filled (a freshly signed `{assertion}`, one per
        attempt: a server may refuse a reused `jti`; the refresh token it consumes; the login's outputs
        and cookies). Yields each request with the values to register before it is sent (an error
        answer or a log line may quote them), receives its answer; returns the token read."""
        late = self.account.late_values(time.time())
        if step.consumes is not None:
            late["refresh_token"] = step.consumes
        done = login.Login()
        if step.consumes is None and self.account.steps:
            done = yield from login.run(self.account, late, self.limits)
        request = done.prepare(step.request, late)
        fresh = tuple(dict.fromkeys(v for v in (*late.values(), *done.secrets()) if v))
        account = self.account  # an error answer that echoes a fresh value is redacted
        if fresh:
            account = dataclasses.replace(account, secrets=(*account.secrets, *fresh))
        token = read_token(account, (yield request, fresh), time.time(), self.limits)
        if done.values:  # the login's outputs are the token's too: placeholders of the API requests
            token = dataclasses.replace(token, outputs={**done.values, **token.outputs})
        return token

    def _attempt(self, send: Send, step: renewal.Step) -> Token:
        """Drive `_exchange` over `send`."""
        flow, answer, started = self._exchange(step), None, time.monotonic()
        try:
            while True:
                request, fresh = flow.send(answer)  # type: ignore[arg-type]  # None starts it
                if fresh:  # masked before it is sent
                    redaction.register_token(f"{self.key}#late", fresh[0], fresh)
                answer = send(request)
        except StopIteration as finished:
            if self._metrics:
                self._timed(started, True)
            return finished.value  # type: ignore[no-any-return]
        except Exception:
            if self._metrics:
                self._timed(started, False)
            raise

    def _renewing(self, previous: Token | None) -> None:
        """A renewal starts (the caches had no fresh token): counted, with why when known."""
        if not self._metrics:
            return
        why, self._why = self._why, None
        metrics.incr("cache.miss", self.key)
        if why is not None or previous is not None:  # else the first token of this key
            metrics.incr(f"refresh.{why or 'expiry'}", self.key)

    def _refused(self, step: renewal.Step, error: TokenRequestError) -> None:
        if self._metrics and step.consumes is not None and error.status in renewal.REFUSED:
            metrics.incr("refresh_rejected", self.key)

    def _completed(self, plan: renewal.Plan, step: renewal.Step, token: Token) -> Token:
        if self._metrics and step.consumes is not None and token.refresh not in (None, step.consumes):
            metrics.incr("refresh.rotation", self.key)
        return plan.completed(step, token)

    def _timed(self, started: float, ok: bool) -> None:
        """One token (or refresh) request sent: its outcome and how long it took, login steps included."""
        metrics.incr("token_request.ok" if ok else "token_request.failed", self.key)
        metrics.timing("token_request.duration", self.key, time.monotonic() - started)

    def discard(self, token: Token | None) -> None:
        """Drop `token` wherever it is still the cached one, Redis included (None: whatever is cached:
        an invalidation; a token: one an API answer refused, `refresh_on`)."""
        self._why = "invalidation" if token is None else "status"
        self.cache.discard(self.key, token, self.store, self.shared())

    # -- async ----------------------------------------------------------------------------------
    async def aget(self, send: AsyncSend) -> Token:
        token = self.cache.peek(self.key, self.margin)
        if self._metrics and self.usable(token):
            metrics.process_hit(self.key)
        for _ in range(3):  # as in `get`
            if self.usable(token):
                break
            if token is not None:
                await self.cache.adiscard(self.key, token, await self.astore(), await self.ashared())
            store = await self.astore()
            shared = await self.ashared()
            afetch = functools.partial(self._afetch, send)
            try:
                token = await self.cache.aget(
                    self.key, afetch, self.margin, store, shared, self.lease, self.recheck
                )
            except renewal.RefreshRejected as exc:
                if exc.rejected is not None:
                    await self.cache.adiscard(self.key, exc.rejected, store, shared, keep_refresh=False)
                raise
        assert token is not None
        if token.value != self._registered:
            await redaction.aregister_token(self.key, token.value, self.secrets(token))
            self._registered = token.value
        return token

    async def _afetch(self, send: AsyncSend, previous: Token | None = None) -> Token:
        """`_fetch` for the event loop: the same plan, its requests awaited."""
        import tenacity

        self._renewing(previous)
        plan = renewal.plan(self.account, self.request, self.refresh_request, previous, time.time())
        token: Token | None = None
        for step in plan.steps:
            try:
                async for attempt in tenacity.AsyncRetrying(**self._retry_options(step)):
                    with attempt:
                        token = await self._aattempt(send, step)
                break
            except TokenRequestError as exc:
                self._refused(step, exc)
                plan.refused(step, exc)
        assert token is not None
        token = self._completed(plan, step, token)
        await redaction.aregister_token(self.key, token.value, self.secrets(token))
        return token

    async def _aattempt(self, send: AsyncSend, step: renewal.Step) -> Token:
        """`_attempt` for the event loop."""
        flow, answer, started = self._exchange(step), None, time.monotonic()
        try:
            while True:
                request, fresh = flow.send(answer)  # type: ignore[arg-type]  # None starts it
                if fresh:
                    await redaction.aregister_token(f"{self.key}#late", fresh[0], fresh)
                answer = await send(request)
        except StopIteration as finished:
            if self._metrics:
                self._timed(started, True)
            return finished.value  # type: ignore[no-any-return]
        except Exception:
            if self._metrics:
                self._timed(started, False)
            raise

    async def adiscard(self, token: Token | None) -> None:
        self._why = "invalidation" if token is None else "status"
        await self.cache.adiscard(self.key, token, await self.astore(), await self.ashared())

    async def astore(self) -> HostStore | None:
        """`store` for the event loop: its first use (Airflow's Fernet, the directory) in a worker thread."""
        if self._store_resolved or not self.settings.host_cache:
            return self.store
        found, _ = resolved_host_store(self.settings.cache_dir, self._fernet)
        if found:  # another source of this process resolved it: no worker thread needed
            return self.store
        return await asyncio.to_thread(lambda: self.store)
