"""The shared token cache on a Redis Cluster: 3 masters on 127.0.0.1 (`--cluster-enabled yes`), joined by
`redis-cli --cluster create`, and a `redis` connection with extra `cluster: true` to one of them.

Before, a plain client on a cluster node got MOVED for every key of another node's slots: the shared
cache failed there, and 4 hosts made 4 token requests. With `cluster: true` they make one, and an
entry's token and lease share a slot (a hash tag in their names).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_custom_token.cache import shared_conn
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.cluster import SHARED_CONN_ID, SHARED_ENV, Cluster, RedisServer, hosts_env
from tests.redis_deployments import ClusterNodes
from tests.triggering import run_trigger

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not RedisServer.available(), reason="redis-server is not installed: run scripts/install-redis"
    ),
]
WARNING = "Custom token shared cache: Redis"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    with ClusterNodes(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis(nodes: ClusterNodes, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClusterNodes]:
    """An empty cluster, named as the shared cache in this process too."""
    nodes.flushall()
    monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", nodes.connection())
    monkeypatch.setenv(SHARED_ENV, SHARED_CONN_ID)
    shared_conn.reset()
    yield nodes
    shared_conn.reset()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("hosts"), hosts=4, processes=2) as cluster:
        yield cluster


def test_four_hosts_on_a_three_master_cluster_make_one_token_request(demo, acme, redis, hosts):
    demo.set_token_delay(1.0)  # a slow identity provider: everybody arrives while the token is requested
    workers = hosts.workers(hosts=4, processes=2)
    hosts.prepare(workers, hosts_env(redis.connection()))
    marks = [w.log_size() for w in workers]
    results = hosts.ask_all(workers, {"op": "run", "start": time.time() + 0.3, "count": 3})
    for result in results:
        assert result["statuses"] == {"200": 3}, result
    assert demo.stats()["token_requests"] == 1
    assert len({token for r in results for token in r["tokens"]}) == 1
    assert not any(WARNING in w.log_since(m) for w, m in zip(workers, marks, strict=True))


def test_an_entry_and_its_lease_hash_to_one_slot(demo, acme, redis):
    hook = CustomTokenHook(acme)
    hook.get_token()
    store = hook.source.shared()
    assert store is not None
    token_name = store.name(hook.account.cache_key)
    lease_name = store.name(hook.account.cache_key, "lease")
    assert token_name.startswith("airflow-custom-token:{acme-") and token_name.endswith("}:token")
    client = redis.client()
    assert client.keyslot(token_name) == client.keyslot(lease_name)
    [stored] = [k for k in redis.scan() if k.endswith(b":token")]
    assert stored == token_name.encode()
    # a script given both keys runs: Redis refuses keys of two slots (CROSSSLOT)
    assert client.eval("return redis.call('EXISTS', KEYS[1], KEYS[2])", 2, token_name, lease_name) == 1


def test_the_triggerer_reads_the_token_from_the_cluster_with_redis_asyncio(demo, acme, redis, hosts):
    [worker] = hosts.workers(hosts=1, processes=1)
    hosts.prepare([worker], hosts_env(redis.connection()))
    token = worker.ask({"op": "token"})["token"]
    # this process is the triggerer's host: its own (empty) process and host caches
    event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
    assert event["status"] == "success" and event["response"]["status"] == 200
    assert demo.api_log[-1]["headers"]["Authorization"] == f"Bearer {token}"
    assert demo.stats()["token_requests"] == 1
    store = shared_conn.shared_store(SHARED_CONN_ID, lambda: None)
    assert store is not None and store._client is None  # only redis.asyncio was used


def test_a_cluster_whose_node_is_gone_is_skipped_with_one_warning(demo, acme, redis, monkeypatch, caplog):
    """The connection names a node that is not running: the task gets its token; one warning."""
    from tests.serving import free_port

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}",
        redis.connection().replace(str(redis.nodes[0].port), str(free_port())),
    )
    shared_conn.reset()
    began = time.monotonic()
    with caplog.at_level("WARNING"):
        assert CustomTokenHook(acme).run("/api/v1/whoami").status_code == 200
    assert time.monotonic() - began < 3.0
    assert caplog.text.count(WARNING) == 1 and "cluster 127.0.0.1:" in caplog.text
    assert redis.password not in caplog.text
