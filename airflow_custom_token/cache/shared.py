"""The shared cache: one token per lifetime per cluster, in Redis (`[custom_token] shared_cache_conn_id`).

Celery workers, KubernetesExecutor pods and triggerers each have their own process and host caches;
this layer, below them, is the one all hosts share. Turned on by naming an Airflow connection of type
`redis` (host, port, password, login as the ACL user, extra `db`, `ssl`, `ssl_cert_reqs`,
`ssl_ca_certs`, `ssl_keyfile`, `ssl_certfile`, `ssl_check_hostname`); needs the `redis` client
(`pip install "airflow-custom-token[redis]"`).

What Redis holds, per cache key (the integration key and a digest of the token request, never a secret):

- `airflow-custom-token:<key>:token` = `1:<key id>:<Fernet token>`: the token and its expiry encrypted
  with `[core] fernet_key`; the key id (a digest of the key, never the key) is checked before
  decrypting, so a host with another key says so once and stops using the shared cache instead of
  replacing the others' entries. TTL: the token's remaining life.
- `airflow-custom-token:<key>:lease` = a random id, while one host requests a token. TTL: the lease
  (the token request's timeout plus a few seconds).

The protocol is written once, as generators of Redis operations (`_lookup`, `_save`, `_release`,
`_discard`); `SharedStore` carries them with the sync client, or with `redis.asyncio` in the event loop:

- lookup: GET; a fresh token is a hit. Else take the lease (SET NX PX); the holder reads once more
  and fetches. A caller that finds the lease taken polls (SET NX, GET the token, GET the lease) from
  10 ms up to every 100 ms, giving each holder it sees one lease: if the holder died, its lease runs
  out and one waiter takes over. After two leases at most, a waiter fetches on its own.
- save: SET with PX = the token's remaining life; release: delete the lease only while it still
  holds our id (compare-and-delete, a Lua script).
- discard (a rejected token): GET, decrypt, and delete only while the entry still holds that token
  (compare-and-delete on the exact value read), so a host handed a revoked token refreshes once and
  every other host then reads the new one.

Redis down, slow or refusing the password never fails a task: commands have short socket timeouts
(`SOCKET_TIMEOUT`), no retries, and the first failure logs one warning per process; the shared cache
is then skipped for `RETRY_AFTER` seconds and tried again, so it is used again when Redis comes back.
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
from airflow_custom_token.token import Token

log = logging.getLogger(__name__)

PREFIX = "airflow-custom-token:"
VERSION = b"1"
SOCKET_TIMEOUT = 0.25  # seconds, per connect and per command: an unreachable Redis costs at most this
RETRY_AFTER = 10.0  # seconds the shared cache is skipped after Redis failed, before it is tried again
FIRST_POLL = 0.01  # a waiter's first pause; it doubles up to MAX_POLL
MAX_POLL = 0.1
RESOLVE_AGAIN = 60.0  # seconds before a connection that could not be resolved is looked up again
INSTALL_HINT = 'pip install "airflow-custom-token[redis]"'

# Delete KEYS[1] only while it holds ARGV[1]: releases a lease, and discards a rejected token.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

R = TypeVar("R")


class Op(NamedTuple):
    """One Redis operation of a flow: get, set_nx, set, delete, delete_if, or sleep (`ms`)."""

    kind: str
    name: str = ""
    value: bytes = b""
    ms: int = 0


Flow = Generator[Op, Any, R]
HIT, HOLD, ALONE = "hit", "hold", "alone"  # lookup outcomes: found it, hold the lease, fetch unguarded


class Unavailable(Exception):
    """Redis could not be used for this call (already logged); the caller goes on without it."""


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
    from airflow_custom_token.compat import config_get

    keys = [k.strip() for k in (config_get("core", "fernet_key", "") or "").split(",") if k.strip()]
    return tuple(
        hashlib.sha256(b"airflow-custom-token fernet key id\0" + k.encode()).hexdigest()[:16] for k in keys
    )


class SharedStore:
    """Tokens in Redis for every host of a cluster; see the module's docstring for the protocol."""

    def __init__(self, params: RedisParams, cipher: Any, key_ids: tuple[str, ...]) -> None:
        if not key_ids:
            raise ValueError("no Fernet key id")
        self.params = params
        self.cipher = cipher
        self.key_ids = key_ids
        self._down_until = 0.0
        self._failing = False
        self._foreign = False
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SharedStore redis {self.params.where}>"

    @staticmethod
    def name(key: str, kind: str = "token") -> str:
        return f"{PREFIX}{key}:{kind}"

    @property
    def usable(self) -> bool:
        return not self._foreign and time.monotonic() >= self._down_until

    # -- what is stored ---------------------------------------------------------------------------
    def encode(self, token: Token) -> bytes:
        blob: bytes = self.cipher.encrypt(json.dumps(token.to_json()).encode())
        return b":".join((VERSION, self.key_ids[0].encode(), blob))

    def decode(self, name: str, value: bytes | None) -> Token | None:
        """The token stored in `value` (fresh or not), or None when there is none or it is unreadable."""
        if value is None:
            return None
        version, _, rest = value.partition(b":")
        key_id, _, blob = rest.partition(b":")
        if version != VERSION or not blob:
            log.warning("Custom token shared cache: %s is unreadable (unknown format); replacing it", name)
            return None
        if key_id.decode(errors="replace") not in self.key_ids:
            self._foreign_key(name)
            return None
        try:
            # an expiry that is not a finite number is unreadable; a far one is kept to max lifetime
            return Token.from_json(json.loads(self.cipher.decrypt(blob)), now=time.time())
        except Exception:  # corrupt or truncated: ignored and replaced
            log.warning("Custom token shared cache: %s is unreadable (corrupt); replacing it", name)
            return None

    def _fresh(self, name: str, value: bytes | None, margin: float) -> Token | None:
        token = self.decode(name, value)
        return token if token is not None and token.is_fresh(time.time(), margin) else None

    def _foreign_key(self, name: str) -> None:
        if not self._foreign:
            self._foreign = True
            log.warning(
                "Custom token shared cache is off in this process: %s in Redis %s was encrypted with "
                "another Fernet key. Every host of the cluster must have the same [core] fernet_key "
                "(Airflow requires it); until then this process uses its host and process caches only.",
                name,
                self.params.where,
            )

    # -- the protocol, written once ---------------------------------------------------------------
    def _lookup(self, key: str, margin: float, lease: float) -> Flow[tuple[str, Any]]:
        """Find a fresh token, or take the lease to fetch one: (HIT, token), (HOLD, id) or (ALONE, None).

        A waiter gives each holder it sees one lease to write the token (a holder that dies lets its
        lease run out, and a waiter takes over with a lease of its own), and waits two leases at most.
        """
        name, lease_name = self.name(key), self.name(key, "lease")
        token = self._fresh(name, (yield Op("get", name)), margin)
        if token is not None or self._foreign:
            return (HIT, token) if token is not None else (ALONE, None)
        mine = secrets.token_hex(16).encode()
        lease_ms = max(1, round(lease * 1000))
        started = time.monotonic()
        holder, deadline = None, started + lease
        pause = FIRST_POLL
        while True:
            if (yield Op("set_nx", lease_name, mine, lease_ms)):
                token = self._fresh(name, (yield Op("get", name)), margin)  # written meanwhile?
                if token is None and not self._foreign:
                    return HOLD, mine
                yield Op("delete_if", lease_name, mine)
                return (HIT, token) if token is not None else (ALONE, None)
            token = self._fresh(name, (yield Op("get", name)), margin)
            if token is not None or self._foreign:
                return (HIT, token) if token is not None else (ALONE, None)
            current = yield Op("get", lease_name)
            now = time.monotonic()
            if current is not None and current != holder:  # a new holder: it gets a lease of its own
                holder, deadline = current, min(now + lease, started + 2 * lease)
            if now >= deadline:
                log.info("Custom token shared cache: waited %.1f s for %s; fetching", now - started, name)
                return ALONE, None
            yield Op("sleep", ms=round(pause * 1000))
            pause = min(pause * 2, MAX_POLL)

    def _save(self, key: str, token: Token) -> Flow[None]:
        ttl_ms = int((token.expires_at - time.time()) * 1000)
        if ttl_ms > 0 and not self._foreign:  # never longer than the token lives
            yield Op("set", self.name(key), self.encode(token), ttl_ms)

    def _release(self, key: str, holder: bytes) -> Flow[None]:
        yield Op("delete_if", self.name(key, "lease"), holder)

    def _discard(self, key: str, token: Token | None) -> Flow[None]:
        name = self.name(key)
        if token is None:
            yield Op("delete", name)
            return
        value = yield Op("get", name)
        if value is None:
            return
        stored = self.decode(name, value)
        if self._foreign:
            return
        if stored is None or stored.value == token.value:  # unreadable, or still the rejected token
            yield Op("delete_if", name, value)

    # -- the sync client --------------------------------------------------------------------------
    def get(self, key: str, fetch: Callable[[], Token], margin: float, lease: float) -> Token:
        """A fresh token from Redis, or `fetch()` under the lease (and written back)."""
        if not self.usable:
            return fetch()
        try:
            outcome, found = self._run(self._lookup(key, margin, lease))
        except Unavailable:
            return fetch()
        if outcome == HIT:
            token: Token = found
            return token
        try:
            token = fetch()
            self._quietly(self._save(key, token))
            return token
        finally:
            if outcome == HOLD:
                self._quietly(self._release(key, found))

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
                op = flow.send(_execute(client, op))
        except StopIteration as stop:
            self._ok()
            result: R = stop.value
            return result
        except Exception as exc:
            flow.close()
            self._failed(exc)
            raise Unavailable from None

    # -- the async client (the triggerer) ---------------------------------------------------------
    async def aget(
        self, key: str, fetch: Callable[[], Awaitable[Token]], margin: float, lease: float
    ) -> Token:
        """`get` for the event loop, through `redis.asyncio`."""
        if not self.usable:
            return await fetch()
        try:
            outcome, found = await self._arun(self._lookup(key, margin, lease))
        except Unavailable:
            return await fetch()
        if outcome == HIT:
            token: Token = found
            return token
        try:
            token = await fetch()
            await self._aquietly(self._save(key, token))
            return token
        finally:
            if outcome == HOLD:
                await self._aquietly(self._release(key, found))

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
                op = flow.send(await _aexecute(client, op))
        except StopIteration as stop:
            self._ok()
            result: R = stop.value
            return result
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


def _execute(client: Any, op: Op) -> Any:
    if op.kind == "get":
        return client.get(op.name)
    if op.kind == "set_nx":
        return bool(client.set(op.name, op.value, px=op.ms, nx=True))
    if op.kind == "set":
        return client.set(op.name, op.value, px=op.ms)
    if op.kind == "delete":
        return client.delete(op.name)
    if op.kind == "delete_if":
        return client.eval(DELETE_IF_EQUAL, 1, op.name, op.value)
    if op.kind == "sleep":
        time.sleep(op.ms / 1000)
        return None
    raise ValueError(f"unknown operation {op.kind!r}")


async def _aexecute(client: Any, op: Op) -> Any:
    if op.kind == "get":
        return await client.get(op.name)
    if op.kind == "set_nx":
        return bool(await client.set(op.name, op.value, px=op.ms, nx=True))
    if op.kind == "set":
        return await client.set(op.name, op.value, px=op.ms)
    if op.kind == "delete":
        return await client.delete(op.name)
    if op.kind == "delete_if":
        return await client.eval(DELETE_IF_EQUAL, 1, op.name, op.value)
    if op.kind == "sleep":
        await asyncio.sleep(op.ms / 1000)
        return None
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
