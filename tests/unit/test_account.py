"""Each phase of `build_account` alone: no server, no Airflow connection, plain values in and out."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_custom_token.account.build import (
    RenderedInputs,
    allowed_origins,
    build_account,
    build_token_request,
    collect_values,
    render_inputs,
    secret_values,
)
from airflow_custom_token.account.chain import MergedChain, merge_chain
from airflow_custom_token.account.checks import check_fields, check_token_location
from airflow_custom_token.account.raw import RawConnection, normalize_extra, read_extra
from airflow_custom_token.errors import ConfigurationError

HOST = "https://api.example.com"
EXTRA: dict[str, Any] = {
    "integration_key": "acme",
    "access_endpoint": "/oauth2/token",
    "access_verb": "POST",
    "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
    "inject_as": "header",
    "inject_name": "Authorization",
    "inject_template": "Bearer {token}",
}


def conn(conn_id: str = "acme", host: str | None = HOST, **extra: Any) -> RawConnection:
    return RawConnection(conn_id, "custom_token", host=host, login="dev", password="dev-secret", extra=extra)


def merged(host: str | None = HOST, **overrides: Any) -> MergedChain:
    chain_merged, problems = merge_chain([conn(host=host, **{**EXTRA, **overrides})])
    assert problems == []
    return chain_merged


def checked(host: str | None = HOST, **overrides: Any) -> dict[str, Any]:
    values, problems = check_fields(merged(host, **overrides))
    assert problems == []
    return values


# -- phase 1: reading and merging the chain -----------------------------------------------------------


def test_read_extra_types_each_value_by_the_table():
    typed, problems = read_extra(
        {
            "access_lifetime": "60",
            "verify": "false",
            "timeout": "2.5",
            "refresh_on": 403,
            "access_headers": '{"X-A": "1"}',
            "integration_key": " acme ",
            "unknown": "ignored",
        }
    )

    assert problems == []
    assert typed == {
        "access_lifetime": 60,
        "verify": False,
        "timeout": 2.5,
        "refresh_on": [403],
        "access_headers": {"X-A": "1"},
        "integration_key": "acme",
    }


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"access_lifetime": "soon"}, "access_lifetime: expected a number, found str"),
        ({"access_lifetime": 1.5}, "access_lifetime: expected a whole number of seconds, found 1.5"),
        ({"verify": "maybe"}, "verify: expected true or false, found str"),
        ({"integration_key": ["a"]}, "integration_key: expected text, found list"),
        ({"access_headers": ["a"]}, "access_headers: expected a JSON object, found list"),
        ({"refresh_on": {"a": 1}}, "refresh_on: expected a JSON list, found dict"),
        (
            {"access_parameters": "{client_id: dev}"},
            "access_parameters: expected JSON, found text that is not valid JSON "
            "(Expecting property name enclosed in double quotes at 1)",
        ),
        ({"timeout": True}, "timeout: expected a number, found bool"),
    ],
)
def test_read_extra_names_the_field_of_a_wrong_type(extra: dict[str, Any], problem: str) -> None:
    typed, problems = read_extra(extra)

    assert problems == [problem]
    assert typed == {}


def test_normalize_extra_reads_legacy_keys_and_drops_empty_values():
    extra = {
        "extra__custom_token__realm": "eu",
        "extra__custom_token__verify": False,
        "verify": True,
        "access_headers": {},
        "test_endpoint": "",
        "allowed_hosts": [],
        "refresh_on": [],
        "timeout": None,
    }

    assert normalize_extra(extra) == {"realm": "eu", "verify": True, "refresh_on": []}


def test_merge_chain_account_overrides_its_integration():
    integration = conn(
        "acme", access_lifetime=60, inject_name="X-Key", integration_parameters={"a": "1", "b": "2"}
    )
    account = RawConnection(
        "acme_dev",
        "custom_token",
        login="me",
        extra={
            "integration_conn_id": "acme",
            "access_lifetime": 120,
            "inject_name": "Authorization",  # the form's default: does not override
            "integration_parameters": {"b": "3"},
        },
    )

    result, problems = merge_chain([account, integration])

    assert problems == []
    assert result.conn_id == "acme_dev"
    assert result.fields["access_lifetime"] == 120
    assert result.fields["inject_name"] == "X-Key"
    assert result.fields["integration_parameters"] == {"a": "1", "b": "3"}
    assert result.standard == {"host": HOST, "login": "me", "password": "dev-secret"}


def test_merge_chain_names_the_connection_whose_extra_is_broken():
    integration = RawConnection(
        "acme", "custom_token", extra_error="extra: expected a JSON object, found list"
    )
    account = RawConnection(
        "acme_dev", "custom_token", extra={"integration_conn_id": "acme", "timeout": "x"}, extra_error=None
    )

    _, problems = merge_chain([account, integration])

    assert problems == [
        "extra: expected a JSON object, found list (in 'acme')",
        "timeout: expected a number, found str",
    ]


# -- phase 2: the table's checks -----------------------------------------------------------------------


def test_check_fields_applies_defaults_and_spells_choices_as_the_table():
    values = checked(access_verb="post", access_body="JSON", inject_as="URL", realm="EU")

    assert (values["access_verb"], values["access_body"], values["inject_as"], values["realm"]) == (
        "POST",
        "json",
        "url",
        "eu",
    )
    assert values["access_response_path"] == "access_token"
    assert values["access_expiry_path"] == "expires_in"
    assert values["access_lifetime"] == 3600
    assert values["refresh_on"] == [401]
    assert values["verify"] is True
    assert values["timeout"] is None and values["test_endpoint"] is None
    assert values["integration_parameters"] == {}


def test_check_fields_reports_missing_required_fields_with_the_conn_id():
    chain_merged, _ = merge_chain([conn(host=None, inject_as="header")])

    _, problems = check_fields(chain_merged)

    assert problems == [
        "integration_key: required field is missing (set it on 'acme' or on its integration)",
        "access_endpoint: required field is missing (set it on 'acme' or on its integration)",
        "access_verb: required field is missing (set it on 'acme' or on its integration)",
        "inject_name: required field is missing (set it on 'acme' or on its integration)",
        "inject_template: required field is missing (set it on 'acme' or on its integration)",
        "host: required field is missing: the base URL of the API, e.g. https://api.example.com",
    ]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"access_verb": "PUT"}, "access_verb: expected GET or POST, found 'PUT'"),
        ({"access_body": "xml"}, "access_body: expected form or json, found 'xml'"),
        ({"inject_as": "cookie"}, "inject_as: expected header or url, found 'cookie'"),
        ({"realm": "cn"}, "realm: expected one of us, eu, ap, found 'cn'"),
        ({"integration_key": "ac-me"}, "integration_key: expected letters and digits only, found 'ac-me'"),
        (
            {"inject_template": "Bearer"},
            "inject_template: expected a template containing {token}, found 'Bearer'",
        ),
        ({"access_lifetime": 0}, "access_lifetime: expected a positive number of seconds, found 0"),
        ({"timeout": -1}, "timeout: expected a number of seconds > 0 and <= 3600, found -1.0"),
        ({"refresh_on": [401, 999]}, "refresh_on: expected HTTP status codes (100-599), found 999"),
        ({"refresh_on": [401.5]}, "refresh_on: expected HTTP status codes (100-599), found 401.5"),
        ({"refresh_on": ["soon"]}, "refresh_on: expected HTTP status codes (100-599), found 'soon'"),
        ({"allowed_hosts": [3]}, "allowed_hosts: expected host names or origins, found 3"),
        (
            {"request_parameters": {"cookie": {"a": "b"}}},
            "request_parameters: expected an object with keys 'header' and/or 'url', found ['cookie']",
        ),
    ],
)
def test_check_fields_reports_the_table_rules(overrides: dict[str, Any], problem: str) -> None:
    _, problems = check_fields(merged(**overrides))

    assert problems == [problem]


def test_check_fields_normalizes_list_items():
    values = checked(refresh_on=["401", 403], allowed_hosts=[" files.example.com "])

    assert values["refresh_on"] == [401, 403]
    assert values["allowed_hosts"] == ["files.example.com"]


def test_an_empty_required_field_is_reported_once_as_missing():
    _, problems = check_fields(merged(access_verb=" ", inject_template=" "))

    assert problems == [
        "access_verb: required field is missing (set it on 'acme' or on its integration)",
        "inject_template: required field is missing (set it on 'acme' or on its integration)",
    ]


def test_check_fields_takes_run_time_choices_and_defaults():
    values, problems = check_fields(
        merged(realm="cn"), choices={"realm": ("us", "cn")}, defaults={"timeout": 7.0, "verify": None}
    )

    assert problems == []
    assert values["realm"] == "cn" and values["timeout"] == 7.0 and values["verify"] is True
    _, problems = check_fields(merged(), defaults={"timeout": 0.0})
    assert problems == ["timeout: expected a number of seconds > 0 and <= 3600, found 0.0"]


@pytest.mark.parametrize(
    ("path", "problems"),
    [
        ("header:", ["access_response_path: expected a name after 'header:', found none"]),
        ("cookie: ", ["access_response_path: expected a name after 'cookie: ', found none"]),
        ("header:X-Token", []),
        ("data.session.id", []),
    ],
)
def test_check_token_location(path: str, problems: list[str]) -> None:
    assert check_token_location({"access_response_path": path}) == problems


# -- phase 3: placeholder values ------------------------------------------------------------------------


def test_collect_values_by_precedence():
    integration = conn("acme", **EXTRA, realm="eu", integration_parameters={"tenant": "i", "region": "r"})
    account = RawConnection(
        "acme_dev",
        "custom_token",
        extra={"integration_conn_id": "acme", "integration_parameters": {"tenant": "a", "login": "param"}},
    )
    chain_merged, _ = merge_chain([account, integration])
    values_checked, _ = check_fields(chain_merged)

    values, problems = collect_values(
        chain_merged, values_checked, {"region": "task", "flag": True, "n": 3, "none": None}
    )

    assert problems == []
    assert values == {
        "redirectUri": "https://eu.api.prod.airkit.com/internal/sessions/v1/auth/callback",
        "login": "param",  # a parameter beats the built-in
        "password": "dev-secret",
        "tenant": "a",
        "region": "task",
        "flag": "true",
        "n": "3",
        "none": "",
    }


def test_collect_values_takes_the_redirect_uris_given():
    values, _ = collect_values(merged(), checked(), None, {"us": "https://callback.example/us"})

    assert values["redirectUri"] == "https://callback.example/us"


def test_collect_values_names_a_value_that_is_not_text():
    _, problems = collect_values(merged(), checked(), {"tags": ["a"]})

    assert problems == ["integration_parameters.tags: expected text or a number, found list"]


def test_secret_values_are_the_password_and_secret_named_parameters():
    values = {
        "password": "pw",
        "client_secret": "s3",
        "token_type": "bearer",
        "redirectUri": "https://x",
        "api_key": "",
        "tenant": "t",
    }

    assert secret_values(values) == ["pw", "s3"]


# -- phase 4: rendering the inputs ------------------------------------------------------------------------


def render(values: dict[str, str] | None = None, host: str | None = HOST, **overrides: Any) -> RenderedInputs:
    rendered, problems = render_inputs(merged(host, **overrides), checked(host, **overrides), values or {})
    assert problems == []
    return rendered


def test_render_inputs_resolves_every_input():
    values = {"login": "dev", "password": "pw", "tenant": "t1", "server": "dev"}
    rendered = render(
        values,
        host="https://{server}.example.com/api/",
        inject_name="X-{tenant}",
        inject_template="Bearer {token} for {tenant}",
        access_headers={"X-Tenant": "{tenant}"},
        request_parameters={"header": {"X-V": 2}, "url": {"tenant": "{tenant}"}},
        test_endpoint="/v1/{tenant}/me",
    )

    assert rendered.base_url == "https://dev.example.com/api"
    assert rendered.token_url == "https://dev.example.com/api/oauth2/token"
    assert rendered.access_parameters == {"client_id": "dev", "client_secret": "pw"}
    assert rendered.access_headers == {"X-Tenant": "t1"}
    assert rendered.inject_name == "X-t1"
    assert rendered.inject_segments == ("Bearer ", " for t1")
    assert rendered.request_headers == (("X-V", "2"),)
    assert rendered.request_query == (("tenant", "t1"),)
    assert rendered.test_url == "/v1/t1/me"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"access_headers": {"X-Tenant": "{tenant}"}}, "access_headers.X-Tenant"),
        ({"inject_name": "X-{tenant}"}, "inject_name"),
        ({"inject_template": "Bearer {token} for {tenant}"}, "inject_template"),
        ({"request_parameters": {"header": {"X-Tenant": "{tenant}"}}}, "request_parameters.X-Tenant"),
    ],
)
def test_a_header_placeholder_whose_value_a_header_cannot_carry_names_the_placeholder(
    overrides: dict[str, Any], field: str
) -> None:
    values = {"login": "dev", "password": "pw", "tenant": "東京-tenant"}
    _, problems = render_inputs(merged(**overrides), checked(**overrides), values)

    assert problems == [
        f"{field}: placeholder {{tenant}} has a value with characters a header cannot carry (only Latin-1 "
        "text travels in an HTTP header; the value is not quoted)"
    ]
    assert "東京" not in problems[0]


def test_latin1_header_values_and_any_url_value_are_rendered() -> None:
    values = {"login": "dev", "password": "pw", "tenant": "Zürich", "city": "東京"}
    rendered = render(
        values,
        access_headers={"X-Tenant": "{tenant}"},
        inject_as="url",
        inject_name="token",
        inject_template="{token}-{city}",
    )

    assert rendered.access_headers == {"X-Tenant": "Zürich"}
    assert rendered.inject_segments == ("", "-東京")


def test_render_inputs_keeps_an_absolute_token_endpoint():
    rendered = render({"login": "l", "password": "p"}, access_endpoint="https://auth.example.com/token")

    assert rendered.token_url == "https://auth.example.com/token"


@pytest.mark.parametrize(
    ("host", "overrides", "problem"),
    [
        (
            "https://{tenant}.example.com",
            {"access_endpoint": "https://auth.example.com/token"},
            "host: placeholder {tenant} stands in the host, so its value must be a host name "
            "(letters, digits, '-' and '.'); found a value with other characters",
        ),
        (
            "api.example.com",
            {},
            "host: expected a base URL with scheme, e.g. https://api.example.com; found 'api.example.com'",
        ),
        (
            HOST,
            {"access_endpoint": "ftp://x/token"},
            "access_endpoint: expected an http(s) URL, found scheme 'ftp'",
        ),
        (HOST, {"test_endpoint": "/v/{missing}"}, "test_endpoint: placeholder {missing} has no value"),
        (
            HOST,
            {"inject_name": "X-{region}"},
            "inject_name: placeholder {region} has no value; parameters available: login, password, tenant",
        ),
        (
            HOST,
            {"request_parameters": {"header": {"X-Tags": ["a"]}}},
            "request_parameters.header.X-Tags: expected text or a number, found list",
        ),
    ],
)
def test_render_inputs_names_the_input(host: str, overrides: dict[str, Any], problem: str) -> None:
    values = {"login": "l", "password": "p", "tenant": "evil.example/x"}

    _, problems = render_inputs(merged(host, **overrides), checked(host, **overrides), values)

    assert problems == [problem]


# -- phase 5: allowed origins -----------------------------------------------------------------------------


def test_allowed_origins_are_the_base_url_and_allowed_hosts():
    origins, problems = allowed_origins(
        "https://api.example.com/v2", ["files.example.com", "http://127.0.0.1:8080", "HTTPS://Upper.Example"]
    )

    assert problems == []
    assert origins == {
        ("https", "api.example.com", 443),
        ("https", "files.example.com", 443),
        ("http", "127.0.0.1", 8080),
        ("https", "upper.example", 443),
    }


def test_allowed_origins_names_an_entry_that_is_neither_host_nor_origin():
    _, problems = allowed_origins(HOST, ["bad host"])

    assert problems == [
        "allowed_hosts: expected a host name (meaning https) or an origin like https://host:port, "
        "found 'bad host'"
    ]


def test_a_test_endpoint_on_another_origin_is_a_problem():
    assert allowed_origins(HOST, ["files.example.com"], "https://files.example.com/me")[1] == []
    assert allowed_origins(HOST, None, "/v1/me")[1] == []

    _, problems = allowed_origins(HOST, None, "http://127.0.0.2:9/me")

    assert problems == [
        "test_endpoint: expected a path or a URL on the origin of host (https://api.example.com) or of "
        "allowed_hosts; found a URL on http://127.0.0.2:9, which would receive the token"
    ]


# -- phase 6: the token request -----------------------------------------------------------------------------


def token_request(**overrides: Any) -> tuple[Any, list[str]]:
    values = {"login": "dev", "password": "dev-secret"}
    rendered = render(values, **overrides)
    return build_token_request(checked(**overrides), rendered, secret_values(values))


def test_post_form_token_request():
    request, problems = token_request(access_headers={"X-A": 1}, timeout=5, verify=False)

    assert problems == []
    assert (request.method, request.url) == ("POST", "https://api.example.com/oauth2/token")
    assert request.form == (("client_id", "dev"), ("client_secret", "dev-secret"))
    assert request.params == () and request.json is None
    assert request.headers == (("X-A", "1"),)
    assert (request.timeout, request.verify, request.redact) == (5.0, False, ("dev-secret",))


def test_get_token_request_sends_the_parameters_as_query():
    request, _ = token_request(access_verb="GET")

    assert request.params == (("client_id", "dev"), ("client_secret", "dev-secret"))
    assert request.form is None and request.json is None


def test_json_token_request_keeps_the_parameters_structure():
    request, problems = token_request(access_body="json", access_parameters={"scope": ["a", "b"], "n": 1})

    assert problems == []
    assert request.json == {"scope": ["a", "b"], "n": 1}
    assert request.form is None and request.params == ()


def test_token_request_values_must_be_text():
    _, problems = token_request(access_headers={"X": {"n": 1}}, access_parameters={"scope": ["a"]})

    assert problems == [
        "access_headers.X: expected text or a number, found dict",
        "access_parameters.scope: expected text or a number, found list",
    ]


# -- all phases ------------------------------------------------------------------------------------------


def test_build_account_joins_the_phases():
    account = build_account(
        [conn(**EXTRA, integration_parameters={"client_secret": "s3"}, refresh_on=[401, "403"])],
        {"tenant": "t"},
    )

    assert account.conn_id == "acme" and account.integration_name == "acme"
    assert account.base_url == HOST
    assert account.token_request.url == "https://api.example.com/oauth2/token"
    assert account.refresh_on == frozenset({401, 403})
    assert account.injection_value("tok") == "Bearer tok"
    assert account.allowed_origins == {("https", "api.example.com", 443)}
    assert account.secrets == ("dev-secret", "s3")
    assert account.values["tenant"] == "t"


@pytest.mark.parametrize(
    ("lifetime", "max_lifetime", "kept", "problems"),
    [
        (86400, None, 86400, []),  # the default max_token_lifetime: a day
        (3600, 600.0, 600, []),  # the table's default (the form saves it): cut to the maximum, no error
        (
            86401,
            None,
            None,
            ["access_lifetime: expected at most [custom_token] max_token_lifetime (86400 s), found 86401"],
        ),
        (
            601,
            600.0,
            None,
            ["access_lifetime: expected at most [custom_token] max_token_lifetime (600 s), found 601"],
        ),
    ],
)
def test_access_lifetime_is_within_max_token_lifetime(
    lifetime: int, max_lifetime: float | None, kept: int | None, problems: list[str]
) -> None:
    chain = [conn(**EXTRA, access_lifetime=lifetime)]
    if not problems:
        assert build_account(chain, max_lifetime=max_lifetime).default_lifetime == kept
        return
    with pytest.raises(ConfigurationError) as caught:
        build_account(chain, max_lifetime=max_lifetime)
    assert caught.value.problems == problems


def test_one_error_lists_the_problems_of_every_phase():
    chain = [
        conn(
            **{
                **EXTRA,
                "access_verb": "PUT",  # check_fields
                "access_response_path": "header:",  # check_token_location
                "integration_parameters": {"tags": ["a"]},  # collect_values
                "inject_name": "X-{missing}",  # render_inputs
                "allowed_hosts": ["bad host"],  # allowed_origins
                "access_headers": {"X": {"n": 1}},  # build_token_request
                "timeout": "soon",  # merge_chain
            }
        )
    ]

    with pytest.raises(ConfigurationError) as caught:
        build_account(chain)

    named = [problem.split(":")[0] for problem in caught.value.problems]
    assert named == [
        "timeout",
        "access_verb",
        "access_response_path",
        "integration_parameters.tags",
        "inject_name",
        "allowed_hosts",
        "access_headers.X",
    ]
    assert str(caught.value).startswith("Connection 'acme' (custom_token) has 7 problems:\n  - timeout: ")
    assert "dev-secret" not in str(caught.value)
