"""Which Redis the shared cache talks to, and the `redis` client for it: one server, a Redis Cluster, or
the master that Redis Sentinel names.

A `redis` connection's extra chooses (the Redis provider's own hook reads none of these keys: they are
this provider's, named as redis-py names the deployments):

- nothing: one server at the connection's host:port (`redis.Redis`).
- `cluster: true`: a Redis Cluster; host:port is any node, the client learns the others from it
  (`redis.cluster.RedisCluster`). Only db 0 exists there. The shared cache names an entry's keys with a
  hash tag (`{...}`) so that a token and its lease live in one slot (`shared.SharedStore.name`).
- `sentinel: true`: host:port, and the optional extra `sentinel_hosts` (a list of `"host:port"`), are
  the sentinels; `sentinel_master` (default `mymaster`) is the master's name; `password` (and `login`)
  are the master's; the optional extra `sentinel_password` is the sentinels' own password
  (`redis.sentinel.Sentinel(...).master_for(...)`). The client asks a sentinel for the master on every
  new connection, so after a failover it reaches the new master.

The TLS options apply to every node and every sentinel. Every client is built without retries
(`Retry(NoBackoff(), 0)`): `redis_client` bounds each command by its deadline and never retries.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

STANDALONE, CLUSTER, SENTINEL = "standalone", "cluster", "sentinel"
DEFAULT_MASTER = "mymaster"
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout", "health_check_interval")


@dataclass(frozen=True)
class Deployment:
    """One server, a cluster, or a master behind sentinels (`sentinels`: host and port of each)."""

    kind: str = STANDALONE
    master: str = DEFAULT_MASTER
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self, host: str, port: int, db: int) -> str:
        if self.kind == CLUSTER:
            return f"cluster {host}:{port}"
        if self.kind == SENTINEL:
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"master {self.master!r} of sentinel {where}/{db}"
        return f"{host}:{port}/{db}"


def read_deployment(extra: Mapping[str, Any], host: str, port: int, db: int) -> Deployment:
    """The deployment a connection's extra names; raises ValueError naming the extra that is wrong."""
    cluster, sentinel = truthy(extra.get("cluster")), truthy(extra.get("sentinel"))
    if cluster and sentinel:
        raise ValueError("extra cluster and sentinel: expected at most one of them to be true, found both")
    if cluster:
        if db != 0:
            raise ValueError(f"extra db: a Redis Cluster has only db 0, found {db}")
        return Deployment(CLUSTER)
    if not sentinel:
        return Deployment()
    master = extra.get("sentinel_master") or DEFAULT_MASTER
    if not isinstance(master, str):
        raise ValueError(f"extra sentinel_master: expected a name, found {type(master).__name__}")
    sentinels = [(host, port)]
    more = extra.get("sentinel_hosts") or []
    if isinstance(more, str):
        more = [part for part in more.split(",") if part.strip()]
    if not isinstance(more, list):
        raise ValueError('extra sentinel_hosts: expected a list of "host:port", found ' + type(more).__name__)
    for item in more:
        name, sep, number = str(item).strip().rpartition(":")
        if not sep or not name or not number.isdigit():
            raise ValueError(f'extra sentinel_hosts: expected "host:port", found {str(item)[:100]!r}')
        if (name, int(number)) not in sentinels:
            sentinels.append((name, int(number)))
    password = extra.get("sentinel_password") or None
    return Deployment(SENTINEL, master, tuple(sentinels), None if password is None else str(password))


def truthy(value: Any) -> bool:
    """An extra's boolean as the Redis provider's form and users write it."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def _no_retry(module_name: str) -> Any:
    retry = importlib.import_module(module_name)
    from redis.backoff import NoBackoff

    return retry.Retry(NoBackoff(), 0)


def _sentinel_options(options: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    """How to reach the sentinels: the same timeouts and TLS, their own password (if any)."""
    found = {k: v for k, v in options.items() if k in _SENTINEL_OPTIONS or k.startswith("ssl")}
    if deployment.sentinel_password is not None:
        found["password"] = deployment.sentinel_password
    return found


def _node_options(options: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The options of each node's connections: a cluster has no db; a sentinel names the master's address."""
    if deployment.kind == CLUSTER:
        return {k: v for k, v in options.items() if k != "db"}
    if deployment.kind == SENTINEL:
        return {k: v for k, v in options.items() if k not in ("host", "port")}
    return dict(options)


def sync_client(options: Mapping[str, Any], deployment: Deployment) -> Any:
    """A sync client (a connection pool; a cluster client asks a node for the slots at once)."""
    module = importlib.import_module("redis")  # optional (`INSTALL_HINT`): imported on first use
    node = {**_node_options(options, deployment), "retry": _no_retry("redis.retry")}
    if deployment.kind == CLUSTER:
        from redis.cluster import RedisCluster

        return RedisCluster(**node)
    if deployment.kind == SENTINEL:
        from redis.sentinel import Sentinel

        sentinel_kwargs = {**_sentinel_options(options, deployment), "retry": _no_retry("redis.retry")}
        return Sentinel(deployment.sentinels, sentinel_kwargs=sentinel_kwargs, **node).master_for(
            deployment.master
        )
    return module.Redis(**node)


def disconnect(client: Any) -> None:
    """Shut a sync client's connections down (a command past its deadline)."""
    with contextlib.suppress(Exception):
        if hasattr(client, "disconnect_connection_pools"):  # a cluster client: one pool per node
            client.disconnect_connection_pools()
        else:
            client.connection_pool.disconnect()


class AsyncClient:
    """A short-lived `redis.asyncio` client, and what to close with it (a sentinel's own clients)."""

    def __init__(self, client: Any, others: tuple[Any, ...] = ()) -> None:
        self.client = client
        self._closing = (client, *others)

    async def aclose(self) -> None:
        for item in self._closing:
            closer = getattr(item, "aclose", None) or getattr(item, "close", None)
            with contextlib.suppress(Exception):  # closing a client of an unreachable Redis
                if closer is not None:
                    await closer()


def async_client(module: ModuleType, options: Mapping[str, Any], deployment: Deployment) -> AsyncClient:
    """A `redis.asyncio` client (`module`, imported); it connects on its first command (a cluster
    client asks a node for the slots then), within that command's deadline."""
    node = {**_node_options(options, deployment), "retry": _no_retry("redis.asyncio.retry")}
    if deployment.kind == CLUSTER:
        return AsyncClient(module.RedisCluster(**node))
    if deployment.kind == SENTINEL:
        sentinel_kwargs = {
            **_sentinel_options(options, deployment),
            "retry": _no_retry("redis.asyncio.retry"),
        }
        sentinel = module.Sentinel(deployment.sentinels, sentinel_kwargs=sentinel_kwargs, **node)
        return AsyncClient(sentinel.master_for(deployment.master), tuple(sentinel.sentinels))
    return AsyncClient(module.Redis(**node))
