"""The shared cache: one token per lifetime per cluster, in Redis (`[custom_token] shared_cache_conn_id`).

Celery workers, KubernetesExecutor pods and triggerers each have their own process and host caches;
this layer, below them, is the one all hosts share. This module holds what is stored and the protocol;
`redis_client` talks to Redis (the connection, each command within its deadline, Redis' health), and
`shared_conn` turns `[custom_token] shared_cache_conn_id` into one store per process.

What Redis holds, per cache key (named `<integration key>-<keyed hash of the cache key>`, see `names`:
listing the keys reveals nothing that can be checked offline; on a Redis Cluster the name is in a hash
tag, `airflow-custom-token:{<name>}:token`, so that an entry's keys share one slot):

- `airflow-custom-token:<name>:token` = `2:<key id>:<Fernet token>`: the token, its lifetime and the
  cache key it was written for, encrypted with `[core] fernet_key`. TTL: the token's remaining life.
  The key id (a digest of the key, never the key) is checked before decrypting: an entry of another
  Fernet key is left alone and not used (that entry only; said once per process). An entry that
  records another cache key (copied from another account's name), an entry of another format (0.2
  wrote `1:`), a corrupt one or one without a TTL is ignored and replaced.
- `airflow-custom-token:<name>:lease` = a random id, while one host requests a token. TTL: `Lease.hold`
  (the token request's timeout plus a few seconds), renewed by its holder while it works, up to
  `Lease.longest` (what the token request can take under its retry policy).

Nothing a reader of Redis finds can make it keep a token longer than Redis does: an entry's life is
read as a duration (its PTTL, on Redis' clock), never as the writer's absolute time, and within
`[custom_token] max_token_lifetime`. Values are size-checked in Redis before they are read
(`READ_BOUNDED`: STRLEN, then GET and PTTL in one script), and read once.

The protocol is written once, as generators of Redis operations (`_lookup`, `_save`, `_release`,
`_renew`, `_discard`); `SharedStore` (a `RedisClient`) carries them with the sync client, or with
`redis.asyncio` in the event loop:

- lookup: read; a fresh token is a hit. Else take the lease (SET NX PX); the holder reads once more
  and fetches. A caller that finds the lease taken polls (SET NX, read the token, read the lease) from
  10 ms up to every 100 ms, giving each holder it sees `Lease.longest`: a holder that died stops
  renewing, its lease runs out within `Lease.hold`, and one waiter takes over. After two of those at
  most, a waiter fetches on its own.
- save: SET with PX = the token's remaining life; release: delete the lease only while it still
  holds our id (compare-and-delete, a Lua script); renew: PEXPIRE only while it holds our id.
- discard (a rejected token): read, decrypt, and delete only while the entry still holds that token
  (compare-and-delete on the exact value read), so a host handed a revoked token refreshes once and
  every other host then reads the new one.

Redis down, slow or refusing the password never fails a task: the lookup then comes back ALONE (fetch
without a lease) and the rest is skipped; see `redis_client` for the deadline and the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_custom_token.cache import names
from airflow_custom_token.cache.process import AsyncFetch, Fetch, Lease
from airflow_custom_token.cache.redis_client import Commands, Entry, Op, RedisClient, RedisParams, Unavailable
from airflow_custom_token.cache.redis_deployments import CLUSTER
from airflow_custom_token.fields import option_default
from airflow_custom_token.token import MAX_REFRESH_LIFETIME, Token

log = logging.getLogger(__name__)

PREFIX = "airflow-custom-token:"
VERSION = b"2"  # 0.2 wrote `1:` entries (no cache key inside): ignored and replaced
FIRST_POLL = 0.01  # a waiter's first pause; it doubles up to MAX_POLL
MAX_POLL = 0.1
LEASE_VALUE_BYTES = 64  # a lease holds 32 hex digits: a longer value is not read


def value_bound(max_token_response_bytes: int) -> int:
    """The largest entry read from Redis: room for a token answer's token and outputs, JSON-escaped and
    encrypted (base64), with its header. A larger value is ignored without being read."""
    return 64 * 1024 + 16 * max_token_response_bytes + 64


# lookup outcomes: found it, hold the lease, fetch unguarded; FOREIGN: fetch, and leave the entry alone
HIT, HOLD, ALONE, FOREIGN = "hit", "hold", "alone", "foreign"


@dataclass
class Claim:
    """A lookup's outcome: a token found (HIT), or what to do after fetching one (see `finish`)."""

    key: str
    outcome: str
    token: Token | None = None
    holder: bytes = b""
    renewer: Any = None  # the holder's renewal (a thread, or an asyncio task)
    stale: Token | None = None  # HOLD: the entry Redis held (expired), whose refresh token renews it
    seen: bytes = b""  # HOLD: that entry's stored value (b"": none): a rotation is written against it


def fernet_key_ids() -> tuple[str, ...]:
    """Ids of `[core] fernet_key`'s keys (primary first): a digest of each key, never the key."""
    return tuple(
        hashlib.sha256(b"airflow-custom-token fernet key id\0" + k.encode()).hexdigest()[:16]
        for k in names.fernet_keys()
    )


class SharedStore(RedisClient):
    """Tokens in Redis for every host of a cluster; see the module's docstring for the protocol."""

    def __init__(
        self,
        params: RedisParams,
        cipher: Any,
        key_ids: tuple[str, ...],
        naming_key: bytes | None = None,
    ) -> None:
        if not key_ids:
            raise ValueError("no Fernet key id")
        super().__init__(params)
        self.cipher = cipher
        self.key_ids = key_ids
        self.naming_key = names.naming_key() if naming_key is None else naming_key
        # bounds on what is read, set from the settings of the sources that use the store
        self.max_value_bytes = value_bound(int(option_default("max_token_response_bytes")))
        self.max_lifetime = float(option_default("max_token_lifetime"))
        self._foreign_said = False

    def __repr__(self) -> str:
        return f"<SharedStore redis {self.params.where}>"

    def name(self, key: str, kind: str = "token") -> str:
        """The Redis key of a cache key's token or lease: a keyed hash of the cache key (`names`); on a
        Redis Cluster in a hash tag (`{...}`), so that an entry's token and lease share one slot."""
        entry = names.entry_name(key, self.naming_key)
        if self.params.deployment.kind == CLUSTER:
            entry = names.slot_tagged(entry)
        return f"{PREFIX}{entry}:{kind}"

    # -- what is stored ---------------------------------------------------------------------------
    def encode(self, key: str, token: Token) -> bytes:
        """The entry for `token` under cache key `key`: the key is recorded inside the encrypted part."""
        payload = {**token.to_json(), "k": key}
        blob: bytes = self.cipher.encrypt(json.dumps(payload).encode())
        return b":".join((VERSION, self.key_ids[0].encode(), blob))

    def decode(self, key: str, entry: Entry | None) -> Token | None:
        """The token stored in `entry` for `key` (fresh or not), or None: none, unreadable, foreign."""
        token, _ = self._decode(key, entry)
        return token

    def _decode(self, key: str, entry: Entry | None) -> tuple[Token | None, bool]:
        """(token or None, whether the entry belongs to another Fernet key)."""
        if entry is None or (entry.value is None and entry.problem is None):
            return None, False
        name = self.name(key)
        if entry.problem is not None or entry.value is None:
            log.warning("Custom token shared cache: %s is unreadable (%s); replacing it", name, entry.problem)
            return None, False
        version, _, rest = entry.value.partition(b":")
        key_id, _, blob = rest.partition(b":")
        if version != VERSION or not blob:
            log.warning(
                "Custom token shared cache: %s is unreadable (unknown format, or written by 0.2); "
                "replacing it",
                name,
            )
            return None, False
        if key_id.decode(errors="replace") not in self.key_ids:
            self._foreign_key(name)
            return None, True
        try:
            data = json.loads(self.cipher.decrypt(blob))
        except Exception:  # corrupt or truncated: ignored and replaced
            log.warning("Custom token shared cache: %s is unreadable (corrupt); replacing it", name)
            return None, False
        if not isinstance(data, dict) or data.get("k") != key:
            log.warning(
                "Custom token shared cache: %s does not record its own cache key (copied from another "
                "key's entry); ignoring and replacing it",
                name,
            )
            return None, False
        if entry.ttl_ms <= 0:
            log.warning("Custom token shared cache: %s has no TTL; ignoring and replacing it", name)
            return None, False
        try:
            stored = Token.from_json(data)  # its times must be finite numbers
        except Exception:
            log.warning("Custom token shared cache: %s is unreadable (its times); replacing it", name)
            return None, False
        return self._as_local(stored, entry.ttl_ms), False

    def _as_local(self, stored: Token, ttl_ms: int) -> Token:
        """The stored token on this host's clock: its life is what Redis says is left of it (a duration,
        whatever the writer's clock said), within `max_lifetime`."""
        now, left = time.time(), ttl_ms / 1000
        # an entry with a refresh token outlives its access token by `tail` (a duration too)
        tail = max(0.0, stored.keep_until - stored.expires_at)
        lifetime = min(max(stored.lifetime, 0.0), self.max_lifetime)
        remaining = min(left - tail, lifetime, self.max_lifetime)
        expires_at = now + remaining
        refresh_expires_at = None
        if stored.refresh is not None and stored.refresh_expires_at is not None:
            refresh_expires_at = now + left - max(0.0, stored.keep_until - stored.refresh_expires_at)
        return Token(
            stored.value, expires_at, expires_at - max(lifetime, remaining), stored.expiry_source,
            stored.outputs, stored.refresh, refresh_expires_at,
        )  # fmt: skip

    def _fresh(self, key: str, entry: Entry | None, margin: float) -> tuple[Token | None, bool, Token | None]:
        """(the fresh token or None, whether the entry is another Fernet key's, the token read at all)."""
        token, foreign = self._decode(key, entry)
        if token is not None and token.is_fresh(time.time(), margin):
            return token, False, token
        return None, foreign, token

    def _foreign_key(self, name: str) -> None:
        message = (
            "Custom token shared cache: %s in Redis %s was encrypted with another Fernet key; this "
            "entry is not used (nor replaced) by this process, which fetches that account's tokens "
            "itself. Every host of the cluster must have the same [core] fernet_key (Airflow requires it)"
        )
        if not self._foreign_said:
            self._foreign_said = True
            log.warning(message, name, self.params.where)
        else:
            log.debug(message, name, self.params.where)

    # -- the protocol, written once ---------------------------------------------------------------
    def _lookup(self, key: str, margin: float, lease: Lease) -> Commands[Claim]:
        """Find a fresh token, or take the lease to fetch one.

        A waiter gives each holder it sees `lease.longest` to write the token (a holder that dies stops
        renewing, its lease runs out within `lease.hold`, and a waiter takes over with a lease of its
        own), and waits two of those at most.
        """
        name, lease_name = self.name(key), self.name(key, "lease")
        token, foreign, _ = self._fresh(key, (yield Op("read", name, ms=self.max_value_bytes)), margin)
        if token is not None or foreign:
            return Claim(key, HIT, token) if token is not None else Claim(key, FOREIGN)
        mine = secrets.token_hex(16).encode()
        hold_ms = max(1, round(min(lease.hold, lease.longest) * 1000))
        started = time.monotonic()
        holder, deadline = None, started + lease.longest
        pause = FIRST_POLL
        while True:
            if (yield Op("set_nx", lease_name, mine, hold_ms)):
                entry = yield Op("read", name, ms=self.max_value_bytes)  # written meanwhile?
                token, foreign, stale = self._fresh(key, entry, margin)
                if token is None and not foreign:
                    seen = entry.value if stale is not None and entry.value is not None else b""
                    return Claim(key, HOLD, holder=mine, stale=stale, seen=seen)
                yield Op("delete_if", lease_name, mine)
                return Claim(key, HIT, token) if token is not None else Claim(key, FOREIGN)
            token, foreign, _ = self._fresh(key, (yield Op("read", name, ms=self.max_value_bytes)), margin)
            if token is not None or foreign:
                return Claim(key, HIT, token) if token is not None else Claim(key, FOREIGN)
            current = (yield Op("read", lease_name, ms=LEASE_VALUE_BYTES)).value
            now = time.monotonic()
            if current is not None and current != holder:  # a new holder: it gets a lease of its own
                holder, deadline = current, min(now + lease.longest, started + 2 * lease.longest)
            if now >= deadline:
                log.info("Custom token shared cache: waited %.1f s for %s; fetching", now - started, name)
                return Claim(key, ALONE)
            yield Op("sleep", ms=round(pause * 1000))
            pause = min(pause * 2, MAX_POLL)

    def _save(self, key: str, token: Token, claim: Claim | None = None) -> Commands[None]:
        """Store `token`; one with a refresh token only while the entry is still the one the lease holder
        read (`claim.seen`): a rotation is never written over another's."""
        bound = self.max_lifetime if token.refresh is None else MAX_REFRESH_LIFETIME
        ttl_ms = int(min(token.keep_until - time.time(), bound) * 1000)
        if ttl_ms <= 0:  # never longer than the token (or its refresh token) lives
            return
        value = self.encode(key, token)
        if len(value) > self.max_value_bytes:
            log.debug("Custom token shared cache: a token of %d bytes is not stored (too large)", len(value))
            return
        if token.refresh is None or claim is None or claim.outcome != HOLD:
            yield Op("set", self.name(key), value, ttl_ms)
            return
        if not (yield Op("set_if", self.name(key), value, ttl_ms, expect=claim.seen)):
            log.warning(
                "Custom token shared cache: %s changed while this host renewed it (its lease ran out?); "
                "the entry written meanwhile is kept",
                self.name(key),
            )

    def _release(self, key: str, holder: bytes) -> Commands[None]:
        yield Op("delete_if", self.name(key, "lease"), holder)

    def _renew(self, key: str, holder: bytes, ms: int) -> Commands[None]:
        yield Op("renew", self.name(key, "lease"), holder, ms)

    def _discard(self, key: str, token: Token | None, keep_refresh: bool = True) -> Commands[None]:
        name = self.name(key)
        entry = yield Op("read", name, ms=self.max_value_bytes)
        if entry.value is None and entry.problem is None:
            return
        stored, foreign = self._decode(key, entry)
        if foreign:  # another Fernet key's: left alone
            return
        if token is None and keep_refresh and stored is not None and stored.refresh is not None:
            token = stored  # an invalidation: the access token goes, the refresh token stays
        if token is None or entry.value is None:  # whatever it holds; or too large, or not a string
            yield Op("delete", name)
        elif stored is not None and stored.value == token.value and keep_refresh and stored.refresh:
            spent = self.encode(key, stored.spent())  # the refresh token stays, for the next renewal
            yield Op("set_if", name, spent, max(1, entry.ttl_ms), expect=entry.value)
        elif stored is None or stored.value == token.value:  # unreadable, or still the rejected token
            yield Op("delete_if", name, entry.value)

    # -- the sync client --------------------------------------------------------------------------
    def begin(self, key: str, margin: float, lease: Lease) -> Claim:
        """Look the key up: a HIT carries the token; else fetch, then `finish` (with the token, or None
        when the fetch failed). The holder of the lease renews it meanwhile (in a thread)."""
        if not self.usable:
            return Claim(key, ALONE)
        try:
            claim = self._run(self._lookup(key, margin, lease))
        except Unavailable:
            return Claim(key, ALONE)
        if claim.outcome == HOLD:
            claim.renewer = _Renewer(self, claim, lease)
            claim.renewer.start()
        return claim

    def finish(self, claim: Claim, token: Token | None) -> None:
        """After a fetch: store the token (unless the entry is another Fernet key's), release the lease."""
        if claim.renewer is not None:
            claim.renewer.stop()
        if token is not None and claim.outcome in (HOLD, ALONE) and self.usable:
            self._quietly(self._save(claim.key, token, claim))
        if claim.outcome == HOLD:
            self._quietly(self._release(claim.key, claim.holder))

    def get(
        self, key: str, fetch: Fetch, margin: float, lease: Lease, previous: Token | None = None
    ) -> Token:
        """A fresh token from Redis, or `fetch(the entry Redis held, else previous)` under the lease (and
        written back)."""
        claim = self.begin(key, margin, lease)
        if claim.outcome == HIT and claim.token is not None:
            return claim.token
        token: Token | None = None
        try:
            token = fetch(claim.stale or previous)
            return token
        finally:
            self.finish(claim, token)

    def discard(self, key: str, token: Token | None, keep_refresh: bool = True) -> None:
        """Drop `token` from Redis if the entry still holds it (None: whatever it holds); a refresh token
        stays (the access token is marked spent) unless `keep_refresh` is False."""
        if self.usable:
            self._quietly(self._discard(key, token, keep_refresh))

    # -- the async client (the triggerer) ---------------------------------------------------------
    def inspect(self, key: str) -> tuple[Token | None, bool]:
        """What Redis holds for `key`, for the admin command: its token (fresh or not; None: no
        readable entry) and whether a lease is held on it. Raises `Unavailable` when Redis fails."""

        def commands() -> Commands[tuple[Token | None, bool]]:
            entry = yield Op("read", self.name(key), ms=self.max_value_bytes)
            lease = yield Op("read", self.name(key, "lease"), ms=LEASE_VALUE_BYTES)
            return self.decode(key, entry), lease.value is not None

        return self._run(commands())

    async def abegin(self, key: str, margin: float, lease: Lease) -> Claim:
        """`begin` for the event loop, through `redis.asyncio`; the holder renews in a task."""
        if not self.usable:
            return Claim(key, ALONE)
        try:
            claim = await self._arun(self._lookup(key, margin, lease))
        except Unavailable:
            return Claim(key, ALONE)
        if claim.outcome == HOLD:
            claim.renewer = asyncio.ensure_future(self._arenew(claim, lease))
        return claim

    async def afinish(self, claim: Claim, token: Token | None) -> None:
        if claim.renewer is not None:
            claim.renewer.cancel()
            with contextlib.suppress(BaseException):
                await claim.renewer
        if token is not None and claim.outcome in (HOLD, ALONE) and self.usable:
            await self._aquietly(self._save(claim.key, token, claim))
        if claim.outcome == HOLD:
            await self._aquietly(self._release(claim.key, claim.holder))

    async def aget(
        self, key: str, fetch: AsyncFetch, margin: float, lease: Lease, previous: Token | None = None
    ) -> Token:
        """`get` for the event loop, through `redis.asyncio`."""
        claim = await self.abegin(key, margin, lease)
        if claim.outcome == HIT and claim.token is not None:
            return claim.token
        token: Token | None = None
        try:
            token = await fetch(claim.stale or previous)
            return token
        finally:
            await self.afinish(claim, token)

    async def _arenew(self, claim: Claim, lease: Lease) -> None:
        """Keep the lease while the holder works, up to `lease.longest` after it was taken."""
        until = time.monotonic() + lease.longest
        while True:
            await asyncio.sleep(lease.renew_every)
            left = until - time.monotonic()
            if left <= 0:
                return
            await self._aquietly(self._renew(claim.key, claim.holder, round(min(lease.hold, left) * 1000)))

    async def adiscard(self, key: str, token: Token | None, keep_refresh: bool = True) -> None:
        if self.usable:
            await self._aquietly(self._discard(key, token, keep_refresh))


class _Renewer:
    """The sync holder's renewal: a daemon thread that extends the lease every `lease.renew_every`
    seconds while the token is fetched, up to `lease.longest` after it was taken."""

    def __init__(self, store: SharedStore, claim: Claim, lease: Lease) -> None:
        self.store, self.claim, self.lease = store, claim, lease
        self._stop = threading.Event()
        self._until = time.monotonic() + lease.longest
        self._thread = threading.Thread(target=self._run, name="custom-token-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.renew_every):
            left = self._until - time.monotonic()
            if left <= 0:
                return
            ms = round(min(self.lease.hold, left) * 1000)
            self.store._quietly(self.store._renew(self.claim.key, self.claim.holder, ms))
