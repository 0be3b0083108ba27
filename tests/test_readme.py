"""The README carries the contract: every connection field, operator argument and config option."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from airflow_custom_token.fields import EXTRA_FIELDS, OPTIONS, REDIRECT_URIS
from airflow_custom_token.get_provider_info import get_provider_info
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.sensors.http import CustomTokenHttpSensor

README = (Path(__file__).parents[1] / "README.md").read_text()


def table(header: str) -> list[list[str]]:
    """The rows (cells stripped) of the README table whose header line is `header`."""
    lines = README.splitlines()
    start = lines.index(header) + 2  # header, then |---|
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


FIELD_ROWS = {row[0]: row for row in table("| key | label | type | required | meaning |")}
OPTION_ROWS = table("| option | default | meaning |")


def shown(value: object) -> str:
    """How the README writes a default: text as is, anything else as JSON (3600, true, [401])."""
    return value if isinstance(value, str) else json.dumps(value)


def test_the_field_table_lists_every_field_of_the_table_in_order():
    assert list(FIELD_ROWS) == [f"`{field.key}`" for field in EXTRA_FIELDS]


def test_every_extra_field_is_documented_with_its_label_requirement_default_and_choices():
    for field in EXTRA_FIELDS:
        _, label, kind, required, _ = FIELD_ROWS[f"`{field.key}`"]
        assert label == field.label, field.key
        assert required.startswith("yes" if field.required else "no"), (field.key, required)
        if field.default is not None:
            assert shown(field.default) in required, (field.key, required)
        for choice in field.choices:
            assert f"`{choice}`" in kind, (field.key, choice)


def test_every_extra_field_label_matches_the_connection_form():
    [conn_type] = get_provider_info()["connection-types"]
    for key, entry in conn_type["conn-fields"].items():
        assert f"| `{key}` | {entry['label']} |" in README, key


def test_the_option_table_lists_every_option_with_its_default():
    rows = {name.strip("`"): row for row in OPTION_ROWS for name in row[0].split(", ")}
    assert set(rows) == {option.name for option in OPTIONS}
    for option in OPTIONS:
        default = rows[option.name][1]
        if option.name.startswith("redirect_uri_"):  # in the realm table
            realm = option.name.removeprefix("redirect_uri_")
            assert f"| `{realm}` | {REDIRECT_URIS[realm]} |" in README, option.name
            assert option.default == REDIRECT_URIS[realm]
        elif option.default:  # empty: the row says what empty means
            assert f"`{option.default}`" in default, (option.name, default)


def test_every_operator_and_sensor_argument_is_documented():
    for cls in (CustomTokenHttpOperator, CustomTokenHttpSensor):
        for name in inspect.signature(cls.__init__).parameters:
            if name not in ("self", "kwargs"):
                assert f"`{name}`" in README, f"{cls.__name__}({name})"


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
