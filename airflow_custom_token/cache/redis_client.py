"""Talking to Redis, whatever is stored: how to reach it, one operation at a time, within a deadline.

- `RedisParams`: an Airflow connection of type `redis` (host, port, password, login as the ACL user,
  extra `db`, `ssl`, `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_keyfile`, `ssl_certfile`,
  `ssl_check_hostname`), read as the Redis provider reads it, as the `redis` client's options; and
  which deployment it is (one server, `cluster`, `sentinel`: see `redis_deployments`).
- `Op` and `Entry`: the operations a sequence of `Commands` yields (read, set_nx, set, delete,
  delete_if, renew, sleep) and what a read finds; the Lua scripts behind read (`READ_BOUNDED`:
  STRLEN, then GET and PTTL in one script, so a value is size-checked before it is read), delete_if
  and renew (compare-and-set).
- `RedisClient`: carries a sequence of commands over the sync client (a connection pool per process)
  or over a short-lived `redis.asyncio` client in the event loop (built per deployment by
  `redis_deployments`), and keeps the health of the Redis.

Redis down, slow or refusing the password never fails a task: every command has an overall deadline
(`COMMAND_DEADLINE`: connect, send and the whole reply), no retries, and the first failure logs one
warning per process (`warn_once`); Redis is then skipped for `RETRY_AFTER` seconds and tried again, so
it is used again when it comes back. The `redis` client is an optional dependency (`INSTALL_HINT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from airflow_custom_token import redaction
from airflow_custom_token.aimport import aimport
from airflow_custom_token.cache import redis_deployments
from airflow_custom_token.cache.redis_deployments import Deployment, truthy

log = logging.getLogger(__name__)

COMMAND_DEADLINE = 0.5  # seconds per Redis command, all of it: connect, send, the whole reply
SOCKET_TIMEOUT = 0.25  # seconds per connect and per read, within the deadline
RETRY_AFTER = 10.0  # seconds the shared cache is skipped after Redis failed, before it is tried again
INSTALL_HINT = 'pip install "airflow-custom-token[redis]"'


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

# Set KEYS[1] to ARGV[2] for ARGV[3] ms only while it holds ARGV[1] (or nothing, for ARGV[1] ''): writes a
# rotated refresh token against the entry whose refresh token was used (compare-and-set); 0 if it changed.
SET_IF_EQUAL = """
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '' and not current) or current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
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
    """One Redis operation of a sequence of commands: read (at most `ms` bytes), set_nx, set, set_if
    (while the key holds `expect`, b"": none), delete, delete_if, renew (to `ms`), or sleep (`ms`)."""

    kind: str
    name: str = ""
    value: bytes = b""
    ms: int = 0
    expect: bytes = b""


class Entry(NamedTuple):
    """What `read` found: the value (None: none, or not readable) and its TTL in ms, or why not."""

    value: bytes | None
    ttl_ms: int = 0
    problem: str | None = None


Commands = Generator[Op, Any, R]


class Unavailable(Exception):
    """Redis could not be used for this call (already logged); the caller goes on without it."""


class DeadlineExceeded(TimeoutError):
    """A Redis command did not complete within `COMMAND_DEADLINE`."""


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
    deployment: Deployment = field(default_factory=Deployment)

    @property
    def where(self) -> str:
        return f"{self.deployment.describe(self.host, self.port, self.db)} (connection {self.conn_id!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The passwords this connection holds (never logged)."""
        return tuple(p for p in (self.password, self.deployment.sentinel_password) if p)

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
        if truthy(extra.get("ssl")):
            ssl["ssl"] = True
            reqs = str(extra.get("ssl_cert_reqs") or "required").lower()
            if reqs not in ("required", "optional", "none"):
                raise ValueError(f"extra ssl_cert_reqs: expected required, optional or none, found {reqs!r}")
            ssl["ssl_cert_reqs"] = reqs
            for name in ("ssl_ca_certs", "ssl_keyfile", "ssl_certfile"):
                if extra.get(name):
                    ssl[name] = str(extra[name])
            if "ssl_check_hostname" in extra:
                ssl["ssl_check_hostname"] = truthy(extra["ssl_check_hostname"])
        host = str(getattr(conn, "host", None) or "localhost")
        return cls(
            conn_id=conn_id,
            host=host,
            port=port,
            db=db,
            username=getattr(conn, "login", None) or None,
            password=None if password is None else str(password),
            ssl=ssl,
            deployment=redis_deployments.read_deployment(extra, host, port, db),
        )


_warned = False


def warn_once(message: str, *args: Any) -> None:
    """The shared cache's one warning per process; later problems are logged at debug level."""
    global _warned
    if _warned:
        log.debug(message, *args)
        return
    _warned = True
    log.warning(message, *args)


def forget_warning() -> None:
    """Let the next problem warn again (tests and the bench, through `shared_conn.reset`)."""
    global _warned
    _warned = False


class RedisClient:
    """One Redis, reached with the sync client or with `redis.asyncio`: carries sequences of commands
    (`_run`, `_arun`), each command within `COMMAND_DEADLINE`, and skips Redis for `RETRY_AFTER`
    seconds after a failure (`usable`)."""

    def __init__(self, params: RedisParams) -> None:
        self.params = params
        self._down_until = 0.0
        self._failing = False
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    # -- the sync client --------------------------------------------------------------------------
    def _quietly(self, commands: Commands[None]) -> None:
        with contextlib.suppress(Unavailable):
            self._run(commands)

    def client(self) -> Any:
        """The process's sync client (a thread-safe connection pool; redis-py resets it after a fork).
        Built within a command's deadline (`_within_deadline`): a cluster client talks to a node at once."""
        with self._client_lock:
            if self._client is None:
                self._client = redis_deployments.sync_client(
                    self.params.client_options(), self.params.deployment
                )
            return self._client

    def _run(self, commands: Commands[R]) -> R:
        """Carry commands over the sync client, each command within `COMMAND_DEADLINE`; raises
        `Unavailable` (logged) when Redis fails."""
        try:
            op = next(commands)
            while True:
                op = commands.send(_within_deadline(self.client, op))
        except StopIteration as stop:
            self._ok()
            result: R = stop.value
            return result
        except Exception as exc:
            commands.close()
            self._failed(exc)
            raise Unavailable from None

    # -- the async client (the triggerer) ---------------------------------------------------------
    async def _aquietly(self, commands: Commands[None]) -> None:
        with contextlib.suppress(Unavailable):
            await self._arun(commands)

    async def _arun(self, commands: Commands[R]) -> R:
        """Carry commands over a short-lived `redis.asyncio` client (its connections belong to this loop)."""
        built: redis_deployments.AsyncClient | None = None
        try:
            module = await aimport("redis.asyncio")  # optional, and 100 ms or more to import
            built = redis_deployments.async_client(
                module, self.params.client_options(), self.params.deployment
            )
            client = built.client
            op = next(commands)
            while True:
                if op.kind == "sleep":
                    await asyncio.sleep(op.ms / 1000)
                    result = None
                else:  # connect (on the first command), send and the whole reply, within the deadline
                    try:
                        result = await asyncio.wait_for(_aexecute(client, op), COMMAND_DEADLINE)
                    except TimeoutError:
                        raise DeadlineExceeded(_late(op)) from None
                op = commands.send(result)
        except StopIteration as stop:
            self._ok()
            result = stop.value
            return result  # type: ignore[no-any-return]
        except Exception as exc:
            commands.close()
            self._failed(exc)
            raise Unavailable from None
        finally:
            if built is not None:
                await built.aclose()

    # -- health -----------------------------------------------------------------------------------
    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        detail = redaction.redact_string(
            f"{type(exc).__name__}: {exc}"[:300] + _tls_hint(exc, self.params.ssl), list(self.params.secrets)
        )
        if not self._failing:
            self._failing = True
            warn_once(
                "Custom token shared cache: Redis %s cannot be used (%s); tasks go on with the host and "
                "process caches, and Redis is tried again every %g s",
                self.params.where,
                detail[:600],
                RETRY_AFTER,
            )
        else:
            log.debug("Custom token shared cache: Redis %s still unavailable (%s)", self.params.where, detail)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("Custom token shared cache: Redis %s is reachable again", self.params.where)


def _tls_hint(exc: BaseException, ssl: Mapping[str, Any]) -> str:
    """What to check when TLS failed: the handshake's own errors say little ("EOF occurred in violation
    of protocol" is how a server that wants a client certificate hangs up)."""
    if not ssl.get("ssl"):
        return ""
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(f"{type(seen).__name__} {seen}".lower())
        seen = seen.__cause__ or seen.__context__
    if not any(w in text for text in chain for w in ("ssl", "tls", "certificate", "violation of protocol")):
        return ""
    if not ssl.get("ssl_certfile"):
        return (
            "; the TLS connection failed and no client certificate is set: if the server requires one "
            "(tls-auth-clients yes), set extra ssl_certfile and ssl_keyfile"
        )
    return (
        "; the TLS connection failed: check extra ssl_ca_certs, ssl_certfile, ssl_keyfile and the server name"
    )


def _late(op: Op) -> str:
    return f"Redis did not complete {op.kind.upper()} within {COMMAND_DEADLINE:g} s"


def _within_deadline(get_client: Callable[[], Any], op: Op) -> Any:
    """`_execute` bounded by `COMMAND_DEADLINE` as a whole (redis-py's socket timeout bounds each
    read, not the command): the command (and building the client, the first time) runs in a daemon
    thread; past the deadline its connections are shut down, which ends the thread's read, and
    `DeadlineExceeded` is raised."""
    if op.kind == "sleep":
        time.sleep(op.ms / 1000)
        return None
    outcome: list[Any] = []
    clients: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            clients.append(get_client())
            outcome.append((True, _execute(clients[0], op)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="custom-token-redis", daemon=True).start()
    if not done.wait(COMMAND_DEADLINE):
        # shut the pool's connections down (in a thread of its own: the caller never waits on it)
        if clients:
            threading.Thread(
                target=redis_deployments.disconnect,
                args=(clients[0],),
                name="custom-token-redis",
                daemon=True,
            ).start()
        raise DeadlineExceeded(_late(op))
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


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
    if op.kind == "set_if":
        return bool(client.eval(SET_IF_EQUAL, 1, op.name, op.expect, op.value, op.ms))
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
    if op.kind == "set_if":
        return bool(await client.eval(SET_IF_EQUAL, 1, op.name, op.expect, op.value, op.ms))
    if op.kind == "delete":
        return await client.delete(op.name)
    if op.kind == "delete_if":
        return await client.eval(DELETE_IF_EQUAL, 1, op.name, op.value)
    if op.kind == "renew":
        return await client.eval(RENEW_IF_EQUAL, 1, op.name, op.value, op.ms)
    raise ValueError(f"unknown operation {op.kind!r}")
