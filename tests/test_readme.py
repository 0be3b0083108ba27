"""The README carries the contract: every connection field, operator argument and config option."""

from __future__ import annotations

import inspect
from pathlib import Path

from airflow_custom_token.get_provider_info import get_provider_info
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.sensors.http import CustomTokenHttpSensor
from airflow_custom_token.spec import EXTRA_FIELDS

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_extra_field_is_documented_with_its_form_label():
    [conn_type] = get_provider_info()["connection-types"]
    assert set(conn_type["conn-fields"]) == set(EXTRA_FIELDS)
    for key, field in conn_type["conn-fields"].items():
        assert f"| `{key}` | {field['label']} |" in README, key


def test_every_operator_and_sensor_argument_is_documented():
    for cls in (CustomTokenHttpOperator, CustomTokenHttpSensor):
        for name in inspect.signature(cls.__init__).parameters:
            if name not in ("self", "kwargs"):
                assert f"`{name}`" in README, f"{cls.__name__}({name})"


def test_every_config_option_is_documented():
    for option in get_provider_info()["config"]["custom_token"]["options"]:
        assert f"`{option}`" in README, option


def test_quick_start_commands_exist():
    root = Path(__file__).parents[1]
    for script in ("scripts/demo", "scripts/test", "scripts/bench", ".ci/run"):
        assert script in README, script
        assert (root / script).stat().st_mode & 0o111, f"{script} is not executable"


def test_the_worked_example_connections_resolve(monkeypatch):
    """The README's AIRFLOW_CONN_* examples are valid: the accounts resolve against the integration."""
    import json
    import re

    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    exports = re.findall(r"export (AIRFLOW_CONN_\w+)='(.*?)'", README, flags=re.S)
    assert len(exports) >= 3
    for name, body in exports:
        json.loads(body)
        monkeypatch.setenv(name, body)
    account = CustomTokenHook("acme_dev").account  # builds and validates, sends nothing
    assert account.token_request.url == "https://dev.acme.example/oauth2/v1/token"
    assert account.base_url == "https://dev.acme.example/api"
    assert dict(account.request_query) == {"tenant": "t1"}
    assert dict(account.token_request.form or ())["client_id"] == "dev-client"
    assert account.request_url("/v1/orders") == "https://dev.acme.example/api/v1/orders"
