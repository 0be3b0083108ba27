"""The shared cache's store, one per process and connection: `[custom_token] shared_cache_conn_id`
resolved once into a `SharedStore` (`shared_store`, `ashared_store` for the event loop), or into None,
said once per process, when it cannot be used (no such connection, not of type `redis`, no `redis`
client, no Fernet key). A connection that could not be looked up is looked up again after
`RESOLVE_AGAIN` seconds; `reset` forgets every store (tests and the bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from airflow_custom_token import redaction
from airflow_custom_token.cache import redis_client
from airflow_custom_token.cache.redis_client import INSTALL_HINT, RedisParams, warn_once
from airflow_custom_token.cache.shared import SharedStore, fernet_key_ids
from airflow_custom_token.compat import aget_airflow_connection, get_airflow_connection

RESOLVE_AGAIN = 60.0  # seconds before a connection that could not be resolved is looked up again

_resolved: dict[str, tuple[float, SharedStore | None]] = {}  # conn id -> (when, store)
_resolve_lock = threading.Lock()
_Lookups = dict[str, "asyncio.Future[SharedStore | None]"]
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lookups] = weakref.WeakKeyDictionary()


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
        warn_once(
            "Custom token shared cache is off: [custom_token] shared_cache_conn_id names %r, "
            "which is not a defined connection; define a connection of type 'redis'",
            conn_id,
        )
        return None
    try:
        params = RedisParams.from_airflow(conn)
    except ValueError as exc:
        warn_once("Custom token shared cache is off: connection %r: %s", conn_id, exc)
        return None
    if importlib.util.find_spec("redis") is None:
        warn_once("Custom token shared cache is off: the redis client is not installed (%s)", INSTALL_HINT)
        return None
    try:
        cipher = cipher_factory()
        key_ids = fernet_key_ids() if getattr(cipher, "is_encrypted", True) else ()
    except Exception as exc:
        warn_once("Custom token shared cache is off: no usable Fernet key ([core] fernet_key): %s", exc)
        return None
    if not key_ids:
        warn_once(
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
            conn = get_airflow_connection(conn_id)
        except Exception as exc:
            warn_once("Custom token shared cache is off for now: cannot look up %r: %s", conn_id, exc)
            store = None
        else:
            store = _build(conn_id, conn, cipher_factory)
            for secret in () if store is None else store.params.secrets:
                redaction.register(secret)
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
        conn = await aget_airflow_connection(conn_id)
    except Exception as exc:
        warn_once("Custom token shared cache is off for now: cannot look up %r: %s", conn_id, exc)
        _resolved[conn_id] = (time.monotonic(), None)
        return None
    found, store = _cached(conn_id)  # a sync caller may have resolved it meanwhile
    if found:
        return store
    # Fernet, the configuration and the client's presence: file reads and imports, off the event loop
    store = await asyncio.to_thread(_build, conn_id, conn, cipher_factory)
    for secret in () if store is None else store.params.secrets:
        await redaction.aregister(secret)
    _resolved[conn_id] = (time.monotonic(), store)
    return store


def reset() -> None:
    """Forget every store and warning of this process (tests and the bench)."""
    with _resolve_lock:
        for _, store in _resolved.values():
            if store is not None and store._client is not None:
                with contextlib.suppress(Exception):
                    store._client.close()
        _resolved.clear()
        redis_client.forget_warning()
