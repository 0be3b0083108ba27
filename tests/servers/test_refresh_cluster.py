"""Single-use refresh tokens across a cluster (issue 20): never two uses of one refresh token.

The demo API's rotating endpoint (`/oauth2/v1/rotating`) answers a new refresh token on every refresh and
refuses a reused one with 400 (revoking its whole family). Hosts are simulated by processes with their own
AIRFLOW_HOME and host cache (tests/cluster.py), each running 4 threads of `hook.run` in a loop, while the
access token expires every few seconds: every renewal must be one refresh, by one of them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pytest

from airflow_custom_token.cache import shared_conn
from airflow_custom_token.demo import DemoServer
from tests.cluster import SHARED_CONN_ID, SHARED_ENV, Cluster, RedisServer
from tests.servers.test_refresh_tokens import rotating_extra

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not RedisServer.available(), reason="redis-server is not installed: run scripts/install-redis"
    ),
]

LIFETIME = 3  # seconds an access token lives
MARGIN = 0.5  # renewed this long before it expires: every 2.5 s
RUN = 7.0  # seconds each thread calls the API


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cluster"), hosts=4, processes=4) as hosts:
        yield hosts


def environment(demo: DemoServer, redis: RedisServer | None) -> dict[str, str | None]:
    """Every host: one account seeded with a one-time consent's refresh token, and no other way to a token
    (no access_parameters): one refresh token used twice and the account is dead."""
    connection = {"conn_type": "custom_token", "host": demo.url, "login": "dev", "password": "dev-secret"}
    extra = rotating_extra(
        demo, access_parameters=None, access_auth="basic", initial_refresh_token=demo.consent("dev")
    )
    env: dict[str, str | None] = {
        "AIRFLOW_CONN_ACME": json.dumps({**connection, "extra": extra}),
        "AIRFLOW__CUSTOM_TOKEN__REFRESH_MARGIN": str(MARGIN),
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}": None if redis is None else redis.connection(),
        SHARED_ENV: None if redis is None else SHARED_CONN_ID,
    }
    return env


def check(demo: DemoServer, results: list[dict]) -> None:
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    stats = demo.stats()
    assert set(statuses) == {"200"}, statuses  # zero failed API calls
    assert stats["refreshes_rejected"] == 0 and stats["refresh_reuse"] == 0, stats  # zero rejected refreshes
    assert stats["rejected"] == 0, stats  # no API call with an expired or revoked token
    assert stats["token_requests"] == stats["refreshes"], (
        stats
    )  # every token from a refresh, the seed's first
    most = math.ceil(RUN / (LIFETIME - MARGIN)) + 1  # one refresh per access-token lifetime
    assert 2 <= stats["refreshes"] <= most, stats


def test_four_hosts_of_four_threads_share_each_rotation_through_redis(demo, redis, cluster):
    redis.client().flushall()
    shared_conn.reset()
    demo.set_lifetime(LIFETIME)
    workers = cluster.workers(hosts=4, processes=1)
    cluster.prepare(workers, environment(demo, redis))
    start = time.time() + 0.5
    results = cluster.ask_all(
        workers, {"op": "run", "threads": 4, "start": start, "until": start + RUN, "pause": 0.05}
    )
    check(demo, results)


def test_four_processes_of_one_host_share_each_rotation_through_the_host_cache(demo, cluster):
    demo.set_lifetime(LIFETIME)
    workers = cluster.workers(hosts=1, processes=4)
    cluster.prepare(workers, environment(demo, None))
    start = time.time() + 0.5
    results = cluster.ask_all(
        workers, {"op": "run", "threads": 4, "start": start, "until": start + RUN, "pause": 0.05}
    )
    check(demo, results)
