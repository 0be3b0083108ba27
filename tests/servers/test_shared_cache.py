"""The shared token cache on Redis: one token request per lifetime per cluster.

A real `redis-server` on 127.0.0.1 with a password (scripts/install-redis), and hosts simulated by
processes with their own AIRFLOW_HOME (tests/cluster.py); the processes of a host share its host cache.
Every host names the same `redis` connection in `[custom_token] shared_cache_conn_id`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_custom_token.cache import PROCESS_CACHE, redis_client, shared, shared_conn
from airflow_custom_token.cache.process import Lease
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.token import Token
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.cluster import SHARED_CONN_ID, SHARED_ENV, Cluster, RedisServer, free_port
from tests.conftest import demo_extra
from tests.triggering import run_trigger

pytestmark = pytest.mark.skipif(
    not RedisServer.available(), reason="redis-server is not installed: run scripts/install-redis"
)
WARNING = "Custom token shared cache: Redis"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """An empty Redis, named as the shared cache in this process too."""
    redis_server.client().flushall()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", redis_server.connection())
    monkeypatch.setenv(SHARED_ENV, SHARED_CONN_ID)
    shared_conn.reset()
    yield redis_server
    shared_conn.reset()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster"), hosts=4, processes=3) as hosts:
        yield hosts


def cluster_env(redis: RedisServer, connection: str | None = None, **options: str) -> dict[str, str]:
    """What every host of the cluster is configured with: the account, the shared cache, options."""
    env = {
        "AIRFLOW_CONN_ACME": os.environ["AIRFLOW_CONN_ACME"],
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}": connection or redis.connection(),
        SHARED_ENV: SHARED_CONN_ID,
    }
    env.update({f"AIRFLOW__CUSTOM_TOKEN__{name.upper()}": value for name, value in options.items()})
    return env


def statuses(results: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            total[status] = total.get(status, 0) + count
    return total


# -- many hosts, one token request ------------------------------------------------------------------


def test_twelve_processes_on_four_hosts_make_one_token_request(demo, acme, redis, cluster):
    demo.set_token_delay(1.0)  # a slow identity provider: everybody arrives while the token is requested
    workers = cluster.workers(hosts=4, processes=3)
    cluster.prepare(workers, cluster_env(redis))
    results = cluster.ask_all(workers, {"op": "run", "start": time.time() + 0.3, "count": 3})
    assert statuses(results) == {"200": 36}, results
    assert demo.stats()["token_requests"] == 1
    assert len({token for r in results for token in r["tokens"]}) == 1


def test_single_active_token_api_sees_one_token_request_and_no_401(demo, acme, redis, cluster):
    demo.set_single_active(True)  # each token issued revokes the earlier ones
    workers = cluster.workers(hosts=4, processes=2)
    cluster.prepare(workers, cluster_env(redis))
    start = time.time() + 0.3
    results = cluster.ask_all(workers, {"op": "run", "start": start, "until": start + 3, "pause": 0.02})
    assert set(statuses(results)) == {"200"}, statuses(results)
    assert demo.stats()["token_requests"] == 1
    assert demo.stats()["rejected"] == 0


def test_redis_holds_no_token_or_secret_and_every_key_expires(demo, acme, redis, cluster):
    demo.set_token_delay(1.0)
    [worker] = cluster.workers(hosts=1, processes=1)
    cluster.prepare([worker], cluster_env(redis))
    worker.send({"op": "token"})
    leases: dict[bytes, tuple[bytes | None, int]] = {}
    deadline = time.monotonic() + 10
    while not leases and time.monotonic() < deadline:  # the lease, while the token is requested
        leases = {k: v for k, v in redis.scan().items() if k.endswith(b":lease")}
    token = worker.receive()["token"]
    stored = redis.scan()
    assert leases and stored
    secrets = [token, "dev-secret", redis.password, os.environ["AIRFLOW__CORE__FERNET_KEY"]]
    for key, (value, ttl_ms) in {**leases, **stored}.items():
        assert key.startswith(b"airflow-custom-token:acme-"), key  # the integration key and a digest
        assert ttl_ms > 0, key  # every key expires
        for secret in secrets:
            assert secret.encode() not in key and secret.encode() not in (value or b""), (key, secret)
    [(key, (value, ttl_ms))] = [(k, v) for k, v in stored.items() if k.endswith(b":token")]
    assert ttl_ms <= 3600 * 1000  # no longer than the token lives
    assert value is not None
    version, key_id, blob = value.split(b":", 2)
    assert version == b"2" and len(key_id) == 16
    fernet = Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode())
    payload = json.loads(fernet.decrypt(blob))
    assert payload["v"] == token  # encrypted with [core] fernet_key
    assert payload["k"].startswith("acme-") and payload["k"].encode() not in key  # its key, inside
    for _, (lease_value, lease_ms) in leases.items():
        assert lease_ms <= (30 + 3) * 1000  # held for the token request's timeout plus a few seconds
        assert lease_value is not None and len(lease_value) == 32


def test_revoked_token_is_refreshed_once_for_every_host(demo, acme, redis, cluster):
    workers = cluster.workers(hosts=3, processes=1)
    cluster.prepare(workers, cluster_env(redis))
    first = {w.ask({"op": "token"})["token"] for w in workers}
    assert len(first) == 1 and demo.stats()["token_requests"] == 1
    demo.revoke_all()
    [refreshing, *others] = workers
    result = refreshing.ask({"op": "run", "count": 1})
    assert result["statuses"] == {"200 after 401": 1}
    assert demo.stats()["token_requests"] == 2
    [new] = set(result["tokens"]) - first
    for worker in others:  # their cached token is refused once; the shared cache has the new one
        result = worker.ask({"op": "run", "count": 1})
        assert result["statuses"] == {"200 after 401": 1}
        assert result["tokens"] == [new]
    assert demo.stats()["token_requests"] == 2


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a Redis that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("fault", ["stopped", "wrong password", "hanging"])
def test_tasks_go_on_when_redis_cannot_be_used(demo, acme, redis, cluster, hanging_port, fault):
    connection = {
        "stopped": redis.connection(port=free_port()),
        "wrong password": redis.connection(password="not-the-password"),
        "hanging": redis.connection(port=hanging_port),
    }[fault]
    workers = cluster.workers(hosts=2, processes=2)
    cluster.prepare(workers, cluster_env(redis, connection))
    marks = [w.log_size() for w in workers]
    results = cluster.ask_all(workers, {"op": "run", "start": time.time() + 0.3, "count": 5})
    assert statuses(results) == {"200": 20}
    for result in results:
        assert result["slowest"] < 1.0, result  # short socket timeouts, no retries
        assert result["elapsed"] < 4.0, result
    assert demo.stats()["token_requests"] == 2  # one per host: the host caches still work
    warnings = [w.log_since(mark).count(WARNING) for w, mark in zip(workers, marks, strict=True)]
    assert max(warnings) == 1 and sum(warnings) >= 1, warnings  # at most once per process
    assert "not-the-password" not in "".join(w.log_since(m) for w, m in zip(workers, marks, strict=True))


def test_deferred_task_in_another_hosts_triggerer_uses_the_shared_token(demo, acme, redis, cluster):
    [worker] = cluster.workers(hosts=1, processes=1)
    cluster.prepare([worker], cluster_env(redis))
    token = worker.ask({"op": "token"})["token"]
    # this process is the triggerer's host: its own (empty) process and host caches
    event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
    assert event["status"] == "success" and event["response"]["status"] == 200
    assert demo.stats()["token_requests"] == 1
    assert demo.api_log[-1]["headers"]["Authorization"] == f"Bearer {token}"
    store = shared_conn.shared_store(SHARED_CONN_ID, lambda: None)
    assert store is not None and store._client is None  # only redis.asyncio was used


def test_lock_holder_killed_mid_request_another_host_takes_over(demo, acme, redis, cluster):
    workers = cluster.workers(hosts=3, processes=1)
    cluster.prepare(workers, cluster_env(redis, token_request_timeout="2"))  # lease: 2 + 3 s
    [holder, *waiters] = workers
    demo.push_fault({"hang": 30})  # the holder's token request never ends
    holder.send({"op": "token"})
    deadline = time.monotonic() + 10
    while demo.stats()["token_requests"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(k.endswith(b":lease") for k in redis.scan())
    for worker in waiters:
        worker.send({"op": "token"})
    time.sleep(0.3)
    os.kill(holder.pid, signal.SIGKILL)
    holder.proc.join()
    results = [worker.receive() for worker in waiters]
    assert len({r["token"] for r in results}) == 1
    for result in results:
        assert result["elapsed"] < 5 + 1 + 1.5, result  # the lease, one fetch, polling
    assert demo.stats()["token_requests"] == 2


# -- in this process ----------------------------------------------------------------------------------


def _entry(redis: RedisServer) -> tuple[bytes, bytes]:
    [(key, (value, _))] = [(k, v) for k, v in redis.scan().items() if k.endswith(b":token")]
    assert value is not None
    return key, value


def test_token_found_in_redis_fills_the_host_and_process_caches(demo, acme, redis, isolated_cache):
    token = CustomTokenHook(acme).get_token()
    assert _entry(redis)
    PROCESS_CACHE.clear()
    for path in isolated_cache.glob("*.token"):
        path.unlink()
    hook = CustomTokenHook(acme)
    assert hook.get_token() == token
    assert list(isolated_cache.glob("*.token"))
    assert PROCESS_CACHE.peek(hook.account.cache_key, 0) is not None
    assert demo.stats()["token_requests"] == 1


def test_invalidate_token_clears_the_shared_entry(demo, acme, redis):
    hook = CustomTokenHook(acme)
    hook.get_token()
    assert _entry(redis)
    hook.invalidate_token()
    assert not redis.scan()
    hook.get_token()
    assert demo.stats()["token_requests"] == 2


def test_test_connection_bypasses_every_cache(demo, acme, redis):
    hook = CustomTokenHook(acme)
    hook.get_token()
    ok, message = hook.test_connection()
    assert ok, message
    assert demo.stats()["token_requests"] == 2
    _, before = _entry(redis)
    ok, _ = hook.test_connection()
    assert ok and demo.stats()["token_requests"] == 3
    assert _entry(redis)[1] == before  # never written by the test


def test_discard_deletes_only_while_redis_holds_that_token(demo, acme, redis):
    hook = CustomTokenHook(acme)
    token = hook.get_token()
    store = hook.source.shared()
    assert store is not None
    key = hook.account.cache_key
    stored = PROCESS_CACHE.peek(key, 0)
    assert stored is not None and stored.value == token
    other = Token("tok_another_one", stored.expires_at, stored.obtained_at)
    store.discard(key, other)  # a late caller drops a token that was already replaced
    assert _entry(redis)
    store.discard(key, stored)
    assert not redis.scan()


def test_entry_of_another_fernet_key_is_left_alone(demo, acme, redis, caplog):
    hook = CustomTokenHook(acme)
    foreign = shared.SharedStore(
        redis_client.RedisParams(SHARED_CONN_ID, "127.0.0.1", redis.port, password=redis.password),
        Fernet(Fernet.generate_key()),
        ("0123456789abcdef",),
    )
    now = time.time()
    foreign._run(foreign._save(hook.account.cache_key, Token("tok_from_elsewhere", now + 600, now)))
    _, before = _entry(redis)
    with caplog.at_level("WARNING"):
        token = hook.get_token()
        hook.invalidate_token()
    assert token != "tok_from_elsewhere" and demo.stats()["token_requests"] == 1
    assert _entry(redis)[1] == before  # neither replaced nor deleted
    assert "encrypted with another Fernet key" in caplog.text


def test_shared_cache_is_used_again_when_redis_comes_back(demo, acme, redis, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(redis_client, "RETRY_AFTER", 0.3)
    with RedisServer(tmp_path / "redis") as own:
        monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", own.connection())
        CustomTokenHook(acme).get_token()
        assert _entry(own)
    began = time.monotonic()
    with caplog.at_level("WARNING"):
        _fresh_host(tmp_path, monkeypatch, "down")
        CustomTokenHook(acme).get_token()  # Redis is down: a token request, one warning
    # Refused at once: no retry, no wait (a bound against a hang, generous for a loaded CI machine).
    assert time.monotonic() - began < 3.0
    assert demo.stats()["token_requests"] == 2
    assert caplog.text.count(WARNING) == 1
    with RedisServer(tmp_path / "redis", port=own.port) as again:
        time.sleep(0.4)
        _fresh_host(tmp_path, monkeypatch, "back")
        token = CustomTokenHook(acme).get_token()
        _fresh_host(tmp_path, monkeypatch, "later")
        assert CustomTokenHook(acme).get_token() == token  # from Redis again
        assert _entry(again)
    assert demo.stats()["token_requests"] == 3


def _fresh_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """As if the next task ran on a new host: empty process and host caches."""
    PROCESS_CACHE.clear()
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__CACHE_DIR", str(tmp_path / f"cache-{name}"))


def test_a_waiter_reads_the_token_the_lease_holder_wrote(demo, acme, redis):
    """Two threads as two hosts (no host cache): the second waits on the lease, then reads Redis."""
    demo.set_token_delay(0.5)
    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    key, fetch_calls = hook.account.cache_key, []

    def fetch(previous: Token | None) -> Token:
        fetch_calls.append(1)
        return hook.source._fetch(hook._send_token_request, previous)

    results: list[Token] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.get(key, fetch, 60, hook.source.lease)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fetch_calls) == 1 and results[0].value == results[1].value
    assert demo.stats()["token_requests"] == 1


def test_redis_connection_fields_as_the_redis_provider_reads_them():
    class Conn:
        conn_id, conn_type, host, port, login, password = "r", "redis", "redis.internal", 6380, "app", "pw"
        extra = json.dumps({"db": 3, "ssl": "true", "ssl_cert_reqs": "none", "ssl_ca_certs": "/ca.pem"})

    params = redis_client.RedisParams.from_airflow(Conn())
    options = params.client_options()
    assert (options["host"], options["port"], options["db"]) == ("redis.internal", 6380, 3)
    assert (options["username"], options["password"]) == ("app", "pw")
    assert options["ssl"] is True and options["ssl_cert_reqs"] == "none"
    assert options["ssl_ca_certs"] == "/ca.pem"
    assert options["socket_timeout"] < 1 and options["socket_connect_timeout"] < 1
    assert "pw" not in repr(params)

    Conn.conn_type = "http"
    with pytest.raises(ValueError, match="expected a connection of type 'redis', found 'http'"):
        redis_client.RedisParams.from_airflow(Conn())


def test_missing_connection_turns_the_shared_cache_off_with_one_warning(demo, acme, monkeypatch, caplog):
    monkeypatch.setenv(SHARED_ENV, "no_such_redis")
    shared_conn.reset()
    with caplog.at_level("WARNING"):
        assert CustomTokenHook(acme).run("/api/v1/whoami").status_code == 200
        PROCESS_CACHE.clear()
        CustomTokenHook(acme).get_token()
    assert caplog.text.count("shared cache is off") == 1
    assert "'no_such_redis', which is not a defined connection" in caplog.text
    shared_conn.reset()


def test_acl_user_with_the_documented_permissions(demo, acme, redis, monkeypatch):
    """`login` is the ACL user; the README's minimal ACL (its keys; get, set, del, eval, select,
    strlen, pttl, pexpire) is enough, and the lease's renewal (PEXPIRE) runs under it."""
    admin = redis.client()
    admin.execute_command(
        "ACL", "SETUSER", "airflow-tokens", "reset", "on", ">acl-user-pw-1", "~airflow-custom-token:*",
        "+get", "+set", "+del", "+eval", "+select", "+strlen", "+pttl", "+pexpire",
    )  # fmt: skip
    connection = json.loads(redis.connection(password="acl-user-pw-1", db=3))
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", json.dumps({**connection, "login": "airflow-tokens"})
    )
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_TIMEOUT", "3")  # lease renewed every 2 s
    demo.set_token_delay(2.3)  # the holder renews its lease once while it waits
    hook = CustomTokenHook(acme)
    token = hook.get_token()
    demo.set_token_delay(0)
    db3 = redis.client(db=3)
    assert [k for k in db3.scan_iter("*") if k.endswith(b":token")]
    PROCESS_CACHE.clear()
    hook.source._store, hook.source._store_resolved = None, True  # no host cache: from Redis
    assert hook.get_token() == token
    hook.invalidate_token()
    assert not list(db3.scan_iter("*"))
    assert demo.stats()["token_requests"] == 1
    admin.execute_command("ACL", "DELUSER", "airflow-tokens")


def test_demo_single_active_mode_revokes_earlier_tokens(demo):
    """The test API's mode for the single-active-token case: a new token revokes the account's others."""
    import requests

    def token(client: str) -> str:
        form = {"client_id": client, "client_secret": f"{client}-secret"}
        return requests.post(f"{demo.url}/oauth2/v1/token", data=form, timeout=10).json()["access_token"]

    def status(value: str) -> int:
        headers = {"Authorization": f"Bearer {value}"}
        return requests.get(f"{demo.url}/api/v1/whoami", headers=headers, timeout=10).status_code

    demo.set_single_active(True)
    first, other_account = token("dev"), token("qa")
    second = token("dev")
    assert (status(first), status(second), status(other_account)) == (401, 200, 200)
    demo.set_single_active(False)
    third = token("dev")
    assert (status(second), status(third)) == (200, 200)
    assert demo.config()["single_active"] is False


# -- the shared cache as a trust boundary (issue #19) --------------------------------------------------
# Whoever can read or write Redis but has no Fernet key: the tests below are what they can try.


def _two_accounts(demo, make_conn) -> tuple[CustomTokenHook, CustomTokenHook]:
    for conn_id, login in (("acct_a", "dev"), ("acct_b", "qa")):
        make_conn(conn_id, host=demo.url, login=login, password=f"{login}-secret", extra=demo_extra(demo))
    return CustomTokenHook("acct_a"), CustomTokenHook("acct_b")


def _payload(value: bytes) -> dict:
    version, _, blob = value.split(b":", 2)
    assert version == b"2"
    return json.loads(Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(blob))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_entry_copied_to_another_accounts_key_is_ignored_and_replaced(
    demo, make_conn, redis, tmp_path, monkeypatch, caplog, mode
):
    a, b = _two_accounts(demo, make_conn)
    token_a = a.get_token()
    store = a.source.shared()
    assert store is not None
    name_a, name_b = store.name(a.account.cache_key), store.name(b.account.cache_key)
    client = redis.client()
    client.set(name_b, client.get(name_a), px=600_000)  # whoever can write Redis, without the Fernet key
    _fresh_host(tmp_path, monkeypatch, "b")

    with caplog.at_level("WARNING"):
        if mode == "sync":
            assert CustomTokenHook("acct_b").run("/api/v1/whoami").json()["account"] == "qa"
        else:
            trigger = CustomTokenHttpTrigger(custom_token_conn_id="acct_b", endpoint="/api/v1/whoami")
            event = run_trigger(trigger)
            assert event["status"] == "success" and event["response"]["status"] == 200

    assert demo.api_log[-1]["headers"]["Authorization"] != f"Bearer {token_a}"  # A's token never sent
    assert demo.stats()["token_requests"] == 2
    stored = _payload(client.get(name_b))
    assert stored["k"] == b.account.cache_key and stored["v"] != token_a  # replaced by B's own
    assert "does not record its own cache key" in caplog.text


def test_entry_of_the_old_format_is_refetched_and_replaced(demo, acme, redis):
    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    key = hook.account.cache_key
    now = time.time()
    old = store.encode(key, Token("tok_written_by_0_2", now + 600, now)).replace(b"2:", b"1:", 1)
    redis.client().set(store.name(key), old, px=600_000)
    assert hook.get_token() != "tok_written_by_0_2"
    assert _payload(_entry(redis)[1])["v"] == hook.get_token()


@pytest.fixture
def trickling_redis() -> Iterator[tuple[int, threading.Event]]:
    """A Redis that says OK to the connection's setup (HELLO, AUTH, CLIENT ..., SELECT), then answers
    any read or script with `$100000` and one byte every 0.2 s, until the client hangs up."""
    import re

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    asked, stop = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                commands = [c.upper() for c in re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", data)]
                if any(c in (b"GET", b"EVAL", b"EVALSHA") for c in commands):
                    asked.set()
                    try:
                        conn.sendall(b"$100000\r\n")
                        while not stop.wait(0.2):
                            conn.sendall(b"x")
                    except OSError:
                        return
                    return
                hello = b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"  # redis.asyncio asks for RESP3
                with contextlib.suppress(OSError):
                    conn.sendall(b"".join(hello if c == b"HELLO" else b"+OK\r\n" for c in commands or [b""]))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            thread = threading.Thread(target=serve, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield server.getsockname()[1], asked
    stop.set()
    acceptor.join()
    for thread in threads:
        thread.join(5)
    server.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_that_trickles_its_answer_costs_one_deadline(
    demo, acme, redis, trickling_redis, monkeypatch, isolated_cache, caplog, mode
):
    port, asked = trickling_redis
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", redis.connection(port=port))
    hook = CustomTokenHook(acme)
    lock_free: list[bool] = []

    def check_the_host_lock() -> None:  # while Redis is waited on, the host's other processes go on
        if not asked.wait(20):
            return
        store = hook.source.store
        assert store is not None
        fd = os.open(store.directory / f"{store.entry(hook.account.cache_key)}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_free.append(True)
        except BlockingIOError:
            lock_free.append(False)
        finally:
            os.close(fd)

    checker = threading.Thread(target=check_the_host_lock, daemon=True)
    checker.start()
    got: list[str] = []

    def get() -> None:
        if mode == "sync":
            got.append(hook.get_token())
        else:
            event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
            got.append(event["status"])

    began = time.monotonic()
    with caplog.at_level("WARNING"):
        worker = threading.Thread(target=get, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "blocked on a Redis that trickles its answer"
    checker.join(10)
    # One deadline (0.5 s) and a token request; generous for a loaded machine (0.2 blocked for good).
    assert time.monotonic() - began < 10
    assert got and got[0] and demo.stats()["token_requests"] == 1
    assert lock_free == [True]  # no host-cache lock held while Redis was waited on
    assert caplog.text.count(WARNING) == 1  # said once; the task went on without the shared cache


def test_value_over_the_bound_is_not_read_and_is_replaced(demo, acme, redis, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__MAX_TOKEN_RESPONSE_BYTES", "1024")
    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    assert store.max_value_bytes == shared.value_bound(1024) == 64 * 1024 + 16 * 1024 + 64
    name = store.name(hook.account.cache_key)
    admin = redis.client()
    admin.set(name, b"2:" + b"x" * (8 * 1024 * 1024), px=600_000)  # 8 MiB: 100 times the bound

    def sent() -> int:
        return int(admin.info("stats")["total_net_output_bytes"])

    before = sent()
    token = hook.get_token()
    assert sent() - before < 256 * 1024  # Redis sent none of it (0.2 read it twice: 16 MiB)
    assert demo.stats()["token_requests"] == 1
    assert _payload(_entry(redis)[1])["v"] == token  # replaced


def test_entry_of_another_fernet_key_disables_only_that_entry(demo, make_conn, redis, tmp_path, monkeypatch):
    a, b = _two_accounts(demo, make_conn)
    foreign = shared.SharedStore(
        redis_client.RedisParams(SHARED_CONN_ID, "127.0.0.1", redis.port, password=redis.password),
        Fernet(Fernet.generate_key()),
        ("0123456789abcdef",),
    )
    now = time.time()
    foreign._run(foreign._save(b.account.cache_key, Token("tok_planted", now + 600, now)))
    assert b.get_token() != "tok_planted"  # B fetches its own; its entry is left alone
    token_a = a.get_token()  # A's token is still written to Redis...
    _fresh_host(tmp_path, monkeypatch, "a")
    assert CustomTokenHook("acct_a").get_token() == token_a  # ...and read from there by another host
    assert demo.stats()["token_requests"] == 2


def test_writer_clock_ahead_does_not_lengthen_the_entry(demo, acme, redis, isolated_cache):
    """A writer two days ahead stores a one-hour token: the reader keeps it one hour (Redis' TTL)."""
    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    key = hook.account.cache_key
    ahead = time.time() + 2 * 86400
    value = "tok_from_a_host_two_days_ahead"
    redis.client().set(store.name(key), store.encode(key, Token(value, ahead + 3600, ahead)), px=3_600_000)

    assert hook.get_token() == value
    limit = time.time() + 3600 + 1
    cached = PROCESS_CACHE.peek(key, 0)
    assert cached is not None and cached.expires_at <= limit
    assert hook.source.store is not None
    on_host = hook.source.store.read(key)
    assert on_host is not None and on_host.value == value and on_host.expires_at <= limit
    assert demo.stats()["token_requests"] == 0


def test_entry_is_never_kept_past_max_token_lifetime(demo, acme, redis, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__MAX_TOKEN_LIFETIME", "600")
    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    key, now = hook.account.cache_key, time.time()
    redis.client().set(store.name(key), store.encode(key, Token("tok_long", now + 7200, now)), px=7_200_000)
    assert hook.get_token() == "tok_long"
    cached = PROCESS_CACHE.peek(key, 0)
    assert cached is not None and cached.expires_at <= time.time() + 600


def test_key_names_are_keyed_hashes_that_need_the_fernet_key(demo, acme, redis, isolated_cache, monkeypatch):
    """Listing Redis keys or the cache directory gives nothing to check a guessed secret against."""
    import hashlib

    hook = CustomTokenHook(acme)
    hook.get_token()
    request_digest = hook.account.token_request.fingerprint()
    cache_digest = hook.account.cache_key.rsplit("-", 1)[1]
    names = [k.decode() for k in redis.scan()] + [p.name for p in isolated_cache.iterdir()]
    assert any(n.endswith(":token") for n in names) and any(n.endswith(".token") for n in names)
    for name in names:
        assert request_digest[:16] not in name and cache_digest[:16] not in name, name
        assert hashlib.sha256(hook.account.cache_key.encode()).hexdigest()[:16] not in name, name
    store = hook.source.shared()
    assert store is not None
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    other = shared.SharedStore(store.params, store.cipher, store.key_ids)  # the same key, another Fernet key
    assert other.name(hook.account.cache_key) != store.name(hook.account.cache_key)
    assert other.name(hook.account.cache_key).startswith(f"{shared.PREFIX}acme-")


def test_lease_outlasts_the_token_requests_retries(demo, acme, redis, cluster):
    """Two hosts; the token endpoint answers 503 with Retry-After twice before success (longer than
    the timeout plus 3 s that 0.2 leased for): exactly one successful token request."""
    options = {"token_request_timeout": "1", "retry_after_max": "5"}  # lease: held 4 s, renewed
    workers = cluster.workers(hosts=2, processes=1)
    cluster.prepare(workers, cluster_env(redis, **options))
    try:
        for _ in range(2):
            demo.push_fault({"status": 503, "retry_after": 3})
        [holder, waiter] = workers
        holder.send({"op": "token"})
        deadline = time.monotonic() + 20
        while demo.stats()["token_requests"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        waiter.send({"op": "token"})
        results = [holder.receive(), waiter.receive()]
        assert results[0]["token"] == results[1]["token"]
        assert demo.stats()["tokens_issued"] == 1
        assert demo.stats()["token_requests"] == 3  # two 503s and one success, all from the holder
    finally:
        cluster.prepare(workers, {f"AIRFLOW__CUSTOM_TOKEN__{name.upper()}": None for name in options})


def test_lease_covers_every_attempt_and_the_longest_waits(demo, acme, monkeypatch):
    """Held for the timeout plus 3 s and renewed three times as often; never longer than every attempt's
    timeout plus the longest wait between attempts (a backoff or a Retry-After) plus 3 s."""
    for name, value in {
        "TOKEN_REQUEST_TIMEOUT": "2",
        "TOKEN_REQUEST_RETRIES": "3",
        "RETRY_WAIT_MAX": "4",
        "RETRY_AFTER_MAX": "6",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__CUSTOM_TOKEN__{name}", value)
    lease = CustomTokenHook(acme).source.lease
    assert lease == Lease(hold=2 + 3, longest=(3 + 1) * 2 + 3 * 6 + 3)
    assert lease.renew_every == pytest.approx(5 / 3)
    assert Lease.for_request(30) == Lease(33, 33)  # no retries: no renewal needed past the timeout


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_lease_holder_renews_its_lease_up_to_the_longest(demo, acme, redis, mode):
    """A lease held for 1 s is still there 2.5 holds later while its holder works, and gone once the
    longest a token request can take (here 3 s) is past, even if the holder never finishes."""
    import asyncio

    hook = CustomTokenHook(acme)
    store = hook.source.shared()
    assert store is not None
    key, lease = hook.account.cache_key, Lease(hold=1.0, longest=3.0)
    lease_name = store.name(key, "lease")
    client = redis.client()

    async def holding() -> tuple[bool, bool]:
        claim = await store.abegin(key, 0, lease)
        assert claim.outcome == shared.HOLD
        await asyncio.sleep(2.5)
        renewed = client.exists(lease_name) == 1
        await asyncio.sleep(3.0)
        expired = client.exists(lease_name) == 0
        await store.afinish(claim, None)
        return renewed, expired

    if mode == "async":
        renewed, expired = asyncio.run(holding())
    else:
        claim = store.begin(key, 0, lease)
        assert claim.outcome == shared.HOLD
        time.sleep(2.5)
        renewed = client.exists(lease_name) == 1
        time.sleep(3.0)
        expired = client.exists(lease_name) == 0
        store.finish(claim, None)
    assert renewed and expired
    assert demo.stats()["token_requests"] == 0
