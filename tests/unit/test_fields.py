"""The field table drives the connection form, the config section and the settings' defaults."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_custom_token import fields
from airflow_custom_token.fields import (
    EXTRA_FIELDS,
    FORM_DEFAULTS,
    OPTIONS,
    REALMS,
    REDIRECT_URIS,
    STANDARD_FIELDS,
    ExtraField,
    conn_field,
    extra_field,
    option,
    option_default,
)
from airflow_custom_token.get_provider_info import get_provider_info
from airflow_custom_token.settings import Settings, load_settings

PACKAGE = Path(fields.__file__).parent

# Airflow's secrets masker hides extra values whose key contains one of these (3.3's list, by substring).
MASKED_WORDS = {
    "access_key", "access_token", "api_key", "apikey", "auth_header", "authorization", "bearer",
    "connection_string", "dsn", "passphrase", "passwd", "password", "private_key", "proxy",
    "proxy_password", "proxies", "secret", "service_account", "service_key", "token", "keyfile_dict",
    "webhook_url",
}  # fmt: skip


def connection_type() -> dict[str, Any]:
    [conn_type] = get_provider_info()["connection-types"]
    return dict(conn_type)


# -- the connection form -------------------------------------------------------------------------------


def test_conn_fields_are_the_table_in_its_order():
    conn_fields = connection_type()["conn-fields"]

    assert list(conn_fields) == [field.key for field in EXTRA_FIELDS]
    assert conn_fields == {field.key: conn_field(field) for field in EXTRA_FIELDS}


@pytest.mark.parametrize(
    ("key", "schema"),
    [
        ("integration_key", {"type": ["string", "null"], "pattern": "^[A-Za-z0-9]+$"}),
        ("access_verb", {"type": "string", "enum": ["GET", "POST"], "default": "POST"}),
        ("access_body", {"type": ["string", "null"], "enum": ["form", "json"], "default": "form"}),
        ("access_lifetime", {"type": ["integer", "null"], "minimum": 1, "default": 3600}),
        ("realm", {"type": ["string", "null"], "enum": ["us", "eu", "ap"], "default": "us"}),
        (
            "refresh_on",
            {
                "type": ["array", "null"],
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "default": [401],
            },
        ),
        ("timeout", {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 3600}),
        ("verify", {"type": ["boolean", "null"], "default": True}),
        ("allowed_hosts", {"type": ["array", "null"], "items": {"type": "string"}}),
        ("integration_parameters", {"type": ["object", "null"]}),
    ],
)
def test_schema_idioms_of_the_form(key: str, schema: dict[str, Any]) -> None:
    """Required shows as a non-null type, choices as an enum, the form default as `default`."""
    assert connection_type()["conn-fields"][key]["schema"] == schema


def test_form_requires_only_the_fields_it_can_prefill():
    """Key and Access Token Endpoint are optional in the form: an account inherits them."""
    required_in_form = [
        key
        for key, entry in connection_type()["conn-fields"].items()
        if isinstance(entry["schema"]["type"], str)
    ]
    assert required_in_form == ["access_verb", "inject_as", "inject_name", "inject_template"]
    assert all(key in FORM_DEFAULTS for key in required_in_form)
    assert extra_field("integration_key").required and extra_field("access_endpoint").required


def test_form_defaults_are_the_schema_defaults():
    shown = {
        key: entry["schema"]["default"]
        for key, entry in connection_type()["conn-fields"].items()
        if "default" in entry["schema"]
    }
    assert shown == dict(FORM_DEFAULTS)


def test_provider_info_defaults_are_copies():
    """A caller mutating the provider info (or a schema) leaves the table intact."""
    connection_type()["conn-fields"]["refresh_on"]["schema"]["default"].append(500)
    conn_field("refresh_on")["schema"]["default"].append(500)

    assert extra_field("refresh_on").default == [401]
    assert connection_type()["conn-fields"]["refresh_on"]["schema"]["default"] == [401]


def test_ui_field_behaviour_comes_from_the_standard_fields():
    behaviour = connection_type()["ui-field-behaviour"]

    assert behaviour["hidden-fields"] == ["schema", "port"]
    assert behaviour["relabeling"] == {"host": "Base URL", "login": "Login", "password": "Password"}
    assert behaviour["placeholders"]["host"] == "https://{serverName}.example.com/api"
    assert "{login}" in behaviour["placeholders"]["login"]
    assert "{password}" in behaviour["placeholders"]["password"]
    assert {f.name for f in STANDARD_FIELDS if f.hidden} == set(behaviour["hidden-fields"])


def test_every_field_has_a_label_and_a_description():
    for field in EXTRA_FIELDS:
        assert field.label.strip() and field.description.strip().endswith("."), field.key
    labels = [field.label for field in EXTRA_FIELDS]
    assert len(set(labels)) == len(labels)
    assert len({field.key for field in EXTRA_FIELDS}) == len(EXTRA_FIELDS)


def test_realm_description_lists_every_redirect_uri():
    description = extra_field("realm").description
    assert extra_field("realm").choices == REALMS == tuple(REDIRECT_URIS)
    for realm, uri in REDIRECT_URIS.items():
        assert f"{realm}: {uri}" in description


def test_no_key_holds_a_word_the_secrets_masker_hides():
    """The masker hides an extra's value when its key contains a sensitive word: `token_parameter_type`
    would make the word `header` a secret in every log. Only a field whose value is secret may."""
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    except ImportError:  # another Airflow release: the list above
        DEFAULT_SENSITIVE_FIELDS = frozenset()
    words = MASKED_WORDS | set(DEFAULT_SENSITIVE_FIELDS)
    for field in EXTRA_FIELDS:
        if not field.secret:
            assert not [word for word in words if word in field.key.lower()], field.key


def test_the_masker_rule_catches_a_bad_key():
    """The rule above can fail: a key such as the one 0.1 avoided is caught."""
    bad = ExtraField("token_parameter_type", "Type", "Where the token goes.", "str")
    assert [word for word in MASKED_WORDS if word in bad.key] == ["token"]


def test_a_field_label_is_written_in_one_module_only():
    """A search for a field's label finds its declaration, nowhere else in the package."""
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    labels = [field.label for field in EXTRA_FIELDS] + [f.label for f in STANDARD_FIELDS if f.label]
    for label in labels:
        found = [path.name for path, text in sources.items() if f'"{label}"' in text]
        assert found == ["fields.py"], (label, found)


def test_a_new_field_is_one_entry():
    """Everything the form and the wtforms generator need is on the entry itself."""
    field = ExtraField(
        "client_cert_file",
        "Client Certificate",
        "Path of a PEM client certificate.",
        "str",
        secret=True,
    )
    assert conn_field(field) == {
        "label": "Client Certificate",
        "description": "Path of a PEM client certificate.",
        "schema": {"type": ["string", "null"], "format": "password"},
    }


def test_range_text_of_each_kind_of_range():
    assert extra_field("access_lifetime").range_text() == "a positive number of seconds"
    assert extra_field("timeout").range_text() == "a number of seconds > 0 and <= 3600"
    retries = ExtraField("request_retries", "Request Retries", "Retries.", "int", minimum=0, maximum=10)
    assert retries.range_text() == "a number >= 0 and <= 10"
    ratio = ExtraField("share", "Share", "A share.", "number", exclusive_minimum=0.5, unit="parts")
    assert ratio.range_text() == "a number of parts > 0.5"


def test_accessors_name_what_exists():
    assert extra_field("realm").label == "Realm"
    with pytest.raises(KeyError, match="'realms' is not a custom_token extra field; known: integration_name"):
        extra_field("realms")
    assert option("host_cache").type == "boolean"
    with pytest.raises(KeyError, match=r"'host_caches' is not a \[custom_token\] option"):
        option("host_caches")


def test_constants_are_declared_once():
    from airflow_custom_token import get_provider_info as provider_info_module
    from airflow_custom_token.account import build, chain, raw

    assert fields.CONN_TYPE == "custom_token" and fields.DEFAULT_CONN_ID == "custom_token_default"
    assert chain.CONN_TYPE is fields.CONN_TYPE and build.REDIRECT_URIS is fields.REDIRECT_URIS
    assert provider_info_module.REDIRECT_URIS is fields.REDIRECT_URIS
    for module in (build, chain, raw):
        assert getattr(module, "EXTRA_FIELDS", EXTRA_FIELDS) is EXTRA_FIELDS  # the table, not a copy
        for name in ("FORM_DEFAULTS", "REQUIRED", "DEFAULT_REDIRECT_URIS"):  # 0.1's duplicates
            assert not hasattr(module, name), name


def test_provider_discovery_imports_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules);"
        "from airflow_custom_token.get_provider_info import get_provider_info; get_provider_info();"
        "new = {name.split('.')[0] for name in set(sys.modules) - before};"
        "print(sorted(new - set(sys.stdlib_module_names)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['airflow_custom_token']"


# -- the [custom_token] section -------------------------------------------------------------------------


def test_config_section_is_the_option_table():
    section = get_provider_info()["config"]["custom_token"]

    assert list(section["options"]) == [o.name for o in OPTIONS]
    for o in OPTIONS:
        assert section["options"][o.name] == {
            "description": o.description,
            "version_added": o.version_added,
            "type": o.type,
            "example": o.example,
            "default": o.default,
        }
    assert section["options"]["host_cache"]["default"] == "True"
    assert section["options"]["redirect_uri_eu"]["default"] == REDIRECT_URIS["eu"]


def held(settings: Settings, name: str) -> Any:
    """The value `settings` holds for option `name`."""
    if name.startswith("redirect_uri_"):
        return settings.redirect_uris[name.removeprefix("redirect_uri_")]
    grouped = {
        "token_request_retries": "retries",
        "retry_wait_max": "wait_max",
        "retry_after_max": "retry_after_max",
    }
    if name in grouped:
        return getattr(settings.retry, grouped[name])
    return getattr(settings, name)


def test_settings_defaults_are_the_option_table(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    settings = Settings()

    for o in OPTIONS:
        if o.name != "cache_dir":
            assert held(settings, o.name) == option_default(o.name), o.name
    assert settings.host_cache is True  # 0.1's Settings() said False while the config said True
    assert settings.cache_dir == "/srv/airflow/custom_token_cache"  # what the empty default means
    assert settings.retry.retries == 3 and isinstance(settings.retry.retries, int)


def test_load_settings_without_configuration_is_settings(monkeypatch: pytest.MonkeyPatch):
    for o in OPTIONS:
        monkeypatch.delenv(f"AIRFLOW__CUSTOM_TOKEN__{o.name.upper()}", raising=False)

    assert load_settings() == Settings()


@pytest.mark.parametrize("name", [o.name for o in OPTIONS])
def test_every_option_is_read_into_settings(monkeypatch: pytest.MonkeyPatch, name: str):
    o = option(name)
    monkeypatch.setenv(f"AIRFLOW__CUSTOM_TOKEN__{name.upper()}", o.example)

    assert held(load_settings(), name) == o.parse(o.example)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("refresh_margin", "soon", "[custom_token] refresh_margin: expected a number, found 'soon'"),
        ("refresh_margin", "-1", "[custom_token] refresh_margin: expected a number >= 0.0, found '-1'"),
        (
            "token_request_timeout",
            "0",
            "[custom_token] token_request_timeout: expected a number >= 0.001 and <= 3600, found '0'",
        ),
        (  # issue 19, item 14: a lease of 10^9 s
            "token_request_timeout",
            "1e9",
            "[custom_token] token_request_timeout: expected a number >= 0.001 and <= 3600, found '1e9'",
        ),
        (
            "token_request_retries",
            "1000000",
            "[custom_token] token_request_retries: expected a number >= 0.0 and <= 10, found '1000000'",
        ),
        ("retry_after_max", "86400", "[custom_token] retry_after_max: expected a number >= 0.0 and <= 3600"),
    ],
)
def test_a_bad_number_names_its_option(monkeypatch: pytest.MonkeyPatch, name: str, raw: str, message: str):
    monkeypatch.setenv(f"AIRFLOW__CUSTOM_TOKEN__{name.upper()}", raw)

    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings()


def test_option_parsing_by_type():
    assert option("host_cache").parse(" On ") is True and option("host_cache").parse("no") is False
    assert option("token_request_retries").parse("5.7") == 5
    assert option("retry_wait_max").parse("2.5") == 2.5
    assert option("cache_dir").parse(" /x ") == " /x "


def test_option_defaults_and_examples_are_valid():
    for o in OPTIONS:
        o.parse(o.default)
        o.parse(o.example)
        json.dumps(o.provider_info())
