"""Bad input gets a clear error before any request is made, and all problems are listed at once.

Every case is a connection a user could write (an `AIRFLOW_CONN_...` JSON). After the error, the demo API
must have seen nothing at all: no token request and no API request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_custom_token.compat import AIRFLOW_VERSION
from airflow_custom_token.errors import ConfigurationError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.conftest import demo_extra

pytestmark = pytest.mark.timeout(60)


PASSWORD = "dev-secret"

# name: (extra overrides or a raw extra string, field key the error must name)
CASES: dict[str, tuple[dict[str, Any] | str, str]] = {
    "missing-key": ({"integration_key": None}, "integration_key"),
    "missing-endpoint": ({"access_endpoint": None}, "access_endpoint"),
    "missing-template": ({"inject_template": None}, "inject_template"),
    "key-not-alphanumeric": ({"integration_key": "ac-me"}, "integration_key"),
    "key-with-space": ({"integration_key": "ac me"}, "integration_key"),
    "verb-put": ({"access_verb": "PUT"}, "access_verb"),
    "inject-as-cookie": ({"inject_as": "cookie"}, "inject_as"),
    "template-without-token": ({"inject_template": "Bearer"}, "inject_template"),
    "unknown-placeholder-in-parameters": ({"access_parameters": {"client_id": "{tenant_id}"}}, "{tenant_id}"),
    "unknown-placeholder-in-template": ({"inject_template": "{scheme} {token}"}, "inject_template"),
    "unknown-placeholder-in-endpoint": ({"access_endpoint": "/oauth2/{version}/token"}, "access_endpoint"),
    "malformed-extra": ("{not json", "extra"),
    "extra-not-an-object": ("[1, 2]", "extra"),
    "malformed-object-field": ({"access_parameters": "{client_id: dev}"}, "access_parameters"),
    "object-field-is-a-list": ({"access_headers": ["a"]}, "access_headers"),
    "refresh-on-word": ({"refresh_on": ["unauthorized"]}, "refresh_on"),
    "refresh-on-out-of-range": ({"refresh_on": [401, 999]}, "refresh_on"),
    "refresh-on-float": ({"refresh_on": [401.5]}, "refresh_on"),
    "refresh-on-not-json": ({"refresh_on": "401, 403"}, "refresh_on"),
    "timeout-word": ({"timeout": "soon"}, "timeout"),
    "timeout-negative": ({"timeout": -1}, "timeout"),
    "lifetime-zero": ({"access_lifetime": 0}, "access_lifetime"),
    "body-xml": ({"access_body": "xml"}, "access_body"),
    "request-parameters-part": ({"request_parameters": {"cookie": {"a": "b"}}}, "request_parameters"),
}


@pytest.fixture
def connect(demo: Any, make_conn: Callable[..., str]) -> Callable[..., CustomTokenHook]:
    def make(conn_id: str = "broken", host: str | None = None, **overrides: Any) -> CustomTokenHook:
        raw = overrides.pop("raw_extra", None)
        extra = raw if raw is not None else demo_extra(demo, **overrides)
        make_conn(conn_id, host=host or demo.url, login="dev", password=PASSWORD, extra=extra)
        return CustomTokenHook(conn_id)

    return make


def assert_nothing_sent(*servers: Any) -> None:
    for server in servers:
        stats = server.stats()
        assert (stats["token_requests"], stats["api_requests"]) == (0, 0), stats


def attempt(hook: CustomTokenHook) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        hook.run("/api/v1/whoami")
    return caught.value


@pytest.mark.parametrize("case", CASES)
def test_bad_field_is_named_before_any_request(
    connect: Callable[..., CustomTokenHook], demo: Any, case: str
) -> None:
    overrides, key = CASES[case]
    if isinstance(overrides, str) and AIRFLOW_VERSION < (3, 2, 0):
        pytest.skip("Airflow 3.0 and 3.1 refuse a connection whose extra is not a JSON object (not defined)")
    hook = connect(raw_extra=overrides) if isinstance(overrides, str) else connect(**overrides)

    error = attempt(hook)

    assert any(key in problem for problem in error.problems), error.problems
    assert "broken" in str(error)
    assert PASSWORD not in str(error)
    assert_nothing_sent(demo)


def test_unknown_placeholder_lists_the_parameters_available(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    error = attempt(
        connect(access_parameters={"client_id": "{tenant_id}"}, integration_parameters={"region": "x"})
    )

    assert "tenant_id" in str(error) and "region" in str(error) and "login" in str(error)
    assert_nothing_sent(demo)


@pytest.mark.parametrize(
    "tenant",
    [
        "evil.example/x",
        "evil.example?x=",
        "evil.example#",
        "user@evil.example",
        "evil.example:81",
        "a..b",
        "-a",
        "acme\n",
    ],
)
def test_host_placeholder_value_that_is_not_a_host_name(
    connect: Callable[..., CustomTokenHook], demo: Any, tenant: str
) -> None:
    hook = connect(host=f"http://{{tenant}}.localhost:{demo.port}", integration_parameters={"tenant": tenant})

    error = attempt(hook)

    assert any(p.startswith("host") and "{tenant}" in p for p in error.problems), error.problems
    assert_nothing_sent(demo)


def test_host_placeholder_in_the_token_endpoint_is_checked_too(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    hook = connect(
        access_endpoint=f"http://{{region}}.localhost:{demo.port}/oauth2/v1/token",
        integration_parameters={"region": "127.0.0.2:1/"},
    )

    error = attempt(hook)

    assert any(p.startswith("access_endpoint") for p in error.problems), error.problems
    assert_nothing_sent(demo)


def test_inheritance_cycle(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    connect("loop_b", integration_conn_id="loop_a")
    hook = connect("loop_a", integration_conn_id="loop_b")

    error = attempt(hook)

    assert "integration_conn_id" in str(error) and "loop_a -> loop_b -> loop_a" in str(error)
    assert_nothing_sent(demo)


def test_missing_integration_connection(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    error = attempt(connect(integration_conn_id="acme_integration_typo"))

    assert "integration_conn_id" in str(error) and "acme_integration_typo" in str(error)
    assert_nothing_sent(demo)


def test_missing_connection(demo: Any) -> None:
    with pytest.raises(ConfigurationError, match="not defined"):
        CustomTokenHook("no_such_connection_xyz").get_token()
    assert_nothing_sent(demo)


def test_integration_of_another_conn_type(
    connect: Callable[..., CustomTokenHook], demo: Any, make_conn: Callable[..., str]
) -> None:
    make_conn("plain_http", conn_type="http", host=demo.url)

    error = attempt(connect(integration_conn_id="plain_http"))

    assert "integration_conn_id" in str(error) and "http" in str(error)
    assert_nothing_sent(demo)


def test_endpoint_on_another_origin(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    with pytest.raises(ConfigurationError, match="endpoint") as caught:
        connect().run("http://127.0.0.2:9/api/v1/whoami")

    assert "127.0.0.2" in str(caught.value)
    assert_nothing_sent(demo)


@pytest.mark.parametrize(
    "endpoint",
    ["ORIGIN@127.0.0.2:9/api", "https://{login}.example/api", "HTTP://127.0.0.2:9/api"],
    ids=["userinfo", "placeholder-host", "upper-case-scheme"],
)
def test_endpoint_that_leaves_the_origin_some_other_way(
    connect: Callable[..., CustomTokenHook], demo: Any, endpoint: str
) -> None:
    hook = connect()
    with pytest.raises(ConfigurationError):
        hook.run(endpoint.replace("ORIGIN", demo.url))
    assert_nothing_sent(demo)


def test_test_endpoint_on_another_origin_is_a_configuration_problem(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """A test_endpoint elsewhere can never be called with the token: say so before fetching one."""
    hook = connect(test_endpoint="http://127.0.0.2:9/api/v1/whoami")

    with pytest.raises(ConfigurationError) as caught:
        hook.account

    assert any(p.startswith("test_endpoint") for p in caught.value.problems)
    ok, message = hook.test_connection()
    assert not ok and "test_endpoint" in message
    assert_nothing_sent(demo)


def test_all_problems_are_listed_at_once(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    hook = connect(
        host=f"http://{{tenant}}.localhost:{demo.port}",
        integration_key="ac-me",
        access_verb="PUT",
        access_parameters={"client_id": "{client}"},
        access_headers="{broken",
        inject_as="cookie",
        inject_name=None,
        inject_template="Bearer",
        refresh_on=[401, "soon"],
        timeout="never",
        integration_parameters={"tenant": "evil.example/x"},
    )

    error = attempt(hook)

    keys = [
        "host",
        "integration_key",
        "access_verb",
        "access_parameters",
        "access_headers",
        "inject_as",
        "inject_name",
        "inject_template",
        "refresh_on",
        "timeout",
    ]
    named = {key for key in keys for problem in error.problems if problem.startswith(key)}
    assert named == set(keys), error.problems
    assert str(error).count("\n  - ") == len(error.problems)
    assert_nothing_sent(demo)


def test_value_shape_problems_are_listed_with_the_others(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """A header value that is an object is as much a problem as a bad verb: one error names both."""
    hook = connect(
        access_verb="PUT",
        access_headers={"X-Client": {"nested": 1}},
        request_parameters={"header": {"X-Tags": ["a", "b"]}},
    )

    error = attempt(hook)

    named = {p.split(":")[0] for p in error.problems}
    assert {"access_verb", "access_headers.X-Client", "request_parameters.header.X-Tags"} <= named, (
        error.problems
    )
    assert_nothing_sent(demo)


def test_test_connection_reports_every_problem_without_a_request(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    ok, message = connect(access_verb="PUT", inject_as="cookie").test_connection()

    assert not ok and "access_verb" in message and "inject_as" in message
    assert_nothing_sent(demo)


# -- values that escaped as plain exceptions, or quoted a secret (issue 15, item 7) ------------------------
#
# Each is a value a user can type into the form. Each must be a `ConfigurationError` naming its field, with
# a message that quotes no part of a value that may hold a secret, and `test_connection()` must answer
# `(False, message)` for it instead of raising.

SECRET = "api-secret-9f3e"
LOCAL = "http://127.0.0.1:8080"
PORT_RANGE = "a port from 1 to 65535 after the host"
ASCII_HOST = "a host name in ASCII (an internationalized domain name in its xn-- form)"
IPV6 = "an IPv6 address in brackets, e.g. http://[::1]:8080, found an unmatched '[' or ']'"
NO_SCHEME = "host: expected a base URL with scheme, e.g. https://api.example.com; found"
ORIGIN = "a host name (meaning https) or an origin like https://host:port"

# name: (host, extra overrides, the one problem reported)
BAD_VALUES: dict[str, tuple[str, dict[str, Any], str]] = {
    "host-port-above-range": ("http://127.0.0.1:99999", {}, f"host: expected {PORT_RANGE}, found '99999'"),
    "host-port-zero": ("http://127.0.0.1:0/api", {}, f"host: expected {PORT_RANGE}, found '0'"),
    "allowed-hosts-port-above-range": (
        LOCAL,
        {"allowed_hosts": ["https://files.example.com:70000"]},
        f"allowed_hosts: expected {PORT_RANGE}, found '70000'",
    ),
    "host-unclosed-ipv6": ("http://[::1", {}, f"host: expected {IPV6}"),
    "allowed-hosts-unclosed-ipv6": (
        LOCAL,
        {"allowed_hosts": ["http://[::1:8080"]},
        f"allowed_hosts: expected {IPV6}",
    ),
    "allowed-hosts-other-scheme": (
        LOCAL,
        {"allowed_hosts": ["ftp://files.example.com"]},
        f"allowed_hosts: expected {ORIGIN}, found scheme 'ftp'",
    ),
    "lifetime-infinity": (
        LOCAL,
        {"access_lifetime": "Infinity"},
        "access_lifetime: expected a finite number of seconds, found 'Infinity'",
    ),
    "lifetime-nan": (
        LOCAL,
        {"access_lifetime": "NaN"},
        "access_lifetime: expected a finite number of seconds, found 'NaN'",
    ),
    "lifetime-1e400": (
        LOCAL,
        {"access_lifetime": "1e400"},
        "access_lifetime: expected a finite number of seconds, found '1e400'",
    ),
    "lifetime-json-infinity": (
        LOCAL,
        {"access_lifetime": float("inf")},
        "access_lifetime: expected a finite number of seconds, found Infinity",
    ),
    "lifetime-huge-integer": (
        LOCAL,
        {"access_lifetime": 10**400},
        "access_lifetime: expected a finite number of seconds, found a number too large to use",
    ),
    "timeout-nan": (LOCAL, {"timeout": "NaN"}, "timeout: expected a finite number of seconds, found 'NaN'"),
    "refresh-on-superscript-digit": (
        LOCAL,
        {"refresh_on": ["²"]},
        "refresh_on: expected HTTP status codes (100-599), found '²'",
    ),
    "endpoint-two-ports": (
        LOCAL,
        {"access_endpoint": "http://h:1:2/token"},
        f"access_endpoint: expected {PORT_RANGE}, found '1:2'",
    ),
    "test-endpoint-two-ports": (
        LOCAL,
        {"test_endpoint": "http://h:1:2/me"},
        f"test_endpoint: expected {PORT_RANGE}, found '1:2'",
    ),
    "host-full-width-at": (
        "http://evil.example\uff20127.0.0.1:8080",
        {},
        f"host: expected {ASCII_HOST}, found the character '\uff20' (U+FF20), which HTTP clients read as "
        "another or refuse",
    ),
    "host-full-width-letters": (
        "http://\uff45xample.com",
        {},
        f"host: expected {ASCII_HOST}, found the character '\uff45' (U+FF45), which HTTP clients read as "
        "another or refuse",
    ),
    "endpoint-ideographic-full-stop": (
        LOCAL,
        {"access_endpoint": "https://auth\u3002example.com/token"},
        f"access_endpoint: expected {ASCII_HOST}, found the character '\u3002' (U+3002), which HTTP clients "
        "read as another or refuse",
    ),
    "host-backslash": (
        "http://127.0.0.1:8080\\@evil.example",
        {},
        "host: expected a host name, found the character '\\', which a URL's host cannot hold",
    ),
    "host-userinfo-not-ascii": (
        "http://dev:p\u00e4ssword@api.example.com",
        {},
        "host: expected a URL whose user and password (before @) are ASCII and percent-encoded, found other "
        "text",
    ),
    "host-without-host-name": ("http://:8080/api", {}, "host: expected a URL with a host name, found none"),
    "host-without-scheme-with-a-secret-in-the-path": (
        "127.0.0.1:8080/{apiSecret}",
        {},
        f"{NO_SCHEME} '127.0.0.1:8080/...'",
    ),
    "host-without-scheme-with-userinfo": (
        "dev:{apiSecret}@api.example.com",
        {},
        f"{NO_SCHEME} '...@api.example.com'",
    ),
    "host-without-scheme-that-is-a-secret": ("{apiSecret}", {}, f"{NO_SCHEME} '***'"),
    "host-other-scheme": ("ftp://files.example.com/{apiSecret}", {}, f"{NO_SCHEME} scheme 'ftp'"),
}


def bad_value_extra(overrides: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "integration_key": "acme",
        "access_endpoint": "/oauth2/v1/token",
        "access_verb": "POST",
        "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        "integration_parameters": {"apiSecret": SECRET},
    }
    return {**extra, **overrides}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value_is_a_configuration_error_naming_its_field(case: str) -> None:
    from airflow_custom_token.account.build import build_account
    from airflow_custom_token.account.raw import RawConnection

    host, overrides, problem = BAD_VALUES[case]
    raw = RawConnection(
        "broken", "custom_token", host=host, login="dev", password=PASSWORD, extra=bad_value_extra(overrides)
    )

    with pytest.raises(ConfigurationError) as caught:
        build_account([raw])

    assert caught.value.problems == [problem]
    assert SECRET not in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize("case", BAD_VALUES)
def test_test_connection_answers_false_for_a_bad_value(
    demo: Any, make_conn: Callable[..., str], case: str
) -> None:
    host, overrides, problem = BAD_VALUES[case]
    make_conn("broken", host=host, login="dev", password=PASSWORD, extra=bad_value_extra(overrides))

    ok, message = CustomTokenHook("broken").test_connection()

    assert (ok, message) == (
        False,
        f"Configuration failed: Connection 'broken' (custom_token) has 1 problem:\n  - {problem}",
    )
    assert_nothing_sent(demo)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://h:1:2/api", f"endpoint: expected {PORT_RANGE}, found '1:2'"),
        ("http://127.0.0.1:99999/api", f"endpoint: expected {PORT_RANGE}, found '99999'"),
        ("http://[::1/api", f"endpoint: expected {IPV6}"),
        (
            "http://127.0.0.1\uff1a8080/api",
            f"endpoint: expected {ASCII_HOST}, found the character '\uff1a' "
            "(U+FF1A), which HTTP clients read as another or refuse",
        ),
    ],
    ids=["two-ports", "port-above-range", "unclosed-ipv6", "full-width-colon"],
)
def test_bad_endpoint_of_a_request_is_a_configuration_error(
    connect: Callable[..., CustomTokenHook], demo: Any, endpoint: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect().run(endpoint)

    assert caught.value.problems == [problem]
    assert_nothing_sent(demo)


def test_endpoint_on_another_origin_names_the_origin_of_host_only(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """The base URL's path may hold a secret-named parameter's value: the message shows its origin."""
    hook = connect(host=f"{demo.url}/tenants/{{apiSecret}}", integration_parameters={"apiSecret": SECRET})

    with pytest.raises(ConfigurationError) as caught:
        hook.run("http://127.0.0.2:9/api")

    assert caught.value.problems == [
        f"endpoint: expected a path or a URL on the origin of host ({demo.url}) or of allowed_hosts; "
        "found a URL on http://127.0.0.2:9, which would receive the token"
    ]
    assert_nothing_sent(demo)


@pytest.mark.parametrize("raw", ["inf", "NaN", "1e400"])
def test_test_connection_answers_false_for_a_non_finite_setting(
    acme: str, demo: Any, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", raw)

    ok, message = CustomTokenHook(acme).test_connection()

    assert (ok, message) == (
        False,
        f"Configuration failed: ValueError: [custom_token] token_request_retries: expected a finite number, "
        f"found {raw!r}",
    )
    assert_nothing_sent(demo)
