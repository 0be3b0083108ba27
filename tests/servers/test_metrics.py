"""Metrics (issue 21) over real StatsD: Airflow's own metrics client, `[metrics] statsd_on`, sending UDP
datagrams to a listener on 127.0.0.1 that parses them, as a StatsD server would.

Each case runs a plain Python script in a fresh interpreter (as a user's script or a task process
does: Airflow's metrics client is set up once per process from `[metrics]`), against the demo API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_custom_token.demo import DemoServer
from tests.conftest import demo_extra

pytestmark = pytest.mark.timeout(180)

pytest.importorskip(
    "statsd", reason="Airflow's StatsD backend needs the statsd package (apache-airflow[statsd])"
)


class StatsdListener:
    """A UDP socket on 127.0.0.1 that keeps every StatsD line it receives (`name:value|type`)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def counters(self, prefix: str = "airflow.custom_token.") -> Counter[str]:
        """The counters received, summed by name (without `prefix`)."""
        counts: Counter[str] = Counter()
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("c") and name.startswith(prefix):
                counts[name.removeprefix(prefix)] += int(value)
        return counts

    def timers(self, prefix: str = "airflow.custom_token.") -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("ms") and name.startswith(prefix):
                found.setdefault(name.removeprefix(prefix), []).append(float(value))
        return found


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


def run_script(code: str, demo: DemoServer, statsd: StatsdListener | None, tmp_path: Path, **env: str) -> str:
    """Run `code` in a fresh interpreter with the demo's `acme` connection and `[metrics]` pointed at
    `statsd` (None: metrics off); return its output."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    environment.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW_CONN_ACME=json.dumps(
            {
                "conn_type": "custom_token",
                "host": demo.url,
                "login": "dev",
                "password": "dev-secret",
                "extra": demo_extra(demo),
            }
        ),
        AIRFLOW__CUSTOM_TOKEN__CACHE_DIR=str(tmp_path / "cache"),
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
    )
    environment.update(env)
    if statsd is not None:
        environment.update(
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(statsd.port),
            AIRFLOW__METRICS__STATSD_PREFIX="airflow",
        )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


SCRIPT = """
import urllib.request
from airflow_custom_token import metrics
from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.hooks.custom_token import CustomTokenHook

hook = CustomTokenHook("acme")
for _ in range(5):  # one token request, then four process-cache hits
    hook.run("/api/v1/whoami")
hook.invalidate_token()  # an invalidation: the next call renews
hook.run("/api/v1/whoami")
revoke = urllib.request.Request(hook.account.base_url + "/_control/revoke", b"{}", method="POST")
urllib.request.urlopen(revoke)  # every token the demo issued is revoked
hook.run("/api/v1/whoami")  # 401 (refresh_on): discarded, renewed, sent again
PROCESS_CACHE.clear()  # as a new process of this host: the host cache has it
hook.run("/api/v1/whoami")
metrics.flush()
print("done")
"""


def test_token_requests_cache_hits_and_renewals_arrive_over_statsd(demo, statsd, tmp_path):
    assert run_script(SCRIPT, demo, statsd, tmp_path).strip().endswith("done")
    assert demo.stats()["token_requests"] == 3
    counts = statsd.counters()
    expected = {
        "token_request.ok.acme": 3,
        "cache.miss.acme": 3,
        "refresh.invalidation.acme": 1,
        "refresh.status.acme": 1,
        "cache.hit.host.acme": 1,
    }
    assert {name: counts[name] for name in expected} == expected, statsd.lines
    assert counts["cache.hit.process.acme"] >= 4  # the warm calls (a retry after the 401 asks too)
    assert "token_request.failed.acme" not in counts and "refresh.expiry.acme" not in counts
    [timings] = statsd.timers().values()
    assert len(timings) == 3 and all(0 < ms < 10_000 for ms in timings)
    assert set(statsd.timers()) == {"token_request.duration.acme"}


def test_a_failed_token_request_and_api_retries_are_counted(demo, statsd, tmp_path):
    code = """
    from airflow_custom_token.errors import CustomTokenError, TokenRequestError
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    try:
        CustomTokenHook("wrong").get_token()
    except TokenRequestError as exc:
        print("refused:", exc.status)
    try:
        CustomTokenHook("acme").run("/api/v1/status/503")  # retried once (request_retries), then fails
    except CustomTokenError as exc:
        print("api:", type(exc).__name__)
    """
    conn = {"conn_type": "custom_token", "host": demo.url, "login": "dev", "password": "not-the-secret"}
    env = {
        "AIRFLOW_CONN_WRONG": json.dumps({**conn, "extra": demo_extra(demo)}),
        "AIRFLOW_CONN_ACME": json.dumps(
            {**conn, "password": "dev-secret", "extra": demo_extra(demo, request_retries=1)}
        ),
    }
    out = run_script(code, demo, statsd, tmp_path, **env)
    assert "refused: 401" in out and "api: RequestError" in out, out
    counts = statsd.counters()
    assert counts["token_request.failed.acme"] == 1  # 401 is not retried
    assert counts["api_retry.acme"] == 1
    assert counts["token_request.ok.acme"] == 1  # the second connection's


def test_no_datagram_and_no_metrics_client_when_metrics_are_off(demo, statsd, tmp_path):
    code = """
    import sys
    from airflow_custom_token import metrics
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    hook = CustomTokenHook("acme")
    for _ in range(3):
        hook.run("/api/v1/whoami")
    metrics.flush()
    print("enabled:", metrics.enabled(), "statsd imported:", "statsd" in sys.modules)
    """
    env: dict[str, Any] = {"AIRFLOW__METRICS__STATSD_PORT": str(statsd.port)}  # pointed at it, but off
    out = run_script(code, demo, None, tmp_path, **env)
    assert "enabled: False statsd imported: False" in out
    assert statsd.lines == []
