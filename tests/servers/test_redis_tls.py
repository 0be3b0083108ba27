"""The shared token cache over TLS: a real `redis-server --tls-port` on 127.0.0.1, certificates made here.

A CA, a server certificate (127.0.0.1, localhost) and a client certificate (tests/redis_deployments.py);
one server requires client certificates (`--tls-auth-clients yes`), one does not. Every host names a
`redis` connection with extra `ssl`, `ssl_ca_certs` (and `ssl_certfile`, `ssl_keyfile`) in
`[custom_token] shared_cache_conn_id`, as a user would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from airflow_custom_token.cache import shared_conn
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.cluster import SHARED_CONN_ID, SHARED_ENV, Cluster, RedisServer, hosts_env
from tests.redis_deployments import Certs, TlsRedisServer, make_certs, tls_unsupported
from tests.triggering import run_trigger

WHY_NOT = "redis-server is not installed: run scripts/install-redis" if not RedisServer.available() else None
WHY_NOT = WHY_NOT or tls_unsupported()
pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]
WARNING = "Custom token shared cache: Redis"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsRedisServer]:
    """A TLS-only Redis that requires a client certificate signed by the CA."""
    with TlsRedisServer(tmp_path_factory.mktemp("strict"), certs, auth_clients=True) as server:
        yield server


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsRedisServer]:
    """A TLS-only Redis that asks for no client certificate."""
    with TlsRedisServer(tmp_path_factory.mktemp("lenient"), certs, auth_clients=False) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster"), hosts=2, processes=1) as hosts:
        yield hosts


@pytest.mark.parametrize(
    ("server", "client_cert"),
    [("strict", True), ("lenient", False)],
    ids=["client certificate required", "server certificate only"],
)
def test_a_token_fetched_by_one_host_is_read_by_the_other_over_tls(
    demo, acme, cluster, server, client_cert, request
):
    redis: TlsRedisServer = request.getfixturevalue(server)
    redis.client().flushall()
    first, second = cluster.workers(hosts=2, processes=1)
    cluster.prepare([first, second], hosts_env(redis.connection(client_cert=client_cert)))
    marks = [first.log_size(), second.log_size()]
    token = first.ask({"op": "token"})["token"]
    assert second.ask({"op": "token"})["token"] == token
    assert demo.stats()["token_requests"] == 1  # the second host read it from Redis, over TLS
    keys = [k for k in redis.scan() if k.endswith(b":token")]
    assert len(keys) == 1 and keys[0].startswith(b"airflow-custom-token:acme-")  # names as without TLS
    assert WARNING not in first.log_since(marks[0]) + second.log_since(marks[1])


def test_the_triggerer_reads_the_token_over_tls_with_redis_asyncio(demo, acme, cluster, strict, monkeypatch):
    strict.client().flushall()
    [worker] = cluster.workers(hosts=1, processes=1)
    cluster.prepare([worker], hosts_env(strict.connection()))
    token = worker.ask({"op": "token"})["token"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", strict.connection())
    monkeypatch.setenv(SHARED_ENV, SHARED_CONN_ID)
    shared_conn.reset()
    try:  # this process is the triggerer's host: its own (empty) process and host caches
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
    finally:
        shared_conn.reset()
    assert event["status"] == "success" and event["response"]["status"] == 200
    assert demo.api_log[-1]["headers"]["Authorization"] == f"Bearer {token}"
    assert demo.stats()["token_requests"] == 1


def test_without_the_client_certificate_the_shared_cache_is_skipped_with_one_warning(
    demo, acme, cluster, strict
):
    strict.client().flushall()
    workers = cluster.workers(hosts=2, processes=1)
    cluster.prepare(workers, hosts_env(strict.connection(client_cert=False)))
    marks = [w.log_size() for w in workers]
    results = cluster.ask_all(workers, {"op": "run", "start": time.time() + 0.2, "count": 4})
    for result in results:
        assert result["statuses"] == {"200": 4}, result  # Redis failing never fails a task
        assert result["slowest"] < 1.5, result  # refused at once: no retry
    assert demo.stats()["token_requests"] == 2  # one per host: the host caches still work
    assert not strict.scan()
    for worker, mark in zip(workers, marks, strict=True):
        logged = worker.log_since(mark)
        assert logged.count(WARNING) == 1, logged  # once per process
        assert "no client certificate is set" in logged and "ssl_certfile" in logged, logged
        assert strict.password not in logged


def test_connection_extra_is_read_as_the_redis_provider_writes_it(strict):
    from airflow_custom_token.cache.redis_client import RedisParams

    class Conn:
        conn_id, conn_type, login = SHARED_CONN_ID, "redis", None
        host, port, password = "127.0.0.1", strict.port, strict.password
        extra = json.loads(strict.connection())["extra"]

    options = RedisParams.from_airflow(Conn()).client_options()
    assert options["ssl"] is True and options["ssl_cert_reqs"] == "required"
    assert options["ssl_ca_certs"] == str(strict.certs.ca)
    assert options["ssl_certfile"] == str(strict.certs.client_cert)
    assert options["ssl_keyfile"] == str(strict.certs.client_key)
