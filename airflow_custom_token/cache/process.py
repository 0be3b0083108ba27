"""The process cache and the order of the layers: process, host, shared, then the token endpoint.

`TokenCache` keeps tokens in memory for every hook of the process; concurrent callers of one key
wait on one fetch (single flight: a thread lock, or an asyncio lock per event loop). Below it, the
host store's file lock makes the processes of a machine wait on one fetch, and the shared store's
lease makes the machines of a cluster wait on one fetch. A token found in a lower layer fills the
layers above it; a fetched token is written to every layer. The host's file lock is never held while
Redis is waited on: the host cache is read under it, released, Redis is looked up (and its lease
waited on), then the lock is taken again to read once more and fetch; the token is written to Redis
once the lock is released.

The fetch itself is the caller's (sync or async); the cache only decides when to call it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_custom_token import metrics
from airflow_custom_token.cache.host import Held, HostStore
from airflow_custom_token.token import Token

if TYPE_CHECKING:
    from airflow_custom_token.cache.shared import Claim, SharedStore

Fetch = Callable[[Token | None], Token]  # a token fetch, given the expired entry (its refresh token)
AsyncFetch = Callable[[Token | None], Awaitable[Token]]

_HOLD = "hold"  # `cache.shared.HOLD` (not imported: the shared cache is loaded on first use)
LEASE_SLACK = 3.0  # the shared cache's lease: the token request's timeout plus this


@dataclass(frozen=True)
class Lease:
    """How long one host may hold the shared cache's lease on a key while it requests a token.

    `hold`: what the lease is taken (and renewed) for, the token request's timeout plus `LEASE_SLACK`;
    a holder that dies is replaced within this. `longest`: what the token request can take under its
    retry policy (every attempt's timeout and the longest wait between them, plus `LEASE_SLACK`); the
    holder never keeps the lease longer, and a waiter waits this long for one holder at most.
    """

    hold: float
    longest: float

    @classmethod
    def for_request(cls, timeout: float, retries: int = 0, longest_wait: float = 0.0) -> Lease:
        hold = timeout + LEASE_SLACK
        longest = (retries + 1) * timeout + retries * longest_wait + LEASE_SLACK
        return cls(hold, max(hold, longest))

    @property
    def renew_every(self) -> float:
        """How often the holder renews: three times per `hold`, so one late renewal loses nothing."""
        return self.hold / 3


DEFAULT_LEASE = Lease.for_request(30.0)  # with the default token request timeout, without retries


class TokenCache:
    """Process cache in front of the optional host and shared stores. One per process (`PROCESS_CACHE`)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        # key -> until when (monotonic) a token that came with a host or shared store is used without
        # looking there again (`recheck`): an invalidation elsewhere reaches this process by then
        self._trusted: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._alocks: dict[tuple[int, str], asyncio.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def peek(self, key: str, margin: float, now: float | None = None) -> Token | None:
        """The cached token if it is still fresh and trusted (no lock: the warm path)."""
        token = self._tokens.get(key)
        if token is not None and token.is_fresh(time.time() if now is None else now, margin):
            until = self._trusted.get(key)
            if until is None or time.monotonic() < until:
                return token
        return None

    def _keep(self, key: str, token: Token, recheck: float | None) -> None:
        """Hold `token`; with `recheck`, trusted that long before the stores are looked at again."""
        self._tokens[key] = token
        if recheck is None:
            self._trusted.pop(key, None)
        else:
            self._trusted[key] = time.monotonic() + recheck

    def _distrusted(self, key: str) -> Token | None:
        """The token held whose trust ran out (still fresh): the stores say whether it still stands."""
        token = self._tokens.get(key)
        return token if token is not None and key in self._trusted else None

    def get(
        self,
        key: str,
        fetch: Fetch,
        margin: float,
        store: HostStore | None,
        shared: SharedStore | None = None,
        lease: Lease = DEFAULT_LEASE,
        recheck: float | None = None,
    ) -> Token:
        """A fresh token for `key`, fetched at most once across threads, processes (with a host store)
        and hosts (with a shared store).

        :param recheck: with a host or shared store, seconds a token is used from this process before
            the stores are looked at again (an invalidation there then reaches this process).
        """
        token = self.peek(key, margin)
        if token is not None:
            return token
        with self._lock(key):
            token = self.peek(key, margin)
            if token is not None:  # another thread's, fetched while this one waited
                metrics.incr("cache.hit.process", key)
                return token

            stale = self._tokens.get(key)  # expired (or no longer trusted): its refresh token may renew it
            doubt = self._distrusted(key) if shared is not None else None
            if store is None and shared is not None:
                counted = _Counted(fetch)
                token = shared.get(key, counted, margin, lease, stale)
                if not counted.calls:
                    metrics.incr("cache.hit.shared", key)
            elif store is None:
                token = fetch(stale)
            else:
                token = self._through_host(key, fetch, margin, store, shared, lease, stale, doubt)
            self._keep(key, token, recheck if store is not None or shared is not None else None)
            return token

    @staticmethod
    def _through_host(
        key: str,
        fetch: Fetch,
        margin: float,
        store: HostStore,
        shared: SharedStore | None,
        lease: Lease,
        stale: Token | None = None,
        doubt: Token | None = None,
    ) -> Token:
        """The host cache, else the shared cache, else one fetch: the host's file lock makes the host's
        processes wait on one fetch, but it is never held while Redis is waited on.

        `doubt`: the token this process held until its trust ran out (`recheck`), with a shared store:
        found on the host, it is used only if Redis still has it or cannot be asked.
        """
        with store.locked(key) as held:  # held is None: the host cache is off for this call (said once)
            token = None if held is None else store.read(key, held)
            if token is not None and token.is_fresh(time.time(), margin) and not _same(token, doubt):
                metrics.incr("cache.hit.host", key)
                return token
        claim = None if shared is None else shared.begin(key, margin, lease)  # no file lock held
        fetched: Token | None = None
        try:
            if claim is not None and claim.token is not None:  # from Redis: fills the host cache
                metrics.incr("cache.hit.shared", key)
                token = claim.token
                with store.locked(key) as held:
                    if held is not None:
                        store.write(key, token, held)
                return token
            held_lease = claim is not None and claim.outcome == _HOLD  # Redis has no fresh entry
            with store.locked(key) as held:
                token = None if held is None else store.read(key, held)  # another process's, meanwhile?
                if (
                    token is None
                    or not token.is_fresh(time.time(), margin)
                    or (held_lease and _same(token, doubt))
                ):
                    previous = (claim.stale if claim is not None else None) or token or stale
                    token = fetched = fetch(previous)
                    if held is not None:
                        store.write(key, token, held)
                else:  # another process's, fetched while this one looked in Redis
                    metrics.incr("cache.hit.host", key)
            return token
        finally:
            if claim is not None and shared is not None:  # written to Redis once the file lock is free
                shared.finish(claim, fetched)

    async def aget(
        self,
        key: str,
        fetch: AsyncFetch,
        margin: float,
        store: HostStore | None,
        shared: SharedStore | None = None,
        lease: Lease = DEFAULT_LEASE,
        recheck: float | None = None,
    ) -> Token:
        """`get` for the event loop: the fetch and Redis are awaited; file locking runs in a worker thread."""
        token = self.peek(key, margin)
        if token is not None:
            return token
        loop_key = (id(asyncio.get_running_loop()), key)
        with self._guard:
            lock = self._alocks.setdefault(loop_key, asyncio.Lock())
        async with lock:
            token = self.peek(key, margin)
            if token is not None:
                metrics.incr("cache.hit.process", key)
                return token

            stale = self._tokens.get(key)
            doubt = self._distrusted(key) if shared is not None else None
            if store is None and shared is not None:
                acounted = _ACounted(fetch)
                token = await shared.aget(key, acounted, margin, lease, stale)
                if not acounted.calls:
                    metrics.incr("cache.hit.shared", key)
            elif store is None:
                token = await fetch(stale)
            else:
                token = await self._athrough_host(key, fetch, margin, store, shared, lease, stale, doubt)
            self._keep(key, token, recheck if store is not None or shared is not None else None)
            return token

    @staticmethod
    async def _athrough_host(
        key: str,
        fetch: AsyncFetch,
        margin: float,
        store: HostStore,
        shared: SharedStore | None,
        lease: Lease,
        stale: Token | None = None,
        doubt: Token | None = None,
    ) -> Token:
        """`_through_host` for the event loop: file locking in a worker thread, Redis awaited (with no
        file lock held)."""
        token = await _alocked_read(store, key)
        if token is not None and token.is_fresh(time.time(), margin) and not _same(token, doubt):
            metrics.incr("cache.hit.host", key)
            return token
        claim: Claim | None = None if shared is None else await shared.abegin(key, margin, lease)
        fetched: Token | None = None
        try:
            if claim is not None and claim.token is not None:
                metrics.incr("cache.hit.shared", key)
                token = claim.token
                await _alocked_write(store, key, token)
                return token
            held_lease = claim is not None and claim.outcome == _HOLD
            held = await _acquire(store, key)
            try:
                token = None if held is None else await asyncio.to_thread(store.read, key, held)
                if (
                    token is None
                    or not token.is_fresh(time.time(), margin)
                    or (held_lease and _same(token, doubt))
                ):
                    previous = (claim.stale if claim is not None else None) or token or stale
                    token = fetched = await fetch(previous)
                    if held is not None:
                        await asyncio.to_thread(store.write, key, token, held)
                else:
                    metrics.incr("cache.hit.host", key)
            finally:
                if held is not None:
                    store.release(held)
            return token
        finally:
            if claim is not None and shared is not None:
                await shared.afinish(claim, fetched)

    def forget(self, key: str, token: Token | None, keep_refresh: bool = True) -> None:
        """Drop `token` from this process (only if it is still the cached one), or any token when None;
        its refresh token stays (the access token marked spent) unless `keep_refresh` is False."""
        with self._guard:
            current = self._tokens.get(key)
            if current is None or (token is not None and current.value != token.value):
                return
            if keep_refresh and current.refresh is not None:
                self._tokens[key] = current.spent()
            else:
                self._tokens.pop(key, None)

    def discard(
        self,
        key: str,
        token: Token | None,
        store: HostStore | None,
        shared: SharedStore | None = None,
        keep_refresh: bool = True,
    ) -> None:
        """Drop `token` (only where it is still the cached one), or any token for `key` when None, from
        every tier; a refresh token stays for the next renewal unless `keep_refresh` is False."""
        with self._lock(key):
            self.forget(key, token, keep_refresh)
            if store is not None:
                with store.locked(key) as held:
                    if held is not None:
                        _discard_on_host(store, key, token, keep_refresh, held)
            if shared is not None:
                shared.discard(key, token, keep_refresh)

    async def adiscard(
        self,
        key: str,
        token: Token | None,
        store: HostStore | None,
        shared: SharedStore | None = None,
        keep_refresh: bool = True,
    ) -> None:
        """`discard` for the event loop: file locking in a worker thread, Redis awaited."""
        await asyncio.to_thread(self.discard, key, token, store, None, keep_refresh)
        if shared is not None:
            await shared.adiscard(key, token, keep_refresh)

    def clear(self) -> None:
        """Forget every token in this process (tests, and `invalidate_token` of all)."""
        with self._guard:
            self._tokens.clear()
            self._trusted.clear()


def _same(token: Token, other: Token | None) -> bool:
    return other is not None and token.value == other.value


class _Counted:
    """A fetch that counts its calls: none, and the shared cache had the token."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch, self.calls = fetch, 0

    def __call__(self, previous: Token | None) -> Token:
        self.calls += 1
        return self.fetch(previous)


class _ACounted:
    """`_Counted` for an async fetch."""

    def __init__(self, fetch: AsyncFetch) -> None:
        self.fetch, self.calls = fetch, 0

    async def __call__(self, previous: Token | None) -> Token:
        self.calls += 1
        return await self.fetch(previous)


def _discard_on_host(store: HostStore, key: str, token: Token | None, keep_refresh: bool, held: Held) -> None:
    """The host tier of `discard`: the entry goes, or (holding a refresh token to keep) is marked spent."""
    stored = store.read(key, held)
    if stored is None or (token is not None and stored.value != token.value):
        return
    if keep_refresh and stored.refresh is not None:
        store.write(key, stored.spent(), held)
    else:
        store.delete(key, held=held)


async def _alocked_read(store: HostStore, key: str) -> Token | None:
    held = await _acquire(store, key)
    if held is None:
        return None
    try:
        return await asyncio.to_thread(store.read, key, held)
    finally:
        store.release(held)


async def _alocked_write(store: HostStore, key: str, token: Token) -> None:
    held = await _acquire(store, key)
    if held is not None:
        try:
            await asyncio.to_thread(store.write, key, token, held)
        finally:
            store.release(held)


async def _acquire(store: HostStore, key: str) -> Held | None:
    """`store.acquire` in a worker thread; a caller cancelled meanwhile releases the lock once taken
    (a lock left held would block this key on the whole host)."""
    taking = asyncio.ensure_future(asyncio.to_thread(store.acquire, key))
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(_release_when_taken(store))
        raise


def _release_when_taken(store: HostStore) -> Callable[[asyncio.Future[Held | None]], None]:
    def release(taking: asyncio.Future[Held | None]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            held = taking.result()
            if held is not None:
                store.release(held)

    return release


PROCESS_CACHE = TokenCache()
