"""The shared token cache behind Redis Sentinel: a master, its replica and a sentinel on 127.0.0.1
(tests/redis_deployments.py `SentinelSetup`), and a `redis` connection with extra `sentinel: true` whose
host:port is the sentinel, as a user writes it.

What a failover keeps: an entry the replica had received when the sentinel promoted it (Redis replicates
asynchronously; what the master wrote in its last moment may be lost, and then the next caller requests
a token again: the README says so).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from airflow_custom_token.cache import shared_conn
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.cluster import REDIS_PASSWORD, SHARED_CONN_ID, SHARED_ENV, Cluster, RedisServer, hosts_env
from tests.redis_deployments import SENTINEL_PASSWORD, SentinelSetup, wait_until
from tests.serving import free_port
from tests.triggering import run_trigger

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not RedisServer.available(), reason="redis-server is not installed: run scripts/install-redis"
    ),
]
WARNING = "Custom token shared cache: Redis"


@pytest.fixture
def sentinel(tmp_path: os.PathLike[str]) -> Iterator[SentinelSetup]:
    """A fresh master, replica and sentinel for each test (a failover changes who is the master)."""
    with SentinelSetup(tmp_path / "sentinel") as setup:  # type: ignore[operator]
        yield setup


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("hosts"), hosts=2, processes=1) as cluster:
        yield cluster


def token_keys(server: RedisServer) -> list[bytes]:
    return [key for key in server.scan() if key.endswith(b":token")]


def test_two_hosts_share_one_token_on_the_master_the_sentinel_names(demo, acme, sentinel, hosts):
    first, second = hosts.workers(hosts=2, processes=1)
    hosts.prepare([first, second], hosts_env(sentinel.connection()))
    marks = [first.log_size(), second.log_size()]
    token = first.ask({"op": "token"})["token"]
    assert second.ask({"op": "token"})["token"] == token
    assert demo.stats()["token_requests"] == 1
    [key] = token_keys(sentinel.master)
    assert key.startswith(b"airflow-custom-token:acme-")  # plain names: one master holds every key
    assert WARNING not in first.log_since(marks[0]) + second.log_since(marks[1])


def test_a_token_the_replica_received_survives_a_failover(demo, acme, sentinel, hosts):
    first, second = hosts.workers(hosts=2, processes=1)
    old_master = sentinel.master.port
    hosts.prepare([first], hosts_env(sentinel.connection()))
    token = first.ask({"op": "token"})["token"]
    wait_until(lambda: token_keys(sentinel.replica), "the replica has the token entry")
    sentinel.failover()
    assert sentinel.master_port() != old_master
    # a host that starts after the failover asks the sentinel, reaches the new master, finds the token
    hosts.prepare([second], hosts_env(sentinel.connection()))
    mark = second.log_size()
    assert second.ask({"op": "token"})["token"] == token
    assert demo.stats()["token_requests"] == 1
    assert WARNING not in second.log_since(mark)
    # and a token written now goes to the new master
    sentinel.master.client().flushall()
    hosts.prepare([first, second], hosts_env(sentinel.connection()))
    renewed = first.ask({"op": "token"})["token"]
    assert demo.stats()["token_requests"] == 2  # nothing in Redis, none on the new host caches
    assert second.ask({"op": "token"})["token"] == renewed
    assert demo.stats()["token_requests"] == 2
    assert token_keys(sentinel.master)


def test_the_triggerer_reads_the_token_through_the_sentinel_with_redis_asyncio(
    demo, acme, sentinel, hosts, monkeypatch
):
    [worker] = hosts.workers(hosts=1, processes=1)
    hosts.prepare([worker], hosts_env(sentinel.connection()))
    token = worker.ask({"op": "token"})["token"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", sentinel.connection())
    monkeypatch.setenv(SHARED_ENV, SHARED_CONN_ID)
    shared_conn.reset()
    try:  # this process is the triggerer's host: its own (empty) process and host caches
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
        store = shared_conn.shared_store(SHARED_CONN_ID, lambda: None)
        assert store is not None and store._client is None  # only redis.asyncio was used
    finally:
        shared_conn.reset()
    assert event["status"] == "success" and event["response"]["status"] == 200
    assert demo.api_log[-1]["headers"]["Authorization"] == f"Bearer {token}"
    assert demo.stats()["token_requests"] == 1


def test_a_sentinel_that_is_down_is_passed_over_for_the_next_one(demo, acme, sentinel, hosts):
    """host:port names a sentinel that is not running; extra sentinel_hosts names the live one."""
    first, second = hosts.workers(hosts=2, processes=1)
    connection = sentinel.connection(port=free_port(), sentinel_hosts=[f"127.0.0.1:{sentinel.sentinel.port}"])
    hosts.prepare([first, second], hosts_env(connection))
    marks = [first.log_size(), second.log_size()]
    token = first.ask({"op": "token"})["token"]
    assert second.ask({"op": "token"})["token"] == token
    assert demo.stats()["token_requests"] == 1
    assert token_keys(sentinel.master)
    assert WARNING not in first.log_since(marks[0]) + second.log_since(marks[1])


def test_a_wrong_sentinel_password_skips_the_shared_cache_with_one_warning(demo, acme, sentinel, hosts):
    first, second = hosts.workers(hosts=2, processes=1)
    wrong = json.loads(sentinel.connection())
    wrong["extra"]["sentinel_password"] = "not-the-sentinel-pass-93e1"
    hosts.prepare([first, second], hosts_env(json.dumps(wrong)))
    marks = [first.log_size(), second.log_size()]
    results = hosts.ask_all([first, second], {"op": "run", "start": time.time() + 0.2, "count": 3})
    for result in results:
        assert result["statuses"] == {"200": 3}, result  # Redis failing never fails a task
    assert demo.stats()["token_requests"] == 2  # one per host: the host caches still work
    assert not token_keys(sentinel.master)
    for worker, mark in zip([first, second], marks, strict=True):
        logged = worker.log_since(mark)
        assert logged.count(WARNING) == 1, logged
        assert "master 'mymaster' of sentinel 127.0.0.1:" in logged, logged
        for secret in ("not-the-sentinel-pass-93e1", SENTINEL_PASSWORD, REDIS_PASSWORD):
            assert secret not in logged


def test_a_process_connected_before_the_failover_reaches_the_new_master(demo, acme, sentinel, hosts):
    """A long-running worker keeps its connection pool across the failover. Redis closes the clients of
    a master it demotes, so the worker's next command reconnects through the sentinel: the token it
    renews goes to the new master, where another host reads it."""
    first, second = hosts.workers(hosts=2, processes=1)
    env = {**hosts_env(sentinel.connection()), "AIRFLOW__CUSTOM_TOKEN__CACHE_RECHECK": "0"}
    hosts.prepare([first], env)
    first.ask({"op": "token"})
    [key] = wait_until(lambda: token_keys(sentinel.replica), "the replica has the token entry")
    old = sentinel.master
    sentinel.failover()
    wait_until(lambda: old.client().info("replication").get("role") == "slave", "the old master demoted")
    sentinel.master.client().delete(key)  # as `invalidate` does: every process must fetch anew
    wait_until(lambda: not token_keys(old), "the old master has replicated the delete")
    mark = first.log_size()
    result = first.ask({"op": "run", "count": 3})
    assert result["statuses"] == {"200": 3}, result
    assert demo.stats()["token_requests"] == 2
    [renewed] = result["tokens"]
    assert token_keys(sentinel.master), "the renewed token is in the new master"
    assert WARNING not in first.log_since(mark)
    hosts.prepare([second], env)
    assert second.ask({"op": "token"})["token"] == renewed
    assert demo.stats()["token_requests"] == 2
