"""Bad input gets a clear error before any request is made, and all problems are listed at once.

Every case is a connection a user could write (an `AIRFLOW_CONN_...` JSON). After the error, the demo API
must have seen nothing at all: no token request and no API request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

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
