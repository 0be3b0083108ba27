"""The admin command (issue 21) through the real command line: `python -m airflow_custom_token` on every
release and `airflow custom-token` (Airflow 3.2+), against the demo API, a host cache and a live Redis.

Each command runs in a fresh interpreter, as an admin runs it on a host: the account's `AIRFLOW_CONN_*`,
the host cache directory and `[custom_token] shared_cache_conn_id` are those of the tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_custom_token.cache import shared_conn
from airflow_custom_token.cache.process import TokenCache
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.cluster import SHARED_CONN_ID, SHARED_ENV, RedisServer
from tests.conftest import demo_extra
from tests.servers.test_refresh_tokens import rotating_extra

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not RedisServer.available(), reason="redis-server is not installed: run scripts/install-redis"
    ),
]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def host(
    demo: DemoServer, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This host's configuration, in this process and for the commands: two accounts, a host cache,
    the shared cache on an empty Redis."""
    redis_server.client().flushall()
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],  # this process's: one host
        "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(tmp_path / "cache"),
        "AIRFLOW_CONN_ACME": json.dumps(
            {"conn_type": "custom_token", "host": demo.url, "login": "dev", "password": "dev-secret",
             "extra": demo_extra(demo, test_endpoint="/api/v1/whoami")}
        ),
        "AIRFLOW_CONN_ROTATING": json.dumps(
            {"conn_type": "custom_token", "host": demo.url, "login": "dev", "password": "dev-secret",
             "extra": rotating_extra(demo)}
        ),
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}": redis_server.connection(),
        SHARED_ENV: SHARED_CONN_ID,
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shared_conn.reset()
    yield env
    shared_conn.reset()


def command(host: dict[str, str], *args: str, airflow: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    environment.update(host)
    argv = (
        [AIRFLOW, "custom-token", *args] if airflow else [sys.executable, "-m", "airflow_custom_token", *args]
    )
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=180, check=False)


def secrets_of(demo: DemoServer) -> list[str]:
    tokens = [entry["headers"].get("Authorization", "").rpartition(" ")[2] for entry in demo.api_log]
    return [t for t in tokens if t] + ["dev-secret"]


def test_status_names_the_tiers_lifetimes_and_refresh_tokens_never_a_value(demo, host):
    CustomTokenHook("acme").run("/api/v1/whoami")
    CustomTokenHook("rotating").run("/api/v1/whoami")
    done = command(host, "status")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (
        "acme: acme (integration key acme)" in out and "rotating: rotating (integration key rotating)" in out
    )
    acme = out.split("rotating:")[0]
    assert "host:    a token, expires in 59m" in acme and "shared:  a token, expires in 59m" in acme
    assert "no lease" in acme and "refresh token" not in acme
    rotating = out.split("rotating:")[1]
    assert "refresh token stored (expires in 23h" in rotating, rotating  # the answer's refresh_expires_in
    for secret in secrets_of(demo):
        assert secret not in out + done.stderr


def test_invalidate_drops_the_token_on_this_host_and_in_redis_and_the_next_call_fetches(demo, host):
    hook = CustomTokenHook("acme")
    hook.run("/api/v1/whoami")
    assert demo.stats()["token_requests"] == 1
    done = command(host, "invalidate", "acme")
    assert done.returncode == 0, done.stderr
    assert (
        "acme: token (its refresh token kept) dropped from this process, this host's cache, Redis."
        in done.stdout
    )
    assert "within cache_recheck (30 s)" in done.stdout
    after = command(host, "status", "acme").stdout
    assert "host:    no token" in after and "shared:  no token" in after
    from airflow_custom_token.cache import PROCESS_CACHE

    PROCESS_CACHE.clear()  # a worker's process past cache_recheck
    hook.run("/api/v1/whoami")
    assert demo.stats()["token_requests"] == 2


def test_a_worker_process_honours_an_invalidation_within_cache_recheck(demo, host, monkeypatch):
    """The worker keeps its token in memory; once cache_recheck has passed it asks Redis, finds nothing
    and fetches a new token (once, under the lease). The invalidation is another process's (a fresh
    `TokenCache`: the admin command's), so this process's memory is not touched by it."""
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__CACHE_RECHECK", "1")
    hook = CustomTokenHook("acme")
    first, started = hook.get_token(), time.monotonic()
    source = hook.source
    TokenCache().discard(source.key, None, source.store, source.shared())  # as `invalidate` elsewhere
    assert time.monotonic() - started < 1 and hook.get_token() == first, "within cache_recheck: kept"
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    assert hook.get_token() != first
    assert demo.stats()["token_requests"] == 2


def test_invalidate_with_the_refresh_token_drops_it_too(demo, host):
    hook = CustomTokenHook("rotating")
    hook.run("/api/v1/whoami")
    done = command(host, "invalidate", "rotating", "--refresh-token")
    assert "rotating: token and refresh token dropped from" in done.stdout
    assert "refresh token" not in command(host, "status", "rotating").stdout.split("host:")[1]


def test_check_lists_the_steps_with_their_timings_and_names_the_failing_one(demo, host):
    done = command(host, "check", "acme")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = ("configuration", "token request", "test endpoint")
    lines = [line for line in done.stdout.splitlines() if line.startswith(steps)]  # Airflow may log too
    assert [line.split()[:2] for line in lines] == [
        ["configuration", "ok"],
        ["token", "request"],
        ["test", "endpoint"],
    ]
    assert "ok" in lines[1] and "Token obtained from" in lines[1] and " ms " in lines[1]
    assert "GET /api/v1/whoami answered 200." in lines[2]
    broken = dict(host, AIRFLOW_CONN_ACME=host["AIRFLOW_CONN_ACME"].replace("dev-secret", "wrong-secret"))
    failed = command(broken, "check", "acme")
    assert failed.returncode == 1
    assert "token request  FAILED" in failed.stdout and "401" in failed.stdout
    assert "wrong-secret" not in failed.stdout + failed.stderr


def test_an_unknown_connection_is_an_error_that_names_it(host):
    done = command(host, "check", "nope")
    assert done.returncode == 1
    assert "nope" in done.stdout + done.stderr


@pytest.mark.airflow_cli
def test_the_same_verbs_as_airflow_custom_token(demo, host):
    from airflow_custom_token.compat import AIRFLOW_VERSION

    if AIRFLOW_VERSION < (3, 2, 0):
        pytest.skip("provider-level CLI commands exist since Airflow 3.2")
    done = command(host, "check", "acme", airflow=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "GET /api/v1/whoami answered 200." in done.stdout
    helptext: Any = command(host, "--help", airflow=True).stdout
    assert "status" in helptext and "invalidate" in helptext and "check" in helptext
