"""Which Redis deployment a `redis` connection's extra names, and the errors a user sees for a wrong one."""

from __future__ import annotations

import pytest

from airflow_custom_token.cache.redis_deployments import CLUSTER, SENTINEL, STANDALONE, read_deployment


def test_no_extra_is_one_server() -> None:
    deployment = read_deployment({}, "redis.internal", 6379, 3)
    assert deployment.kind == STANDALONE
    assert deployment.describe("redis.internal", 6379, 3) == "redis.internal:6379/3"


def test_cluster_as_the_redis_provider_writes_it() -> None:
    for value in (True, "true", "True", "1", "yes"):
        assert read_deployment({"cluster": value}, "node-1", 7000, 0).kind == CLUSTER
    assert read_deployment({"cluster": "false"}, "node-1", 7000, 0).kind == STANDALONE


def test_sentinels_from_host_port_and_sentinel_hosts_without_repeats() -> None:
    deployment = read_deployment(
        {
            "sentinel": True,
            "sentinel_master": "tokens",
            "sentinel_hosts": ["s2:26379", "s1:26379", " s3:26380 "],
            "sentinel_password": "sentinel-secret-1",
        },
        "s1",
        26379,
        0,
    )
    assert deployment.kind == SENTINEL and deployment.master == "tokens"
    assert deployment.sentinels == (("s1", 26379), ("s2", 26379), ("s3", 26380))
    assert "sentinel-secret-1" not in repr(deployment)
    assert deployment.describe("s1", 26379, 0) == "master 'tokens' of sentinel s1:26379,s2:26379,s3:26380/0"
    assert read_deployment({"sentinel": "yes", "sentinel_hosts": "a:1,b:2"}, "a", 1, 0).sentinels == (
        ("a", 1),
        ("b", 2),
    )


@pytest.mark.parametrize(
    ("extra", "db", "message"),
    [
        (
            {"cluster": True, "sentinel": True},
            0,
            "extra cluster and sentinel: expected at most one of them to be true, found both",
        ),
        ({"cluster": True}, 3, "extra db: a Redis Cluster has only db 0, found 3"),
        (
            {"sentinel": True, "sentinel_hosts": ["s2"]},
            0,
            "extra sentinel_hosts: expected \"host:port\", found 's2'",
        ),
        ({"sentinel": True, "sentinel_hosts": {"s2": 1}}, 0, 'expected a list of "host:port", found dict'),
        ({"sentinel": True, "sentinel_master": 7}, 0, "extra sentinel_master: expected a name, found int"),
    ],
)
def test_a_wrong_extra_names_it(extra: dict[str, object], db: int, message: str) -> None:
    with pytest.raises(ValueError, match=r"^extra ") as raised:
        read_deployment(extra, "redis.internal", 6379, db)
    assert message in str(raised.value)
