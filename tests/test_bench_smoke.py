"""The bench works: `python -m bench --quick` runs every scenario and reports every row.

A smoke run with tiny N: it proves the bench's servers, scenario processes, table and JSON work. It
asserts what was produced, never how fast anything was (the figures of a quick run mean nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = [
    "requests.Session, fixed header",
    "requests.Session, env read once",
    "HttpHook.run, header passed",
    "CustomTokenHook.run",
    "CustomTokenHook.get_conn() session",
    "urllib3.PoolManager",
    "http.client, one connection",
]
HEADINGS = ["1. Per-request cost", "2. Token requests", "3. get_token()", "4. Import time", "5. Deferrable"]
IMPORTED = ["airflow_custom_token.operators.http", "airflow_custom_token.sensors.http"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    results_dir = tmp_path_factory.mktemp("bench-results")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    [path] = results_dir.glob("run-*-quick.json")
    return done.stdout, json.loads(path.read_text())


def test_table_has_every_section_and_row(quick_run):
    table, _ = quick_run
    for heading in HEADINGS:
        assert heading in table
    for client in CLIENTS:
        assert f"\n{client}  " in table
    for module in IMPORTED:
        assert f"\n{module}  " in table
    assert "warm process cache" in table and "warm host cache" in table
    assert "\nTargets\n" in table


def test_json_describes_the_machine_and_the_run(quick_run):
    _, results = quick_run
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"]
    assert machine["packages"]["apache-airflow"] and machine["packages"]["requests"]
    assert results["quick"] is True and results["timestamp"]
    assert results["server"]["kind"] == "lean"


def test_every_client_sent_authenticated_requests(quick_run):
    _, results = quick_run
    rows = {row["client"]: row for row in results["per_request"]["rows"]}
    assert list(rows) == CLIENTS
    for row in rows.values():
        assert row["wall_us"] > 0 and row["cpu_us"] > 0
    assert rows["requests.Session, fixed header"]["cpu_ratio"] == 1.0
    # behaviour, not speed: the hook reads the environment once, and honours HTTP_PROXY
    assert rows["CustomTokenHook.run"]["env_lookups_per_request"] == 0
    proxy = results["per_request"]["proxy_check"]
    assert proxy["CustomTokenHook.run"] == proxy["requests"]


def test_token_requests_counted_by_the_server(quick_run):
    _, results = quick_run
    [row] = results["token_requests"]
    assert row["data_requests"] > 0 and row["token_requests"] >= 1
    assert row["statuses"].keys() == {"200"}


def test_get_token_imports_and_deferrable_figures(quick_run):
    _, results = quick_run
    get_token = results["get_token"]
    assert get_token["process_cache_us"] > 0 and get_token["host_cache_us"] > 0
    assert get_token["first_call"]["first_us"] > 0
    assert [row["module"] for row in results["imports"]] == IMPORTED
    ours = [row for row in results["deferrable"] if row["trigger"] == "CustomTokenHttpSensorTrigger"]
    theirs = [row for row in results["deferrable"] if row["trigger"] == "HttpSensorTrigger"]
    [deferred], [airflow] = ours, theirs  # the http provider's trigger in the same run, for comparison
    assert deferred["token_requests"] >= 1
    assert sum(deferred["outcomes"].values()) == deferred["triggers"]
    assert airflow["outcomes"] == {"success 200": airflow["triggers"]}
    assert deferred["cpu_per_poke_us"] > 0 and airflow["cpu_per_poke_us"] > 0
    assert {target["name"] for target in results["targets"]} >= {
        "get_token(), warm process cache",
        "get_token(), warm host cache",
        "CustomTokenHook.run vs the floor",
        "CustomTokenHook.get_conn() session vs the floor",
        "Deferrable: CPU per poke vs HttpSensorTrigger",
        "Deferrable: longest callback of CustomTokenHttpSensorTrigger",
    }
