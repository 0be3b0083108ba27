"""The shared cache: one token per lifetime per cluster, in Redis (`[custom_token] shared_cache_conn_id`).

Celery workers, KubernetesExecutor pods and triggerers each have their own process and host caches;
this layer, below them, is the one all hosts share. Turned on by naming an Airflow connection of type
`redis` (host, port, password, login as the ACL user, extra `db`, `ssl`, `ssl_cert_reqs`,
`ssl_ca_certs`, `ssl_keyfile`, `ssl_certfile`, `ssl_check_hostname`); needs the `redis` client
(`pip install "airflow-custom-token[redis]"`).

What Redis holds, per cache key (named `<integration key>-<keyed hash of the cache key>`, see `names`:
listing the keys reveals nothing that can be checked offline):

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
`_renew`, `_discard`); `SharedStore` carries them with the sync client, or with `redis.asyncio` in the
event loop:

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

Redis down, slow or refusing the password never fails a task: every command has an overall deadline
(`COMMAND_DEADLINE`: connect, send and the whole reply), no retries, and the first failure logs one
warning per process; the shared cache is then skipped for `RETRY_AFTER` seconds and tried again, so it
is used again when Redis comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

from airflow_custom_token import redaction
from airflow_custom_token.cache import names
from airflow_custom_token.cache.process import Lease
from airflow_custom_token.fields import option_default
from airflow_custom_token.token import Token

log = logging.getLogger(__name__)

PREFIX = "airflow-custom-token:"
VERSION = b"2"  # 0.2 wrote `1:` entries (no cache key inside): ignored and replaced
COMMAND_DEADLINE = 0.5  # seconds per Redis command, all of it: connect, send, the whole reply
SOCKET_TIMEOUT = 0.25  # seconds per connect and per read, within the deadline
RETRY_AFTER = 10.0  # seconds the shared cache is skipped after Redis failed, before it is tried again
FIRST_POLL = 0.01  # a waiter's first pause; it doubles up to MAX_POLL
MAX_POLL = 0.1
RESOLVE_AGAIN = 60.0  # seconds before a connection that could not be resolved is looked up again
LEASE_VALUE_BYTES = 64  # a lease holds 32 hex digits: a longer value is not read
INSTALL_HINT = 'pip install "airflow-custom-token[redis]"'


def value_bound(max_token_response_bytes: int) -> int:
    """The largest entry read from Redis: room for a token answer's token and outputs, JSON-escaped and
    encrypted (base64), with its header. A larger value is ignored without being read."""
    return 64 * 1024 + 16 * max_token_response_bytes + 64


# Delete KEYS[1] only while it holds ARGV[1]: releases a lease, and discards a rejected token.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Extend the lease KEYS[1] to ARGV[2] ms only while it holds ARGV[1] (its holder's renewal).
RENEW_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Read KEYS[1] if it is a string of at most ARGV[1] bytes: {} (none), {-1} (not a string),
# {-2, size} (too large: not read), or {PTTL, value}.
READ_BOUNDED = """
local size = redis.pcall('STRLEN', KEYS[1])
if type(size) == 'table' then
    if size.err and string.find(size.err, 'WRONGTYPE', 1, true) then return {-1} end
    return redis.error_reply(size.err or 'STRLEN failed')
end
if size == 0 then return {} end
if size > tonumber(ARGV[1]) then return {-2, size} end
return {redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[1])}
"""

R = TypeVar("R")


class Op(NamedTuple):
    """One Redis operation of a flow: read (at most `ms` bytes), set_nx, set, delete, delete_if, renew
    (to `ms`), or sleep (`ms`)."""

    kind: str
    name: str = ""
    value: bytes = b""
    ms: int = 0


class Entry(NamedTuple):
    """What `read` found: the value (None: none, or not readable) and its TTL in ms, or why not."""

    value: bytes | None
    ttl_ms: int = 0
    problem: str | None = None


Flow = Generator[Op, Any, R]
# lookup outcomes: found it, hold the lease, fetch unguarded; FOREIGN: fetch, and leave the entry alone
HIT, HOLD, ALONE, FOREIGN = "hit", "hold", "alone", "foreign"


class Unavailable(Exception):
    """Redis could not be used for this call (already logged); the caller goes on without it."""


class DeadlineExceeded(TimeoutError):
    """A Redis command did not complete within `COMMAND_DEADLINE`."""


@dataclass
class Claim:
    """A lookup's outcome: a token found (HIT), or what to do after fetching one (see `finish`)."""

    key: str
    outcome: str
    token: Token | None = None
    holder: bytes = b""
    renewer: Any = None  # the holder's renewal (a thread, or an asyncio task)


@dataclass(frozen=True)
class RedisParams:
    """How to reach Redis, from an Airflow connection of type `redis` (as the Redis provider reads it)."""

    conn_id: str
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.db} (connection {self.conn_id!r})"

    def client_options(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
            "health_check_interval": 0,
            **self.ssl,
        }

    @classmethod
    def from_airflow(cls, conn: Any) -> RedisParams:
        """Read a connection of type `redis`; raises ValueError naming the field that is wrong."""
        conn_id = str(getattr(conn, "conn_id", "") or "")
        conn_type = str(getattr(conn, "conn_type", "") or "")
        if conn_type != "redis":
            raise ValueError(f"expected a connection of type 'redis', found {conn_type or 'no type'!r}")
        extra_raw = getattr(conn, "extra", None) or {}
        try:
            extra = extra_raw if isinstance(extra_raw, Mapping) else json.loads(extra_raw)
        except ValueError:
            raise ValueError("extra: expected a JSON object, found text that is not valid JSON") from None
        if not isinstance(extra, Mapping):
            raise ValueError(f"extra: expected a JSON object, found {type(extra).__name__}")
        try:
            port = int(getattr(conn, "port", None) or 6379)
            db = int(extra.get("db") or 0)
        except (TypeError, ValueError):
            raise ValueError("port and extra db: expected whole numbers") from None
        password = getattr(conn, "password", None) or None
        if password is not None and str(password).lower() in ("none", "false"):
            password = None  # as the Redis provider reads it
        ssl: dict[str, Any] = {}
        if _truthy(extra.get("ssl")):
            ssl["ssl"] = True
            reqs = str(extra.get("ssl_cert_reqs") or "required").lower()
            if reqs not in ("required", "optional", "none"):
                raise ValueError(f"extra ssl_cert_reqs: expected required, optional or none, found {reqs!r}")
            ssl["ssl_cert_reqs"] = reqs
            for name in ("ssl_ca_certs", "ssl_keyfile", "ssl_certfile"):
                if extra.get(name):
                    ssl[name] = str(extra[name])
            if "ssl_check_hostname" in extra:
                ssl["ssl_check_hostname"] = _truthy(extra["ssl_check_hostname"])
        return cls(
            conn_id=conn_id,
            host=str(getattr(conn, "host", None) or "localhost"),
            port=port,
            db=db,
            username=getattr(conn, "login", None) or None,
            password=None if password is None else str(password),
            ssl=ssl,
        )


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def fernet_key_ids() -> tuple[str, ...]:
    """Ids of `[core] fernet_key`'s keys (primary first): a digest of each key, never the key."""
    return tuple(
        hashlib.sha256(b"airflow-custom-token fernet key id\0" + k.encode()).hexdigest()[:16]
        for k in names.fernet_keys()
    )


class SharedStore:
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
        self.params = params
        self.cipher = cipher
        self.key_ids = key_ids
        self.naming_key = names.naming_key() if naming_key is None else naming_key
        # bounds on what is read, set from the settings of the sources that use the store
        self.max_value_bytes = value_bound(int(option_default("max_token_response_bytes")))
        self.max_lifetime = float(option_default("max_token_lifetime"))
        self._down_until = 0.0
        self._failing = False
        self._foreign_said = False
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SharedStore redis {self.params.where}>"

    def name(self, key: str, kind: str = "token") -> str:
        """The Redis key of a cache key's token or lease: a keyed hash of the cache key (`names`)."""
        return f"{PREFIX}{names.entry_name(key, self.naming_key)}:{kind}"

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

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
        now = time.time()
        lifetime = min(max(stored.lifetime, 0.0), self.max_lifetime)
        remaining = min(ttl_ms / 1000, lifetime, self.max_lifetime)
        expires_at = now + remaining
        return Token(
            stored.value, expires_at, expires_at - max(lifetime, remaining), stored.expiry_source,
            stored.outputs,
        )  # fmt: skip

    def _fresh(self, key: str, entry: Entry | None, margin: float) -> tuple[Token | None, bool]:
        token, foreign = self._decode(key, entry)
        if token is not None and token.is_fresh(time.time(), margin):
            return token, False
        return None, foreign

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
    def _lookup(self, key: str, margin: float, lease: Lease) -> Flow[Claim]:
        """Find a fresh token, or take the lease to fetch one.

        A waiter gives each holder it sees `lease.longest` to write the token (a holder that dies stops
        renewing, its lease runs out within `lease.hold`, and a waiter takes over with a lease of its
        own), and waits two of those at most.
        """
        name, lease_name = self.name(key), self.name(key, "lease")
        token, foreign = self._fresh(key, (yield Op("read", name, ms=self.max_value_bytes)), margin)
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
                token, foreign = self._fresh(key, entry, margin)
                if token is None and not foreign:
                    return Claim(key, HOLD, holder=mine)
                yield Op("delete_if", lease_name, mine)
                return Claim(key, HIT, token) if token is not None else Claim(key, FOREIGN)
            token, foreign = self._fresh(key, (yield Op("read", name, ms=self.max_value_bytes)), margin)
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

    def _save(self, key: str, token: Token) -> Flow[None]:
        ttl_ms = int(min(token.expires_at - time.time(), self.max_lifetime) * 1000)
        if ttl_ms <= 0:  # never longer than the token lives
            return
        value = self.encode(key, token)
        if len(value) > self.max_value_bytes:
            log.debug("Custom token shared cache: a token of %d bytes is not stored (too large)", len(value))
            return
        yield Op("set", self.name(key), value, ttl_ms)

    def _release(self, key: str, holder: bytes) -> Flow[None]:
        yield Op("delete_if", self.name(key, "lease"), holder)

    def _renew(self, key: str, holder: bytes, ms: int) -> Flow[None]:
        yield Op("renew", self.name(key, "lease"), holder, ms)

    def _discard(self, key: str, token: Token | None) -> Flow[None]:
        name = self.name(key)
        entry = yield Op("read", name, ms=self.max_value_bytes)
        if entry.value is None and entry.problem is None:
            return
        stored, foreign = self._decode(key, entry)
        if foreign:  # another Fernet key's: left alone
            return
        if token is None or entry.value is None:  # whatever it holds; or too large, or not a string
            yield Op("delete", name)
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
            self._quietly(self._save(claim.key, token))
        if claim.outcome == HOLD:
            self._quietly(self._release(claim.key, claim.holder))

    def get(self, key: str, fetch: Callable[[], Token], margin: float, lease: Lease) -> Token:
        """A fresh token from Redis, or `fetch()` under the lease (and written back)."""
        claim = self.begin(key, margin, lease)
        if claim.outcome == HIT and claim.token is not None:
            return claim.token
        token: Token | None = None
        try:
            token = fetch()
            return token
        finally:
            self.finish(claim, token)

    def discard(self, key: str, token: Token | None) -> None:
        """Drop `token` from Redis if the entry still holds it (None: whatever it holds)."""
        if self.usable:
            self._quietly(self._discard(key, token))

    def _quietly(self, flow: Flow[None]) -> None:
        with contextlib.suppress(Unavailable):
            self._run(flow)

    def client(self) -> Any:
        """The process's sync client (a thread-safe connection pool; redis-py resets it after a fork)."""
        with self._client_lock:
            if self._client is None:
                module = importlib.import_module("redis")
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                self._client = module.Redis(**self.params.client_options(), retry=Retry(NoBackoff(), 0))
            return self._client

    def _run(self, flow: Flow[R]) -> R:
        try:
            client = self.client()
            op = next(flow)
            while True:
                op = flow.send(_within_deadline(client, op))
        except StopIteration as stop:
            self._ok()
            result: R = stop.value
            return result
        except Exception as exc:
            flow.close()
            self._failed(exc)
            raise Unavailable from None

    # -- the async client (the triggerer) ---------------------------------------------------------
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
            await self._aquietly(self._save(claim.key, token))
        if claim.outcome == HOLD:
            await self._aquietly(self._release(claim.key, claim.holder))

    async def aget(
        self, key: str, fetch: Callable[[], Awaitable[Token]], margin: float, lease: Lease
    ) -> Token:
        """`get` for the event loop, through `redis.asyncio`."""
        claim = await self.abegin(key, margin, lease)
        if claim.outcome == HIT and claim.token is not None:
            return claim.token
        token: Token | None = None
        try:
            token = await fetch()
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

    async def adiscard(self, key: str, token: Token | None) -> None:
        if self.usable:
            await self._aquietly(self._discard(key, token))

    async def _aquietly(self, flow: Flow[None]) -> None:
        with contextlib.suppress(Unavailable):
            await self._arun(flow)

    async def _arun(self, flow: Flow[R]) -> R:
        """Carry a flow over a short-lived `redis.asyncio` client (its connections belong to this loop)."""
        client: Any = None
        try:
            module = await _import_async()
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = module.Redis(**self.params.client_options(), retry=Retry(NoBackoff(), 0))
            op = next(flow)
            while True:
                if op.kind == "sleep":
                    await asyncio.sleep(op.ms / 1000)
                    result = None
                else:  # connect (on the first command), send and the whole reply, within the deadline
                    try:
                        result = await asyncio.wait_for(_aexecute(client, op), COMMAND_DEADLINE)
                    except TimeoutError:
                        raise DeadlineExceeded(_late(op)) from None
                op = flow.send(result)
        except StopIteration as stop:
            self._ok()
            result = stop.value
            return result  # type: ignore[no-any-return]
        except Exception as exc:
            flow.close()
            self._failed(exc)
            raise Unavailable from None
        finally:
            if client is not None:
                with contextlib.suppress(Exception):  # closing a client of an unreachable Redis
                    await client.aclose()

    # -- health -----------------------------------------------------------------------------------
    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        detail = redaction.redact_string(f"{type(exc).__name__}: {exc}", [self.params.password or ""])
        if not self._failing:
            self._failing = True
            _warn_once(
                "Custom token shared cache: Redis %s cannot be used (%s); tasks go on with the host and "
                "process caches, and Redis is tried again every %g s",
                self.params.where,
                detail[:300],
                RETRY_AFTER,
            )
        else:
            log.debug("Custom token shared cache: Redis %s still unavailable (%s)", self.params.where, detail)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("Custom token shared cache: Redis %s is reachable again", self.params.where)


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


def _late(op: Op) -> str:
    return f"Redis did not complete {op.kind.upper()} within {COMMAND_DEADLINE:g} s"


def _within_deadline(client: Any, op: Op) -> Any:
    """`_execute` bounded by `COMMAND_DEADLINE` as a whole (redis-py's socket timeout bounds each
    read, not the command): the command runs in a daemon thread; past the deadline its connections
    are shut down, which ends the thread's read, and `DeadlineExceeded` is raised."""
    if op.kind == "sleep":
        time.sleep(op.ms / 1000)
        return None
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, _execute(client, op)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="custom-token-redis", daemon=True).start()
    if not done.wait(COMMAND_DEADLINE):
        # shut the pool's connections down (in a thread of its own: the caller never waits on it)
        threading.Thread(target=_disconnect, args=(client,), name="custom-token-redis", daemon=True).start()
        raise DeadlineExceeded(_late(op))
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _disconnect(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.connection_pool.disconnect()


def _entry(reply: Any) -> Entry:
    """`READ_BOUNDED`'s reply as an `Entry`."""
    if not reply:
        return Entry(None)
    if reply[0] == -1:
        return Entry(None, problem="not a string value")
    if reply[0] == -2:
        return Entry(None, problem=f"a value of {reply[1]} bytes, larger than allowed; not read")
    return Entry(bytes(reply[1]), int(reply[0]))


def _execute(client: Any, op: Op) -> Any:
    if op.kind == "read":
        return _entry(client.eval(READ_BOUNDED, 1, op.name, op.ms))
    if op.kind == "set_nx":
        return bool(client.set(op.name, op.value, px=op.ms, nx=True))
    if op.kind == "set":
        return client.set(op.name, op.value, px=op.ms)
    if op.kind == "delete":
        return client.delete(op.name)
    if op.kind == "delete_if":
        return client.eval(DELETE_IF_EQUAL, 1, op.name, op.value)
    if op.kind == "renew":
        return client.eval(RENEW_IF_EQUAL, 1, op.name, op.value, op.ms)
    raise ValueError(f"unknown operation {op.kind!r}")


async def _aexecute(client: Any, op: Op) -> Any:
    if op.kind == "read":
        return _entry(await client.eval(READ_BOUNDED, 1, op.name, op.ms))
    if op.kind == "set_nx":
        return bool(await client.set(op.name, op.value, px=op.ms, nx=True))
    if op.kind == "set":
        return await client.set(op.name, op.value, px=op.ms)
    if op.kind == "delete":
        return await client.delete(op.name)
    if op.kind == "delete_if":
        return await client.eval(DELETE_IF_EQUAL, 1, op.name, op.value)
    if op.kind == "renew":
        return await client.eval(RENEW_IF_EQUAL, 1, op.name, op.value, op.ms)
    raise ValueError(f"unknown operation {op.kind!r}")


async def _import_async() -> ModuleType:
    """`redis.asyncio`, imported in a worker thread the first time (it takes 100 ms or more)."""
    module = sys.modules.get("redis.asyncio")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    return await asyncio.to_thread(importlib.import_module, "redis.asyncio")


# ---------------------------------------------------------------------------------------------------
# One store per process and connection

_warned = False
_resolved: dict[str, tuple[float, SharedStore | None]] = {}  # conn id -> (when, store)
_resolve_lock = threading.Lock()
_Lookups = dict[str, "asyncio.Future[SharedStore | None]"]
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lookups] = weakref.WeakKeyDictionary()


def _warn_once(message: str, *args: Any) -> None:
    """The shared cache's one warning per process; later problems are logged at debug level."""
    global _warned
    if _warned:
        log.debug(message, *args)
        return
    _warned = True
    log.warning(message, *args)


def _cached(conn_id: str) -> tuple[bool, SharedStore | None]:
    entry = _resolved.get(conn_id)
    if entry is None:
        return False, None
    when, store = entry
    if store is None and time.monotonic() - when > RESOLVE_AGAIN:
        return False, None
    return True, store


def _build(conn_id: str, conn: Any, cipher_factory: Callable[[], Any]) -> SharedStore | None:
    if conn is None:
        _warn_once(
            "Custom token shared cache is off: [custom_token] shared_cache_conn_id names %r, "
            "which is not a defined connection; define a connection of type 'redis'",
            conn_id,
        )
        return None
    try:
        params = RedisParams.from_airflow(conn)
    except ValueError as exc:
        _warn_once("Custom token shared cache is off: connection %r: %s", conn_id, exc)
        return None
    if importlib.util.find_spec("redis") is None:
        _warn_once("Custom token shared cache is off: the redis client is not installed (%s)", INSTALL_HINT)
        return None
    try:
        cipher = cipher_factory()
        key_ids = fernet_key_ids() if getattr(cipher, "is_encrypted", True) else ()
    except Exception as exc:
        _warn_once("Custom token shared cache is off: no usable Fernet key ([core] fernet_key): %s", exc)
        return None
    if not key_ids:
        _warn_once(
            "Custom token shared cache is off: no Fernet key is set ([core] fernet_key); "
            "tokens are never stored in clear text"
        )
        return None
    return SharedStore(params, cipher, key_ids)


def shared_store(conn_id: str, cipher_factory: Callable[[], Any]) -> SharedStore | None:
    """The process's store for the Redis connection `conn_id`, or None (said once) when it cannot be used."""
    found, store = _cached(conn_id)
    if found:
        return store
    with _resolve_lock:
        found, store = _cached(conn_id)
        if found:
            return store
        try:
            from airflow_custom_token.compat import get_airflow_connection

            conn = get_airflow_connection(conn_id)
        except Exception as exc:
            _warn_once("Custom token shared cache is off for now: cannot look up %r: %s", conn_id, exc)
            store = None
        else:
            store = _build(conn_id, conn, cipher_factory)
            if store is not None and store.params.password:
                redaction.register(store.params.password)
        _resolved[conn_id] = (time.monotonic(), store)
        return store


async def ashared_store(conn_id: str, cipher_factory: Callable[[], Any]) -> SharedStore | None:
    """`shared_store` for the event loop: the connection is looked up with the async API, once for all
    the triggers of the loop that ask at the same time."""
    found, store = _cached(conn_id)
    if found:
        return store
    pending = _pending.setdefault(asyncio.get_running_loop(), {})
    lookup = pending.get(conn_id)
    if lookup is None:
        lookup = pending[conn_id] = asyncio.ensure_future(_aresolve(conn_id, cipher_factory))
        lookup.add_done_callback(lambda _: pending.pop(conn_id, None))
    return await asyncio.shield(lookup)


async def _aresolve(conn_id: str, cipher_factory: Callable[[], Any]) -> SharedStore | None:
    try:
        from airflow_custom_token.compat import aget_airflow_connection

        conn = await aget_airflow_connection(conn_id)
    except Exception as exc:
        _warn_once("Custom token shared cache is off for now: cannot look up %r: %s", conn_id, exc)
        _resolved[conn_id] = (time.monotonic(), None)
        return None
    found, store = _cached(conn_id)  # a sync caller may have resolved it meanwhile
    if found:
        return store
    # Fernet, the configuration and the client's presence: file reads and imports, off the event loop
    store = await asyncio.to_thread(_build, conn_id, conn, cipher_factory)
    if store is not None and store.params.password:
        await redaction.aregister(store.params.password)
    _resolved[conn_id] = (time.monotonic(), store)
    return store


def reset() -> None:
    """Forget every store and warning of this process (tests and the bench)."""
    global _warned
    with _resolve_lock:
        for _, store in _resolved.values():
            if store is not None and store._client is not None:
                with contextlib.suppress(Exception):
                    store._client.close()
        _resolved.clear()
        _warned = False
