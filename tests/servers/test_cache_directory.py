"""The host cache directory is never trusted as found and never fails a task (issue 15, items 4 and 5).

Each test sets the cache directory up the way a broken disk or another user could leave it (a read-only
or full file system: real tmpfs mounts, since tests run as root and root ignores mode bits; a directory
of 0777 or of another uid; files planted in it), then uses a connection as a user would and checks that
the task goes on, what the server saw, what the directory holds afterwards, and the one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import resource
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_custom_token.cache import PROCESS_CACHE, HostStore, TokenCache, host, names
from airflow_custom_token.cache.redis_client import Entry, RedisParams
from airflow_custom_token.cache.shared import SharedStore
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.token import Token
from tests.conftest import demo_extra

LOGGER = "airflow_custom_token.cache"
OFF = "Custom token host cache is off for this call"


def entry(hook: CustomTokenHook) -> str:
    """The host cache's file name (without suffix) of a hook's cache key: a keyed hash of it."""
    return names.entry_name(hook.account.cache_key, names.naming_key())


@pytest.fixture(autouse=True)
def fresh_host_cache_state() -> Iterator[None]:
    """Warnings are said once per process: each test starts as a new process would."""
    host.reset()
    yield
    host.reset()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def use_dir(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    def use(path: Path) -> Path:
        monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__CACHE_DIR", str(path))
        return path

    return use


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs with the given options (unmounted afterwards); skips where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command: a read-only or full file system cannot be made here")
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(
                f"mounting a tmpfs is not permitted here (needs CAP_SYS_ADMIN): {done.stderr.strip()}"
            )
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def only_process_cache_used(demo: DemoServer, logs: pytest.LogCaptureFixture, *reason: str) -> None:
    """Tasks ran through the process cache alone, and the host cache said why exactly once."""
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").status_code == 200
    assert hook.run("/api/v1/whoami").status_code == 200
    PROCESS_CACHE.clear()  # a new task in this process: the host cache is tried again, silently
    assert CustomTokenHook("acme").run("/api/v1/whoami").status_code == 200
    assert demo.stats()["token_requests"] == 2
    [warning] = [w for w in warnings(logs) if OFF in w]
    assert all(part in warning for part in reason), warning


# -- item 4: a filesystem error never fails the task ---------------------------------------------------


def test_read_only_directory(demo, acme, tmpfs, use_dir, logs):
    use_dir(tmpfs("ro,mode=0700,size=1m"))
    only_process_cache_used(demo, logs, "Read-only file system", "EROFS")


def test_read_only_file_system_where_the_directory_would_be_created(demo, acme, tmpfs, use_dir, logs):
    cache_dir = use_dir(tmpfs("ro,mode=0700,size=1m") / "custom_token_cache")
    only_process_cache_used(demo, logs, "cannot create or open the directory", "EROFS")
    assert not cache_dir.exists()


def test_no_inodes_left(demo, acme, tmpfs, use_dir, logs):
    cache_dir = use_dir(tmpfs("mode=0700,size=1m,nr_inodes=8"))
    with pytest.raises(OSError) as full:  # use up every inode
        for n in range(100):
            (cache_dir / f"filler{n}").touch()
    assert full.value.errno == errno.ENOSPC
    only_process_cache_used(demo, logs, "lock file", "ENOSPC")


def test_no_space_left(demo, acme, tmpfs, use_dir, logs):
    cache_dir = use_dir(tmpfs("mode=0700,size=64k"))
    with pytest.raises(OSError) as full, open(cache_dir / "filler", "wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    only_process_cache_used(demo, logs, "write a token file", "ENOSPC")
    assert not [p for p in cache_dir.iterdir() if p.name.endswith((".tmp", ".token"))]


def test_read_only_directory_in_the_event_loop(tmpfs, logs):
    store = HostStore(tmpfs("ro,mode=0700,size=1m"), Fernet(Fernet.generate_key()))
    cache = TokenCache()

    async def fetch(previous: Token | None) -> Token:  # previous: the expired entry (none here)
        return Token("async-token", time.time() + 600, time.time())

    async def twice() -> list[str]:
        return [(await cache.aget("acme-key", fetch, 0, store)).value for _ in range(2)]

    assert asyncio.run(twice()) == ["async-token"] * 2
    [warning] = warnings(logs)
    assert OFF in warning and "EROFS" in warning


def test_a_caller_cancelled_while_waiting_for_the_lock_does_not_leave_it_held(tmp_path):
    """A trigger cancelled while its worker thread waits for the file lock: once taken, it is let go."""
    store = HostStore(tmp_path / "cache", Fernet(Fernet.generate_key()))
    cache = TokenCache()
    other = store.acquire("acme-key")  # another process holds the lock
    assert other is not None

    async def fetch(previous: Token | None) -> Token:  # previous: the expired entry (none here)
        return Token("async-token", time.time() + 600, time.time())

    async def cancelled_then_again() -> str:
        waiting = asyncio.create_task(cache.aget("acme-key", fetch, 0, store))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        store.release(other)
        return (await asyncio.wait_for(cache.aget("acme-key", fetch, 0, store), 5)).value

    got: list[str] = []  # in a thread of its own: a lock left held would block it (and the loop) for good
    runner = threading.Thread(target=lambda: got.append(asyncio.run(cancelled_then_again())), daemon=True)
    runner.start()
    runner.join(10)
    if runner.is_alive():  # the lock leaked: let the waiting worker thread go, or the process never exits
        lock = str(tmp_path / "cache" / f"{store.entry('acme-key')}.lock")
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == lock:
                    fcntl.flock(int(fd), fcntl.LOCK_UN)
    assert got == ["async-token"]


# -- item 5: the directory and what it holds are checked ------------------------------------------------


def test_directory_created_0700(demo, acme, isolated_cache):
    old = os.umask(0)  # whatever the umask
    try:
        CustomTokenHook("acme").get_token()
    finally:
        os.umask(old)
    assert stat.S_IMODE(isolated_cache.stat().st_mode) == 0o700


def test_our_world_writable_directory_is_made_private(demo, acme, isolated_cache, logs):
    isolated_cache.mkdir()
    isolated_cache.chmod(0o777)
    CustomTokenHook("acme").get_token()
    assert stat.S_IMODE(isolated_cache.stat().st_mode) == 0o700
    assert list(isolated_cache.glob("*.token"))  # then used
    [warning] = warnings(logs)
    assert "writable by group and others (mode 0777); made it 0700" in warning


@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_directory_of_another_user_is_refused_and_left_alone(demo, acme, isolated_cache, logs, mode):
    isolated_cache.mkdir()
    os.chown(isolated_cache, 4242, 4242)
    isolated_cache.chmod(mode)
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").status_code == 200
    assert list(isolated_cache.iterdir()) == []  # no token, no lock file
    st = isolated_cache.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (4242, mode)  # not chmod-ed, not chown-ed
    [warning] = warnings(logs)
    assert OFF in warning and f"owned by uid 4242, not by this process's user (uid {os.geteuid()})" in warning


def test_file_copied_to_another_accounts_name_is_ignored_and_replaced(demo, make_conn, isolated_cache, logs):
    for conn_id, login in (("a", "dev"), ("b", "qa")):
        make_conn(conn_id, host=demo.url, login=login, password=f"{login}-secret", extra=demo_extra(demo))
    a, b = CustomTokenHook("a"), CustomTokenHook("b")
    token_a = a.get_token()
    b.get_token()
    file_a = isolated_cache / f"{entry(a)}.token"
    file_b = isolated_cache / f"{entry(b)}.token"
    shutil.copy(file_a, file_b)  # whoever could write the directory
    PROCESS_CACHE.clear()  # another process of the host

    b = CustomTokenHook("b")
    assert b.get_token() != token_a
    assert b.run("/api/v1/whoami").json()["account"] == "qa"
    assert demo.stats()["token_requests"] == 3
    stored = json.loads(Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(file_b.read_bytes()))
    assert stored["k"] == b.account.cache_key and stored["v"] == b.get_token()
    assert any("does not record its own cache key" in w for w in warnings(logs))


def test_fifo_planted_as_the_token_file_does_not_block(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    isolated_cache.mkdir(mode=0o700)
    fifo = isolated_cache / f"{entry(hook)}.token"
    os.mkfifo(fifo)
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(hook.get_token()), daemon=True)
    worker.start()
    worker.join(10)
    blocked = worker.is_alive()
    if blocked:  # let the reader go: a writer that opens and closes the FIFO ends its read
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
    assert not blocked, "get_token blocked on a FIFO"
    assert got and stat.S_ISREG(fifo.lstat().st_mode)  # replaced by a token file
    assert demo.stats()["token_requests"] == 1


def test_symlink_to_dev_zero_is_not_followed(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    isolated_cache.mkdir(mode=0o700)
    link = isolated_cache / f"{entry(hook)}.token"
    link.symlink_to("/dev/zero")
    # A memory ceiling while the call runs, so that reading without limit fails this test, not the machine.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (in_use + 512 * 1024 * 1024, hard))
    try:
        token = hook.get_token()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert not link.is_symlink() and stat.S_ISREG(link.stat().st_mode)  # replaced by a token file
    PROCESS_CACHE.clear()
    assert CustomTokenHook("acme").get_token() == token  # which is read
    assert demo.stats()["token_requests"] == 1


def test_lock_symlink_does_not_create_its_target(demo, acme, isolated_cache, tmp_path, logs):
    hook = CustomTokenHook("acme")
    isolated_cache.mkdir(mode=0o700)
    (tmp_path / "victim").mkdir()
    target = tmp_path / "victim" / "created-through-the-link"
    lock = isolated_cache / f"{entry(hook)}.lock"
    lock.symlink_to(target)
    assert hook.run("/api/v1/whoami").status_code == 200
    assert not target.exists()
    assert not lock.is_symlink() and stat.S_ISREG(lock.stat().st_mode)  # ours now
    assert list(isolated_cache.glob("*.token"))  # and the host cache works
    assert any("was a symbolic link, not a file the provider wrote; removed it" in w for w in warnings(logs))


def test_stale_temporary_files_are_removed(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    isolated_cache.mkdir(mode=0o700)
    key = entry(hook)
    stale, recent = isolated_cache / f".{key}.k1ll3d.tmp", isolated_cache / f".{key}.wr1t1ng.tmp"
    for path in (stale, recent):
        path.write_bytes(b"half a token file")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    hook.get_token()
    assert not stale.exists()
    assert recent.exists()  # another writer may be about to rename it


# -- Token.from_json: no cached expiry outlives max_token_lifetime ---------------------------------------


def _plant(path: Path, payload: str) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).encrypt(payload.encode()))


@pytest.mark.parametrize("exp", ["Infinity", "NaN", "1e400", '"soon"'])
def test_cached_expiry_that_is_not_a_finite_number_is_replaced(demo, acme, isolated_cache, exp):
    hook = CustomTokenHook("acme")
    key, now = hook.account.cache_key, time.time()
    path = isolated_cache / f"{entry(hook)}.token"
    _plant(path, f'{{"v": "forever", "exp": {exp}, "at": {now}, "k": "{key}"}}')
    assert hook.get_token() != "forever"
    assert demo.stats()["token_requests"] == 1
    stored = HostStore(isolated_cache, Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode())).read(key)
    assert stored is not None and stored.value == hook.get_token()


def test_cached_expiry_far_away_is_kept_to_the_max_lifetime(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    key, now = hook.account.cache_key, time.time()
    path = isolated_cache / f"{entry(hook)}.token"
    _plant(path, f'{{"v": "far", "exp": 1e300, "at": {now + 1e9}, "k": "{key}"}}')
    assert hook.source.store is not None
    stored = hook.source.store.read(key)
    assert stored is not None and stored.value == "far"
    assert now - 1 <= stored.obtained_at <= time.time()  # not in the future
    assert stored.expires_at <= time.time() + 86400  # [custom_token] max_token_lifetime's default


@pytest.mark.parametrize("exp", ["Infinity", "NaN", "1e400"])
def test_shared_cache_entry_with_an_expiry_that_is_not_finite_is_unreadable(exp):
    fernet = Fernet(Fernet.generate_key())
    store = SharedStore(RedisParams("redis_default", "127.0.0.1", 6379), fernet, ("0123456789abcdef",))
    blob = fernet.encrypt(f'{{"v": "forever", "exp": {exp}, "at": {time.time()}, "k": "acme-k"}}'.encode())
    entry = Entry(b"2:0123456789abcdef:" + blob, 3_600_000)
    assert store.decode("acme-k", entry) is None


def test_file_names_are_keyed_hashes_of_the_cache_key(demo, acme, isolated_cache, monkeypatch):
    """Listing the directory gives nothing to check a guessed client secret against (issue #19 item 7):
    a file is named by an HMAC of the cache key with a key derived from [core] fernet_key."""
    hook = CustomTokenHook("acme")
    hook.get_token()
    digest = hook.account.cache_key.rsplit("-", 1)[1]
    files = sorted(p.name for p in isolated_cache.iterdir())
    assert f"{entry(hook)}.token" in files and f"{entry(hook)}.lock" in files
    assert all(digest[:16] not in name and name.startswith("acme-") for name in files), files
    assert all(hook.account.token_request.fingerprint()[:16] not in name for name in files), files
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    assert names.entry_name(hook.account.cache_key, names.naming_key()) != entry_from(files)


def entry_from(files: list[str]) -> str:
    [token_file] = [name for name in files if name.endswith(".token")]
    return token_file.removesuffix(".token")
