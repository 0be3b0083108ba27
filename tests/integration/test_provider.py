"""The provider is discovered by Airflow: entry point, provider info schema, hook registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_custom_token.get_provider_info import get_provider_info

AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


def test_entry_point_returns_matching_package_name():
    [ep] = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_custom_token")
    ]
    info = ep.load()()
    assert info["package-name"] == "airflow-custom-token"


def test_provider_info_validates_against_airflow_schema():
    schema_path = Path(airflow.__file__).with_name("provider_info.schema.json")
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_extra_keys_avoid_words_the_secrets_masker_hides():
    """Only a field whose value is a secret may (`proxies`: a proxy URL may carry credentials)."""
    from airflow_custom_token.fields import FIELDS
    from tests.airflow_names import DEFAULT_SENSITIVE_FIELDS

    [conn_type] = get_provider_info()["connection-types"]
    for key in conn_type["conn-fields"]:
        assert FIELDS[key].secret or not any(word in key for word in DEFAULT_SENSITIVE_FIELDS), key


@pytest.mark.airflow_cli
def test_airflow_lists_the_provider_and_its_hook(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    providers = subprocess.run(
        [str(AIRFLOW_BIN), "providers", "list", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert providers.returncode == 0, providers.stderr[-2000:]
    listed = {p["package_name"] for p in json.loads(providers.stdout[providers.stdout.index("[{") :])}
    assert "airflow-custom-token" in listed
    hooks = subprocess.run(
        [str(AIRFLOW_BIN), "providers", "hooks", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    by_type = {h["connection_type"]: h for h in json.loads(hooks.stdout[hooks.stdout.index("[{") :])}
    assert by_type["custom_token"]["class"] == "airflow_custom_token.hooks.custom_token.CustomTokenHook"
    assert by_type["custom_token"]["conn_id_attribute_name"] == "custom_token_conn_id"


def test_form_defaults_match_the_connection_contract():
    """The form pre-fills what fields.FORM_DEFAULTS says (those values never override an integration's)."""
    from airflow_custom_token.fields import FORM_DEFAULTS

    [conn_type] = get_provider_info()["connection-types"]
    shown = {
        k: f["schema"]["default"] for k, f in conn_type["conn-fields"].items() if "default" in f["schema"]
    }
    assert shown == dict(FORM_DEFAULTS)


@pytest.mark.airflow_cli
def test_airflow_connections_test_runs_the_hook(tmp_path, demo):
    """`airflow connections test` runs the hook: success after a real token request, or the failing step."""
    from tests.conftest import demo_extra

    def run(password: str) -> subprocess.CompletedProcess[str]:
        conn = {
            "conn_type": "custom_token",
            "host": demo.url,
            "login": "dev",
            "password": password,
            "extra": demo_extra(demo, test_endpoint="/api/v1/whoami"),
        }
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW_CONN_ACME_CLI": json.dumps(conn),
        }
        return subprocess.run(
            [str(AIRFLOW_BIN), "connections", "test", "acme_cli"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    ok = run("dev-secret")
    assert ok.returncode == 0 and "Connection success!" in ok.stdout, ok.stdout + ok.stderr
    assert [r["path"] for r in demo.api_log] == ["/api/v1/whoami"]  # the hook got a token and used it
    assert demo.stats()["authenticated"] == 1
    failed = run("wrong-secret")
    assert "Token request failed" in failed.stdout and "401" in failed.stdout, failed.stdout + failed.stderr
    assert "wrong-secret" not in failed.stdout + failed.stderr
    assert "tok_" not in ok.stdout + ok.stderr + failed.stdout + failed.stderr
