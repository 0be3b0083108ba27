"""The cluster promise on a real CeleryExecutor cluster: one token request for a whole DAG run.

`tests.celery_cluster.CeleryCluster` starts Airflow as teams run it (api-server, scheduler, dag processor,
a triggerer and two Celery workers on a Redis broker), each worker and the triggerer with its own host
cache, as if on its own machine. The DAG runs 16 mapped `CustomTokenHttpOperator` tasks and 8 deferrable
sensors (polled from the triggerer) on one connected account; the demo API counts the tokens it issues.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.celery_cluster import MAPPED_TASKS, SENSORS, TRIGGERER, WORKERS, CeleryCluster, RunResult
from tests.cluster import RedisServer
from tests.paths import SCRIPTS

pytestmark = [
    pytest.mark.airflow_cli,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not RedisServer.available(), reason="needs redis-server (scripts/install-redis)"),
    pytest.mark.skipif(
        importlib.util.find_spec("airflow.providers.celery") is None,
        reason="needs the Celery provider (the test extra installs it)",
    ),
]


def run_once(root: Path, *, shared: bool) -> tuple[RunResult, dict[str, bool]]:
    """One DAG run on a fresh cluster; and which hosts' caches hold a token afterwards."""
    with CeleryCluster(root, shared=shared) as cluster:
        result = cluster.run_dag()
        if result.state != "success" or set(result.task_states.values()) != {"success"}:
            pytest.fail(f"the DAG run ended {result.state}: {result.task_states}\n{cluster.tails()}")
        # Nothing the cluster wrote holds the token or the client secret in clear text: logs, the
        # metadata database, the host caches, the broker's messages, the shared cache.
        assert len(cluster.secrets()) == 1 + result.token_requests
        assert cluster.leaks() == []
    holding = {
        host: any((root / host / "token-cache").glob("acme-*.token")) for host in (*WORKERS, TRIGGERER)
    }
    return result, holding


def test_one_token_request_for_the_whole_dag_run_with_the_shared_cache(tmp_path: Path) -> None:
    result, holding = run_once(tmp_path, shared=True)

    assert len(result.task_states) == MAPPED_TASKS + SENSORS
    assert result.hosts("call_api") == set(WORKERS), "both workers ran API calls"
    assert result.token_requests == 1
    assert result.authenticated == MAPPED_TASKS + SENSORS  # each call and each sensor's poll, one token
    # Each host's cache was filled from Redis: two workers and the triggerer used the one token.
    assert holding == {host: True for host in (*WORKERS, TRIGGERER)}


def test_without_the_shared_cache_each_host_requests_its_own_token(tmp_path: Path) -> None:
    result, holding = run_once(tmp_path, shared=False)

    assert result.hosts("call_api") == set(WORKERS), "both workers ran API calls"
    assert holding == {host: True for host in (*WORKERS, TRIGGERER)}
    # One per host (its processes share its host cache), never one per task.
    assert result.token_requests == len(holding) == 3
    assert result.authenticated == MAPPED_TASKS + SENSORS


def _processes_of(home: Path) -> list[int]:
    """The processes running with `AIRFLOW_HOME=home` (Linux's /proc)."""
    marker = f"AIRFLOW_HOME={home}\0".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return pids


def test_scripts_cluster_runs_the_dag_shows_the_ui_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The README's "see it at scale" step, as a user runs it in a terminal."""
    root = tmp_path / "cluster"
    process = subprocess.Popen(
        [str(SCRIPTS / "cluster"), "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops the cluster."):
                break
        printed = "\n".join(lines)
        assert lines and lines[-1].startswith("Ctrl-C"), f"scripts/cluster stopped early:\n{printed}"
        ui = re.search(r"^Airflow UI: +(http://127\.0\.0\.1:\d+)", printed, re.M)
        assert ui is not None, printed
        with urllib.request.urlopen(f"{ui[1]}/api/v2/monitor/health", timeout=10) as answer:
            health = json.load(answer)
        assert {health[part]["status"] for part in ("scheduler", "triggerer", "dag_processor")} == {"healthy"}
        assert re.search(
            r"^DAG custom_token_cluster: success in \d+ s; 24 task instances on worker-a, worker-b; "
            r"the demo API issued 1 token\(s\) and authenticated 24 requests$",
            printed,
            re.M,
        ), printed
        assert _processes_of(root / "airflow"), "the components run with the cluster's AIRFLOW_HOME"

        process.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:  # the test failed before: Ctrl-C, so that the cluster stops too
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, rest
    assert "stopping ..." in rest
    assert _processes_of(root / "airflow") == []
