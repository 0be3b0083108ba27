"""Shared fixtures: a real demo API on 127.0.0.1, connections as AIRFLOW_CONN_* JSON, an isolated cache."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

# Isolate Airflow before anything imports it.
_HOME = Path(os.environ.get("CUSTOM_TOKEN_TEST_HOME", "/tmp/airflow-custom-token-tests"))
_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES"] = os.environ.get(
    "AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", "3"
)

from airflow_custom_token.cache import PROCESS_CACHE  # noqa: E402
from airflow_custom_token.demo import DemoServer  # noqa: E402


@pytest.fixture
def demo() -> Iterator[DemoServer]:
    """A fresh demo token server + API on 127.0.0.1 (random port), counting its calls."""
    with DemoServer() as server:
        yield server


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test starts with an empty process cache and its own host cache directory."""
    cache_dir = tmp_path / "token-cache"
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_WAIT_MAX", "0.2")
    PROCESS_CACHE.clear()
    yield cache_dir
    PROCESS_CACHE.clear()


@pytest.fixture(autouse=True)
def isolated_masking() -> Iterator[None]:
    """Each test starts as in a fresh worker process: no secret registered (`redaction.reset()`), and
    Airflow's masker in this process as the previous test found it. Nothing a test registered, by the
    provider or by Airflow itself (its connection lookup masks every extra whose key contains
    `token`), is seen by another: no test can pass or fail on what ran before it."""
    from airflow_custom_token import compat, redaction

    redaction.reset()
    snapshot = compat.masker_snapshot()
    yield
    compat.restore_masker(snapshot)
    redaction.reset()


@pytest.fixture
def task_runner_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test call `operator.execute(context)` directly, as the task runner would."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


def demo_extra(demo: DemoServer, **overrides: Any) -> dict[str, Any]:
    """The extra of a typical OAuth-style client-credentials integration against the demo API."""
    extra: dict[str, Any] = {
        "integration_key": "acme",
        "access_endpoint": f"{demo.url}/oauth2/v1/token",
        "access_verb": "POST",
        "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
    }
    extra.update(overrides)
    return {k: v for k, v in extra.items() if v is not None}


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define a connection the way a user would: an AIRFLOW_CONN_<ID> JSON variable."""

    def make(conn_id: str, *, conn_type: str = "custom_token", extra: Any = None, **fields: Any) -> str:
        body: dict[str, Any] = {"conn_type": conn_type, **fields}
        if extra is not None:
            body["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make


@pytest.fixture
def acme(demo: DemoServer, make_conn: Callable[..., str]) -> str:
    """A ready connection `acme` (account dev) on the demo API."""
    return make_conn("acme", host=demo.url, login="dev", password="dev-secret", extra=demo_extra(demo))
