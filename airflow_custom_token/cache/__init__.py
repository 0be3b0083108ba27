"""Token caches, fastest first: process, host, shared (Redis); below them, the token endpoint.

- `process`: `TokenCache`, in memory, one per process (`PROCESS_CACHE`); it also orders the layers.
- `host`: `HostStore`, Fernet-encrypted files shared by the processes of a machine (`host_store`).
- `shared`: `SharedStore`, Fernet-encrypted entries in Redis shared by every host of a cluster, and
  the protocol (lookup under a lease, save, release, renew, discard).
- `redis_client`: talking to Redis: the connection's options, each command within its deadline,
  the sync and `redis.asyncio` clients, Redis' health.
- `shared_conn`: `[custom_token] shared_cache_conn_id` resolved once per process into a store
  (`shared_store`, `ashared_store`).
These three are imported on first use: a process without a shared cache never loads them.

Each layer makes its callers wait on one fetch: a lock per key in the process, a file lock per key on
the host, a lease per key in Redis (the file lock is never held while Redis is waited on).

- `names`: what the host and shared caches name an entry: a keyed hash of its cache key.
"""

from typing import Any

from airflow_custom_token.cache.host import Cipher, HostStore, host_store
from airflow_custom_token.cache.process import PROCESS_CACHE, TokenCache

__all__ = [
    "PROCESS_CACHE",
    "Cipher",
    "HostStore",
    "SharedStore",
    "TokenCache",
    "ashared_store",
    "host_store",
    "shared_store",
]
_SHARED = frozenset({"SharedStore", "ashared_store", "shared_store"})


def __getattr__(name: str) -> Any:
    if name in _SHARED:
        # imported on first use, so that a process without a shared cache never loads it (nor redis)
        from airflow_custom_token.cache import shared, shared_conn

        return getattr(shared if name == "SharedStore" else shared_conn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
