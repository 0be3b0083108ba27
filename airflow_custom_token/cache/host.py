"""The host cache: one Fernet-encrypted file per cache key, shared by every process on the machine.

Files are named by a keyed hash of the cache key (`names`: an HMAC with a key derived from
`[core] fernet_key`), so listing the directory reveals nothing that can be checked offline.

Files are written atomically (a temporary file, then a rename) with mode 0600; a cross-process file
lock per key (`fcntl.flock` on `<key>.lock`) makes processes that start together send one token
request. Without a Fernet key the host cache stays off: tokens are never written in clear text.

Nothing the directory holds can fail a task or hand an account another account's token:

- The directory is created 0700 and checked at every use, through one descriptor that every file
  operation of the call is relative to (so the directory checked is the directory used): it must be
  owned by this process's user, else it is refused. If it is ours but writable by group or others,
  it is made 0700 (said once): nobody else has a use for it, since other users are refused by the
  owner check, and whatever was planted while it was open is caught by the checks on each file.
  If that change fails, the directory is refused.
- Files are opened relative to it without following symlinks (O_NOFOLLOW) and without blocking
  (O_NONBLOCK); a token file is read only if it is a regular file of ours of at most `max_file_bytes`.
- Each payload records its cache key, checked on read: a file copied to another key's name (or
  written by 0.1, which recorded none), a corrupt one or one of another Fernet key is ignored and
  replaced. Its times must be finite and its expiry is kept within `max_lifetime` (`Token.from_json`).
- A lock file that is a symlink, not a regular file or not ours is removed and created again: the
  provider never creates or locks a file a link points to.
- Temporary files left by writers killed between write and rename are removed after
  `STALE_TMP_SECONDS`.
- Every filesystem error (read-only, no space, no inodes, permission denied) turns the host cache off
  for that call, with one warning per process and reason; the task goes on with the process (and
  shared) cache, and the next call tries the directory again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from airflow_custom_token.cache import names
from airflow_custom_token.fields import option_default
from airflow_custom_token.token import Token

log = logging.getLogger("airflow_custom_token.cache")

# Room for a token and its additional outputs at the default max_token_bytes, JSON-escaped and
# encrypted (base64): a token whose file would be larger is not written to the host cache.
MAX_FILE_BYTES = 64 * 1024 + 16 * int(option_default("max_token_bytes"))
STALE_TMP_SECONDS = 600.0  # a temporary file this old belongs to a writer that died; removed
SWEEP_EVERY = 600.0  # how often a process looks for stale temporary files (when it writes)

_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # a symlinked cache_dir is fine: checked
_OPEN_TOKEN = os.O_RDONLY | _NOFOLLOW
_OPEN_LOCK = os.O_RDWR | os.O_CREAT | _NOFOLLOW
_OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW


class Cipher(Protocol):
    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, data: bytes) -> bytes: ...


class Off(Exception):
    """The host cache cannot be used for this call: `reason` (one warning per process each), `message`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @classmethod
    def from_os(cls, doing: str, exc: OSError) -> Off:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return cls(code, f"cannot {doing} ({exc.strerror or exc}, {code})")


@dataclass
class Held:
    """One key's lock, held: the checked directory's descriptor and the lock file's."""

    dir_fd: int
    lock_fd: int


class HostStore:
    """Encrypted token files under `directory`, one per cache key, with a lock file per key.

    Every public method turns a filesystem problem into one warning and "no host cache for this
    call": `acquire` returns None, `read` returns None, `write` and `delete` do nothing.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        cipher: Cipher,
        *,
        max_lifetime: float | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        naming_key: bytes | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.cipher = cipher
        # file names are keyed hashes of the cache keys (`names`): listing the directory reveals nothing
        self.naming_key = names.naming_key() if naming_key is None else naming_key
        self.max_lifetime = max_lifetime  # None: [custom_token] max_token_lifetime's default
        self.max_file_bytes = max_file_bytes
        self._next_sweep = 0.0
        with contextlib.suppress(OSError):  # created now if possible; checked (and said) at each use
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<HostStore {str(self.directory)!r}>"

    def entry(self, key: str) -> str:
        """The file name (without suffix) of a cache key's token and lock: a keyed hash (`names`)."""
        return names.entry_name(key, self.naming_key)

    def token_path(self, key: str) -> Path:
        """Where the token of a cache key is stored."""
        return self.directory / f"{self.entry(key)}.token"

    # -- the directory ----------------------------------------------------------------------------
    def open_directory(self) -> int:
        """The directory's descriptor, created 0700 if missing and checked; raises `Off`."""
        try:
            try:
                fd = os.open(self.directory, _OPEN_DIRECTORY)
            except FileNotFoundError:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                fd = os.open(self.directory, _OPEN_DIRECTORY)
        except OSError as exc:
            raise Off.from_os("create or open the directory", exc) from None
        try:
            self._check_directory(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_directory(self, fd: int) -> None:
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise Off.from_os("inspect the directory", exc) from None
        uid = os.geteuid()
        if st.st_uid != uid:
            raise Off(
                "owner",
                f"the directory is owned by uid {st.st_uid}, not by this process's user (uid {uid}), "
                "so others could plant or swap token files; refused (left as it is). Give it to this "
                "user or set [custom_token] cache_dir to a directory of this user's",
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)
            try:
                os.fchmod(fd, 0o700)
            except OSError as exc:
                raise Off(
                    "mode",
                    f"the directory is writable by {who} (mode {mode:04o}) and could not be made 0700 "
                    f"({exc.strerror or exc}); refused",
                ) from None
            warn_once(
                f"{self.directory}:tightened",
                "Custom token host cache: %s was writable by %s (mode %04o); made it 0700, as the "
                "provider creates it (it is this user's directory, other users are refused anyway)",
                self.directory,
                who,
                mode,
            )

    def _off(self, problem: Off) -> None:
        warn_once(
            f"{self.directory}:{problem.reason}",
            "Custom token host cache is off for this call: %s: %s. The task goes on with the process "
            "(and shared) cache; later calls try again (said once per process)",
            self.directory,
            problem.message,
        )

    @contextlib.contextmanager
    def _directory(self, held: Held | None) -> Iterator[int]:
        """The held lock's directory descriptor, or one opened (and checked) for this operation."""
        if held is not None:
            yield held.dir_fd
            return
        fd = self.open_directory()
        try:
            yield fd
        finally:
            os.close(fd)

    # -- the lock ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[Held | None]:
        """Hold the key's cross-process lock; yields None when the host cache is off for this call."""
        held = self.acquire(key)
        try:
            yield held
        finally:
            if held is not None:
                self.release(held)

    def acquire(self, key: str) -> Held | None:
        """Take the key's lock (blocking): pass the result to `release`. None: the host cache is off
        for this call (said once)."""
        try:
            dir_fd = self.open_directory()
        except Off as problem:
            self._off(problem)
            return None
        lock_fd = -1
        try:
            lock_fd = self._open_lock(dir_fd, f"{self.entry(key)}.lock")
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except BaseException as exc:
            if lock_fd >= 0:
                os.close(lock_fd)
            os.close(dir_fd)
            if isinstance(exc, Off):
                self._off(exc)
            elif isinstance(exc, OSError):
                self._off(Off.from_os("take the lock file", exc))
            else:
                raise
            return None
        return Held(dir_fd, lock_fd)

    @staticmethod
    def release(held: Held) -> None:
        try:
            fcntl.flock(held.lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(held.lock_fd)
            os.close(held.dir_fd)

    def _open_lock(self, dir_fd: int, name: str) -> int:
        """The lock file, created 0600 if missing; one that is a symlink, not a regular file or not
        ours is removed and created again (once)."""
        for attempt in (1, 2):
            try:
                fd = os.open(name, _OPEN_LOCK, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno != errno.ELOOP or attempt == 2:
                    raise
                self._remove(dir_fd, name, "a symbolic link")
                continue
            try:
                why = _not_ours(os.fstat(fd))
            except BaseException:
                os.close(fd)
                raise
            if why is None:
                return fd
            os.close(fd)
            if attempt == 2:
                break
            self._remove(dir_fd, name, why)
        raise Off("lock", f"cannot create the lock file {name}: something keeps replacing it")

    def _remove(self, dir_fd: int, name: str, what: str) -> None:
        warn_once(
            f"{self.directory}:planted:{what}",
            "Custom token host cache: %s in %s was %s, not a file the provider wrote; removed it",
            name,
            self.directory,
            what,
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)

    # -- tokens -----------------------------------------------------------------------------------
    def read(self, key: str, held: Held | None = None) -> Token | None:
        """The key's token (fresh or not), or None: none, unusable (ignored, replaced on the next
        write), or the host cache is off for this call."""
        try:
            with self._directory(held) as dir_fd:
                blob = self._read_file(dir_fd, f"{self.entry(key)}.token")
        except Off as problem:
            self._off(problem)
            return None
        except OSError as exc:
            self._off(Off.from_os("read a token file", exc))
            return None
        if blob is None:
            return None
        name = f"{self.entry(key)}.token"
        try:
            data = json.loads(self.cipher.decrypt(blob))
        except Exception:  # corrupt, truncated, other Fernet key
            log.warning(
                "Custom token host cache: %s is unreadable (corrupt or other key); replacing it", name
            )
            return None
        if not isinstance(data, dict) or data.get("k") != key:
            log.warning(
                "Custom token host cache: %s does not record its own cache key (copied from another "
                "key's file, or written by 0.1); ignoring and replacing it",
                name,
            )
            return None
        try:
            return Token.from_json(data, now=time.time(), max_lifetime=self.max_lifetime)
        except Exception as exc:  # a missing field, an expiry that is not a finite number
            log.warning("Custom token host cache: %s is unreadable (%s); replacing it", name, exc)
            return None

    def _read_file(self, dir_fd: int, name: str) -> bytes | None:
        """The file's bytes if it is a regular file of ours of bounded size; None otherwise."""
        try:
            fd = os.open(name, _OPEN_TOKEN, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._ignored(name, "a symbolic link")
            return None
        try:
            st = os.fstat(fd)
            why = _not_ours(st)
            if why is not None:
                self._ignored(name, why)
                return None
            if st.st_size > self.max_file_bytes:
                self._ignored(name, f"larger than {self.max_file_bytes} bytes")
                return None
            chunks, size = [], 0
            while size <= self.max_file_bytes:
                chunk = os.read(fd, self.max_file_bytes + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > self.max_file_bytes:  # grew while read
                self._ignored(name, f"larger than {self.max_file_bytes} bytes")
                return None
            return b"".join(chunks)
        finally:
            os.close(fd)

    @staticmethod
    def _ignored(name: str, why: str) -> None:
        log.warning("Custom token host cache: %s is %s; ignoring and replacing it", name, why)

    def write(self, key: str, token: Token, held: Held | None = None) -> None:
        """Store the key's token (atomically, mode 0600); a filesystem error is said once, not raised."""
        blob = self.cipher.encrypt(json.dumps({**token.to_json(), "k": key}).encode())
        if len(blob) > self.max_file_bytes:
            warn_once(
                f"{self.directory}:too-large",
                "Custom token host cache: a token of %d bytes (encrypted, with its outputs) is larger "
                "than a host cache file may be (%d bytes); it stays in the process (and shared) cache",
                len(blob),
                self.max_file_bytes,
            )
            return
        try:
            with self._directory(held) as dir_fd:
                self._sweep(dir_fd)
                self._write_file(dir_fd, self.entry(key), blob)
        except Off as problem:
            self._off(problem)
        except OSError as exc:  # a full or read-only disk must not fail the task
            self._off(Off.from_os("write a token file", exc))

    @staticmethod
    def _write_file(dir_fd: int, entry: str, blob: bytes) -> None:
        temp = f".{entry}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, _OPEN_TEMP, 0o600, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temp, f"{entry}.token", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise

    def _sweep(self, dir_fd: int) -> None:
        """Remove temporary files of writers that died between write and rename (now and then)."""
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat(follow_symlinks=False).st_mtime < now - STALE_TMP_SECONDS:
                            os.unlink(entry.name, dir_fd=dir_fd)
                            log.info("Custom token host cache: removed a stale %s", entry.name)
        except OSError as exc:  # housekeeping only
            log.debug("Custom token host cache: cannot remove stale temporary files: %s", exc)

    def delete(self, key: str, only_if: str | None = None, held: Held | None = None) -> None:
        """Remove the key's token; with `only_if`, only when the stored token has that value."""
        if only_if is not None:
            stored = self.read(key, held)
            if stored is not None and stored.value != only_if:
                return
        try:
            with self._directory(held) as dir_fd, contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.entry(key)}.token", dir_fd=dir_fd)
        except Off as problem:
            self._off(problem)
        except OSError as exc:
            self._off(Off.from_os("remove a token file", exc))


def _not_ours(st: os.stat_result) -> str | None:
    """Why a file the provider opened is not one it wrote (None: it is a regular file of ours)."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    return None


_stores: dict[tuple[str, int], HostStore | None] = {}
_resolved: dict[tuple[str, int], HostStore | None] = {}  # (directory, id(cipher_factory)) -> store
_warned: set[str] = set()


def resolved_host_store(directory: str, cipher_factory: Callable[[], Any]) -> tuple[bool, HostStore | None]:
    """(True, what `host_store` returned) when it already ran for these arguments: no I/O, no Fernet."""
    slot = (directory, id(cipher_factory))
    return (slot in _resolved, _resolved.get(slot))


def host_store(directory: str, cipher_factory: Callable[[], Any]) -> HostStore | None:
    """The process's `HostStore` for `directory`, or None when the host cache cannot be used.

    `cipher_factory` returns Airflow's Fernet; without a Fernet key the host cache stays off and says
    so once: tokens are never written in clear text. The directory itself is checked at each use.
    """
    store = _host_store(directory, cipher_factory)
    _resolved[(directory, id(cipher_factory))] = store
    return store


def _host_store(directory: str, cipher_factory: Callable[[], Any]) -> HostStore | None:
    try:
        cipher = cipher_factory()
    except Exception as exc:
        warn_once(
            "fernet", "Custom token host cache is off: no usable Fernet key ([core] fernet_key): %s", exc
        )
        return None
    if not getattr(cipher, "is_encrypted", True):
        warn_once("fernet", "Custom token host cache is off: no Fernet key is set ([core] fernet_key)")
        return None
    slot = (directory, id(cipher))
    if slot not in _stores:
        _stores[slot] = HostStore(directory, cipher)
    return _stores[slot]


def warn_once(what: str, message: str, *args: Any) -> None:
    """Log a warning the first time `what` goes wrong in this process (later: at debug level)."""
    if what not in _warned:
        _warned.add(what)
        log.warning(message, *args)
    else:
        log.debug(message, *args)


def reset() -> None:
    """Forget every store and warning of this process (tests)."""
    _stores.clear()
    _resolved.clear()
    _warned.clear()
