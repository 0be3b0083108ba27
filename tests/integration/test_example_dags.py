"""The example DAGs, run for real: `airflow dags test` in a fresh AIRFLOW_HOME against a demo API.

The connections are the ones `scripts/demo` exports (`airflow_custom_token.demo.connections.environment`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

import airflow_custom_token.demo.connections as example_dags
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.demo.server import ITEMS
from tests.airflow_names import xcom_return_values
from tests.paths import EXAMPLE_DAGS

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAGS_FOLDER = EXAMPLE_DAGS
DAG_IDS = {
    "example_custom_token_connected_accounts",
    "example_custom_token_url_parameter",
    "example_custom_token_paginated_export",
    "example_custom_token_job_sensor",
    "example_custom_token_asset_watcher",
    "example_custom_token_notifier",
    "example_custom_token_session_csrf",
    "example_custom_token_refresh_rotation",
    "example_custom_token_login_steps",
    "example_custom_token_jwt_assertion",
}


@dataclass
class AirflowHome:
    path: Path
    env: dict[str, str]
    demo: DemoServer

    @property
    def db(self) -> Path:
        return self.path / "airflow.db"

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def last_run(self, dag_id: str) -> tuple[str, dict[str, Any]]:
        """State and XCom return values (by task) of the DAG's latest run."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            run_id, state = conn.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            rows = xcom_return_values(conn, dag_id, run_id)
        return state, {task_id: json.loads(value) for task_id, value in rows}


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHome]:
    """A migrated SQLite AIRFLOW_HOME whose dags_folder is the package's example_dags, and a demo API."""
    home = tmp_path_factory.mktemp("airflow-home")
    with DemoServer() as demo:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(home / "token-cache"),
                **example_dags.environment(demo.url),
            }
        )
        airflow = AirflowHome(home, env, demo)
        migrated = airflow.run("db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        yield airflow


def dags_test(airflow: AirflowHome, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the DAG with `airflow dags test`; assert it succeeded; return its XComs by task."""
    before = airflow.demo.stats()
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf else [])
    result = airflow.run(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    state, xcoms = airflow.last_run(dag_id)
    assert state == "success", output[-5000:]
    after = airflow.demo.stats()
    assert after["rejected"] == before["rejected"], "no request may be rejected"
    assert after["authenticated"] > before["authenticated"]
    for token in tokens_sent(airflow.demo):
        assert token not in output, "a token appeared in airflow's output"
    return xcoms


def tokens_sent(demo: DemoServer) -> set[str]:
    """The tokens the API received (in the Authorization header, the access_token parameter, or the
    session cookie), and the CSRF tokens (an additional output)."""
    tokens = {entry["query"].get("access_token") for entry in demo.api_log}
    tokens |= {entry["headers"].get("Authorization", "").rpartition(" ")[2] for entry in demo.api_log}
    tokens |= {entry["headers"].get("Cookie", "").partition("session=")[2] for entry in demo.api_log}
    tokens |= {entry["headers"].get("X-CSRF-Token") for entry in demo.api_log}
    return {token for token in tokens if token}


# -- parsing (no subprocess) -----------------------------------------------------------------------


def test_example_dags_parse_and_hold_no_urls() -> None:
    from tests.airflow_names import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == DAG_IDS
    for path in DAGS_FOLDER.glob("example_*.py"):
        assert "://" not in path.read_text(), f"{path.name} must take its URLs from the connections"


def test_example_connections_use_one_integration() -> None:
    connections = example_dags.demo_connections("http://127.0.0.1:1")
    for account in ("dev", "qa", "prod"):
        body = connections[f"acme_{account}"]
        assert body["extra"] == {"integration_conn_id": "acme"}
        assert "host" not in body


# -- running them -----------------------------------------------------------------------------------


@pytest.mark.airflow_cli
def test_connected_accounts_by_param(airflow_home: AirflowHome) -> None:
    xcoms = dags_test(
        airflow_home, "example_custom_token_connected_accounts", {"profile": "PROD", "server": "eu-2"}
    )
    assert xcoms == {"whoami": {"account": "prod", "server": "eu-2"}}


@pytest.mark.airflow_cli
def test_url_parameter(airflow_home: AirflowHome) -> None:
    xcoms = dags_test(airflow_home, "example_custom_token_url_parameter")
    assert xcoms == {"echo": {"report": "daily", "access_token": "***"}}
    assert airflow_home.demo.api_log[-1]["account"] == "qa"  # the API did get the real token


@pytest.mark.airflow_cli
def test_paginated_export(airflow_home: AirflowHome) -> None:
    xcoms = dags_test(airflow_home, "example_custom_token_paginated_export")
    assert xcoms == {"export_items": ITEMS, "export_items_deferred": ITEMS}


@pytest.mark.airflow_cli
def test_job_sensor(airflow_home: AirflowHome) -> None:
    xcoms = dags_test(airflow_home, "example_custom_token_job_sensor", {"seconds": 8})
    assert xcoms["start_job"].startswith("job-")
    assert xcoms["wait_for_job"] == {"rows": 42}
    polls = [e for e in airflow_home.demo.api_log if e["path"] == f"/api/v1/jobs/{xcoms['start_job']}"]
    assert len(polls) >= 2  # running, ..., done: the sensor deferred again after its check said no


@pytest.mark.airflow_cli
def test_session_csrf(airflow_home: AirflowHome) -> None:
    demo = airflow_home.demo
    logins = demo.stats()["token_requests_by_path"].get("/session/v1/login", 0)

    xcoms = dags_test(airflow_home, "example_custom_token_session_csrf")

    [note] = xcoms["list_notes"]["notes"]
    assert note.startswith("exported ")
    assert xcoms == {
        "add_note": {"id": 1, "text": note},
        "list_notes": {"account": "demo", "notes": [note]},
        "list_notes_deferred": {"account": "demo", "notes": [note]},
        "echo_session": {"Cookie": "***", "X-CSRF-Token": "***"},  # what the API received, redacted
    }
    assert demo.stats()["token_requests_by_path"]["/session/v1/login"] - logins == 1  # one login
    calls = [e for e in demo.api_log if e["path"].startswith("/api/session/")]
    csrf_tokens = set(demo._csrf.values())
    assert len(calls) == 4 and all(e["headers"].get("X-CSRF-Token") in csrf_tokens for e in calls)


@pytest.mark.airflow_cli
def test_refresh_rotation(airflow_home: AirflowHome) -> None:
    demo = airflow_home.demo
    start = len(demo.token_log)
    demo.set_lifetime(2)  # the access token expires during long_step
    try:
        xcoms = dags_test(airflow_home, "example_custom_token_refresh_rotation", {"pause": 2.5})
    finally:
        demo.set_lifetime(3600)
    assert {k: v for k, v in xcoms.items() if v is not None} == {
        "first_call": "dev", "after_deferred": "dev", "after_sync": "dev"
    }  # fmt: skip
    sent = [e["form"] for e in demo.token_log[start:] if e["path"] == "/oauth2/v1/rotating"]
    grants = [form["grant_type"] for form in sent]
    assert grants[0] == "client_credentials" and "refresh_token" in grants[1:], grants
    assert set(grants[1:]) == {"refresh_token"}, grants  # renewed with refresh tokens only
    refresh_tokens = [form["refresh_token"] for form in sent if "refresh_token" in form]
    assert len(refresh_tokens) == len(set(refresh_tokens))  # each rotation's refresh token used once
    assert demo.stats()["refreshes_rejected"] == 0


def test_jwt_assertion(airflow_home: AirflowHome) -> None:
    demo = airflow_home.demo
    seen = len(demo.assertions)
    xcoms = dags_test(airflow_home, "example_custom_token_jwt_assertion")
    assert xcoms == {"whoami": "prod", "whoami_deferred": "prod"}
    accepted = demo.assertions[seen:]
    assert accepted, "the token came from a verified assertion"
    assert all(a["claims"]["iss"] == a["claims"]["sub"] == "prod" for a in accepted)
    assert len({a["claims"]["jti"] for a in accepted}) == len(accepted)  # a fresh one per request


def test_login_steps(airflow_home: AirflowHome) -> None:
    demo = airflow_home.demo
    before = demo.stats()
    xcoms = dags_test(airflow_home, "example_custom_token_login_steps")
    assert xcoms == {"whoami": "qa", "whoami_deferred": "qa", "items": "3 items"}  # the first page
    after = demo.stats()
    token_requests = [e for e in demo.token_log if e["path"] == "/login/v1/token"]
    assert token_requests and "session=si_" in token_requests[-1]["headers"]["Cookie"]
    logins = after["logins"] - before["logins"]
    assert logins == after["login_pages"] - before["login_pages"] >= 1  # each login: page, then sign-in
    assert after["logins_refused"] == before["logins_refused"]
    assert (
        after["token_requests_by_path"]["/login/v1/token"]
        - before["token_requests_by_path"].get("/login/v1/token", 0)
        == logins
    )  # one token per login


# -- issue 13: a notifier in callbacks, an asset watched by the event trigger -------------------------------


@pytest.mark.airflow_cli
def test_notifier(airflow_home: AirflowHome) -> None:
    demo = airflow_home.demo
    before = len([e for e in demo.api_log if e["path"] == "/api/v1/echo"])

    xcoms = dags_test(airflow_home, "example_custom_token_notifier")

    assert xcoms == {"export_items": [1, 2, 3, 4, 5]}
    [sent] = [e for e in demo.api_log if e["path"] == "/api/v1/echo"][before:]  # on_success_callback
    assert sent["method"] == "POST" and sent["account"] == "prod"
    run_id = sent["json"]["run_id"]
    assert sent["json"] == {
        "dag_id": "example_custom_token_notifier",
        "task_id": "export_items",
        "run_id": run_id,
        "state": "success",
    }
    assert run_id.startswith("manual__") and sent["headers"]["X-Run"] == run_id


@pytest.mark.airflow_cli
def test_asset_watcher_dag_runs_its_task(airflow_home: AirflowHome) -> None:
    """`airflow dags test` runs the asset-scheduled DAG's task itself (scripts/demo does too)."""
    xcoms = dags_test(airflow_home, "example_custom_token_asset_watcher")
    assert xcoms == {"fetch_report": {"name": "daily", "ready": True}}


def test_the_asset_watcher_dag_is_scheduled_by_the_event_trigger() -> None:
    """`airflow dags test` does not run an asset's watcher: the DAG parses with it, and its check is the
    function the triggerer will import (the trigger itself runs in tests/servers/test_async_hook.py)."""
    import importlib
    import sys

    from tests.airflow_names import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "example_asset_watcher.py"))
    assert bag.import_errors == {}
    dag = bag.dags["example_custom_token_asset_watcher"]
    [asset] = dag.timetable.asset_condition.objects  # schedule=[the asset]
    assert asset.name == "acme_daily_report"
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "airflow_custom_token.triggers.http.CustomTokenHttpEventTrigger"
    assert kwargs["custom_token_conn_id"] == "acme_prod"
    sys.path.insert(0, str(DAGS_FOLDER))  # as the triggerer has the DAG folder on its path
    try:
        module_name, _, name = kwargs["response_check_path"].rpartition(".")
        assert callable(getattr(importlib.import_module(module_name), name))
    finally:
        sys.path.remove(str(DAGS_FOLDER))
        sys.modules.pop("example_asset_watcher", None)
