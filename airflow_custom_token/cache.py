"""Token caches: one fetch per token lifetime per host, across tasks, threads and processes.

- Process cache: in memory, shared by every hook in the process; concurrent callers of one key wait on
  one fetch (single flight).
- Host cache (`HostStore`): one Fernet-encrypted file per key in a directory shared by every process on
  the machine, written atomically with mode 0600, guarded by a cross-process file lock so that processes
  starting together make one token request. Unreadable files are ignored and replaced.

The fetch itself is the caller's (sync or async); the cache only decides when to call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from airflow_custom_token.flow import Token

log = logging.getLogger(__name__)


class Cipher(Protocol):
    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, data: bytes) -> bytes: ...


class HostStore:
    """Encrypted token files under `directory`, one per cache key, with a lock file per key."""

    def __init__(self, directory: str | os.PathLike[str], cipher: Cipher) -> None:
        self.directory = Path(directory)
        self.cipher = cipher
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / f"{key}.{suffix}"

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's cross-process lock (`fcntl.flock` on `<key>.lock`)."""
        fd = self.acquire(key)
        try:
            yield
        finally:
            self.release(fd)

    def acquire(self, key: str) -> int:
        """Take the key's lock (blocking); returns the descriptor to pass to `release`."""
        fd = os.open(self._path(key, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def read(self, key: str) -> Token | None:
        path = self._path(key, "token")
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("Custom token host cache: cannot read %s (%s); fetching a new token", path.name, exc)
            return None
        try:
            return Token.from_json(json.loads(self.cipher.decrypt(blob)))
        except Exception:  # corrupt, truncated, other key: ignored and replaced
            log.warning(
                "Custom token host cache: %s is unreadable (corrupt or other key); replacing it", path.name
            )
            return None

    def write(self, key: str, token: Token) -> None:
        blob = self.cipher.encrypt(json.dumps(token.to_json()).encode())
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, self._path(key, "token"))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, key: str, only_if: str | None = None) -> None:
        """Remove the key's token; with `only_if`, only when the stored token has that value."""
        if only_if is not None:
            stored = self.read(key)
            if stored is not None and stored.value != only_if:
                return
        with contextlib.suppress(FileNotFoundError):
            self._path(key, "token").unlink()


class TokenCache:
    """Process cache in front of an optional host store. One instance per process (see `process_cache`)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._alocks: dict[tuple[int, str], asyncio.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def peek(self, key: str, margin: float, now: float | None = None) -> Token | None:
        """The cached token if it is still fresh (no lock: the warm path)."""
        token = self._tokens.get(key)
        if token is not None and token.is_fresh(time.time() if now is None else now, margin):
            return token
        return None

    def get(self, key: str, fetch: Callable[[], Token], margin: float, store: HostStore | None) -> Token:
        """A fresh token for `key`, fetching it at most once across threads (and processes, with a store)."""
        token = self.peek(key, margin)
        if token is not None:
            return token
        with self._lock(key):
            token = self.peek(key, margin)
            if token is not None:
                return token
            if store is None:
                token = fetch()
            else:
                with store.locked(key):
                    token = store.read(key)
                    if token is None or not token.is_fresh(time.time(), margin):
                        token = fetch()
                        _safe_write(store, key, token)
            self._tokens[key] = token
            return token

    async def aget(
        self, key: str, fetch: Callable[[], Awaitable[Token]], margin: float, store: HostStore | None
    ) -> Token:
        """`get` for the event loop: the fetch is awaited; file locking runs in a worker thread."""
        token = self.peek(key, margin)
        if token is not None:
            return token
        loop_key = (id(asyncio.get_running_loop()), key)
        with self._guard:
            lock = self._alocks.setdefault(loop_key, asyncio.Lock())
        async with lock:
            token = self.peek(key, margin)
            if token is not None:
                return token
            if store is None:
                token = await fetch()
            else:
                fd = await asyncio.to_thread(store.acquire, key)
                try:
                    token = await asyncio.to_thread(store.read, key)
                    if token is None or not token.is_fresh(time.time(), margin):
                        token = await fetch()
                        await asyncio.to_thread(_safe_write, store, key, token)
                finally:
                    store.release(fd)
            self._tokens[key] = token
            return token

    def discard(self, key: str, token: Token | None, store: HostStore | None) -> None:
        """Drop `token` (only if it is still the cached one), or any token for `key` when None."""
        with self._lock(key):
            current = self._tokens.get(key)
            if token is None or (current is not None and current.value == token.value):
                self._tokens.pop(key, None)
            if store is not None:
                with store.locked(key):
                    store.delete(key, only_if=None if token is None else token.value)

    def clear(self) -> None:
        """Forget every token in this process (tests, and `invalidate_token` of all)."""
        with self._guard:
            self._tokens.clear()


def _safe_write(store: HostStore, key: str, token: Token) -> None:
    try:
        store.write(key, token)
    except OSError as exc:  # a full or read-only disk must not fail the task
        log.warning("Custom token host cache: cannot write %s (%s); the token stays in memory", key, exc)


PROCESS_CACHE = TokenCache()
_stores: dict[tuple[str, int], HostStore | None] = {}
_warned: set[str] = set()


def host_store(directory: str, cipher_factory: Callable[[], Any]) -> HostStore | None:
    """The process's `HostStore` for `directory`, or None when the host cache cannot be used.

    `cipher_factory` returns Airflow's Fernet; without a Fernet key the host cache stays off and says
    so once: tokens are never written in clear text.
    """
    try:
        cipher = cipher_factory()
    except Exception as exc:
        _warn_once(
            "fernet", "Custom token host cache is off: no usable Fernet key ([core] fernet_key): %s", exc
        )
        return None
    if not getattr(cipher, "is_encrypted", True):
        _warn_once("fernet", "Custom token host cache is off: no Fernet key is set ([core] fernet_key)")
        return None
    slot = (directory, id(cipher))
    if slot not in _stores:
        try:
            _stores[slot] = HostStore(directory, cipher)
        except OSError as exc:
            _warn_once(directory, "Custom token host cache is off: cannot use %s (%s)", directory, exc)
            _stores[slot] = None
    return _stores[slot]


def _warn_once(what: str, message: str, *args: Any) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(message, *args)
