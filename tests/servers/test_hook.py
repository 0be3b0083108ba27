"""CustomTokenHook against the real demo API: token request shapes, token locations, injection,
request parameters, placeholders, inheritance, test_connection. Connections are AIRFLOW_CONN_* JSON."""

from __future__ import annotations

import pytest
import requests

from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.errors import ConfigurationError, RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.settings import Settings
from tests.conftest import demo_extra

# -- token request shape ------------------------------------------------------------------------


def test_post_form_token_request(demo, acme):
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    [seen] = demo.token_log
    assert seen["method"] == "POST"
    assert seen["content_type"] == "application/x-www-form-urlencoded"
    assert seen["form"] == {"client_id": "dev", "client_secret": "dev-secret"}


def test_post_json_token_request_with_headers(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="qa",
        password="qa-secret",
        extra=demo_extra(
            demo,
            access_body="json",
            access_headers={"X-Tenant": "{tenant}"},
            integration_parameters={"tenant": "t42"},
        ),
    )
    CustomTokenHook("acme").get_token()
    [seen] = demo.token_log
    assert seen["content_type"] == "application/json"
    assert seen["json"] == {"client_id": "qa", "client_secret": "qa-secret"}
    assert seen["headers"]["X-Tenant"] == "t42"


def test_get_token_request_sends_query_string(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="prod",
        password="prod-secret",
        extra=demo_extra(
            demo, access_verb="GET", access_parameters={"username": "{login}", "password": "{password}"}
        ),
    )
    assert CustomTokenHook("acme").run("/api/v1/whoami").json()["account"] == "prod"
    [seen] = demo.token_log
    assert seen["method"] == "GET"
    assert seen["query"] == {"username": "prod", "password": "prod-secret"}
    assert not seen["form"]


# -- token locations and expiry -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "location"),
    [
        ("/oauth2/v1/token", "access_token"),
        ("/auth/v1/session", "data.session.id"),
        ("/auth/v1/header", "header:X-Session-Token"),
        ("/auth/v1/cookie", "cookie:sid"),
        ("/auth/v1/text", "text"),
    ],
)
def test_every_token_location(demo, make_conn, endpoint, location):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, access_endpoint=demo.url + endpoint, access_response_path=location),
    )
    hook = CustomTokenHook("acme")
    token = hook.get_token()
    assert token.startswith("tok_")
    assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    assert demo.stats()["token_requests"] == 1


# -- injection ------------------------------------------------------------------------------------


def test_header_injection_with_template_and_custom_name(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, inject_name="X-Api-Key", inject_template="Token {token}"),
    )
    hook = CustomTokenHook("acme")
    hook.run("/api/v1/whoami")
    sent = demo.api_log[-1]["headers"]
    assert sent["X-Api-Key"] == f"Token {hook.get_token()}"
    assert "Authorization" not in sent


def test_url_injection(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, inject_as="url", inject_name="access_key", inject_template="{token}"),
    )
    hook = CustomTokenHook("acme")
    body = hook.run("/api/v1/whoami", params={"q": "x"}).json()
    assert body["account"] == "dev"
    assert body["query"] == {"q": "x", "access_key": "<token>"}
    assert demo.api_log[-1]["query"]["access_key"] == hook.get_token()


def test_request_parameters_on_every_request(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(
            demo,
            request_parameters={
                "header": {"X-Api-Version": "2", "X-Client": "{login}"},
                "url": {"locale": "en"},
            },
        ),
    )
    hook = CustomTokenHook("acme")
    for _ in range(3):
        hook.run("/api/v1/whoami")
    session = hook.get_conn()
    session.get(f"{demo.url}/api/v1/whoami").raise_for_status()
    assert len(demo.api_log) == 4
    for seen in demo.api_log:
        assert seen["headers"]["X-Api-Version"] == "2"
        assert seen["headers"]["X-Client"] == "dev"
        assert seen["query"]["locale"] == "en"


# -- placeholders -----------------------------------------------------------------------------


def test_placeholders_in_host_and_endpoint(demo, make_conn):
    port = demo.url.rsplit(":", 1)[1]
    make_conn(
        "acme",
        host=f"http://{{serverName}}:{port}",
        login="dev",
        password="dev-secret",
        extra=demo_extra(
            demo,
            access_endpoint=f"http://{{serverName}}:{port}/oauth2/v1/token",
            integration_parameters={"serverName": "localhost", "report": "a b/c"},
        ),
    )
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").json()["host"] == f"localhost:{port}"
    response = hook.run("/api/v1/reports/{report}", extra_options={"check_response": False})
    assert response.request.path_url.startswith("/api/v1/reports/a%20b%2Fc")
    # The task's parameters win over the connection's.
    task_hook = CustomTokenHook("acme", integration_parameters={"serverName": "127.0.0.1"})
    assert task_hook.run("/api/v1/whoami").json()["host"] == f"127.0.0.1:{port}"


def test_redirect_uri_builtin_by_realm(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(
            demo,
            realm="eu",
            access_parameters={
                "client_id": "{login}",
                "client_secret": "{password}",
                "redirect_uri": "{redirectUri}",
            },
        ),
    )
    CustomTokenHook("acme").get_token()
    assert demo.token_log[0]["form"]["redirect_uri"] == (
        "https://eu.api.prod.airkit.com/internal/sessions/v1/auth/callback"
    )


def test_redirect_uri_overridable_in_config(demo, make_conn, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__REDIRECT_URI_AP", "https://example.test/cb")
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, realm="ap", access_headers={"X-Redirect": "{redirectUri}"}),
    )
    CustomTokenHook("acme").get_token()
    assert demo.token_log[0]["headers"]["X-Redirect"] == "https://example.test/cb"


# -- inheritance: one integration, DEV / QA / PROD accounts ---------------------------------------


@pytest.fixture
def accounts(demo, make_conn):
    make_conn(
        "acme_integration",
        host=demo.url,
        extra=demo_extra(
            demo,
            integration_name="ACME",
            request_parameters={"header": {"X-Env": "{env}"}},
            integration_parameters={"env": "unset", "region": "eu"},
        ),
    )
    for env in ("dev", "qa", "prod"):
        make_conn(
            f"acme_{env}",
            login=env,
            password=f"{env}-secret",
            extra={"integration_conn_id": "acme_integration", "integration_parameters": {"env": env.upper()}},
        )


def test_accounts_inherit_integration(demo, accounts):
    seen = {}
    for env in ("dev", "qa", "prod"):
        hook = CustomTokenHook(f"acme_{env}")
        body = hook.run("/api/v1/whoami").json()
        seen[env] = (body["account"], body["request_headers"]["X-Env"])
        assert hook.account.integration_name == "ACME"
    assert seen == {"dev": ("dev", "DEV"), "qa": ("qa", "QA"), "prod": ("prod", "PROD")}
    # Separate tokens per account: three token requests, three different cache keys.
    assert demo.stats()["token_requests"] == 3
    assert len({CustomTokenHook(f"acme_{e}").account.cache_key for e in ("dev", "qa", "prod")}) == 3


def test_account_overrides_integration_fields(demo, accounts, make_conn):
    make_conn(
        "acme_dev",
        login="dev",
        password="dev-secret",
        extra={
            "integration_conn_id": "acme_integration",
            "inject_name": "X-Api-Key",
            "inject_template": "{token}",
        },
    )
    hook = CustomTokenHook("acme_dev")
    hook.run("/api/v1/whoami")
    assert demo.api_log[-1]["headers"]["X-Api-Key"] == hook.get_token()


def test_legacy_prefixed_extra_keys(demo, make_conn):
    legacy = {f"extra__custom_token__{k}": v for k, v in demo_extra(demo).items()}
    legacy["extra__custom_token__access_parameters"] = (
        '{"client_id": "{login}", "client_secret": "{password}"}'
    )
    make_conn("acme", host=demo.url, login="dev", password="dev-secret", extra=legacy)
    assert CustomTokenHook("acme").run("/api/v1/whoami").json()["account"] == "dev"


# -- run() behaviour --------------------------------------------------------------------------


def test_run_raises_for_error_status_without_secrets(demo, acme):
    hook = CustomTokenHook("acme")
    with pytest.raises(RequestError) as caught:
        hook.run("/api/v1/status/503")
    message = str(caught.value)
    assert "503" in message and "/api/v1/status/503" in message
    assert hook.get_token() not in message and "dev-secret" not in message
    assert hook.run("/api/v1/status/503", extra_options={"check_response": False}).status_code == 503


def test_run_accepts_absolute_url_on_same_origin_only(demo, acme):
    hook = CustomTokenHook("acme")
    assert hook.run(f"{demo.url}/api/v1/whoami").status_code == 200
    with pytest.raises(ConfigurationError, match="endpoint: expected a path or a URL on the origin"):
        hook.run("http://127.0.0.2:9/api/v1/whoami")
    assert demo.stats()["api_requests"] == 1


def test_run_rejects_unknown_extra_options(acme):
    with pytest.raises(ConfigurationError, match="extra_options"):
        CustomTokenHook("acme").run("/api/v1/whoami", extra_options={"retries": 3})


def test_auth_object_plugs_into_plain_session(demo):
    auth = CustomTokenAuth.from_values(
        demo.url, demo_extra(demo), login="qa", password="qa-secret", settings=Settings(host_cache=False)
    )
    with requests.Session() as session:
        session.auth = auth
        assert session.get(f"{demo.url}/api/v1/whoami").json()["account"] == "qa"
    assert demo.stats()["authenticated"] == 1


def test_repr_never_shows_secrets(acme):
    hook = CustomTokenHook("acme")
    token = hook.get_token()
    for text in (repr(hook), repr(hook.account), repr(hook.auth), repr(hook.source), repr(hook.get_conn())):
        assert token not in text and "dev-secret" not in text


# -- test_connection's steps ------------------------------------------------------------------


def test_test_connection_success(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, test_endpoint="/api/v1/whoami"),
    )
    ok, message = CustomTokenHook("acme").test_connection()
    assert ok, message
    assert message.startswith("Token obtained from") and "expires" in message and "answered 200" in message
    assert "tok_" not in message


def test_test_connection_token_request_step(demo, make_conn):
    make_conn("acme", host=demo.url, login="dev", password="wrong-password", extra=demo_extra(demo))
    ok, message = CustomTokenHook("acme").test_connection()
    assert not ok
    assert message.startswith("Token request failed") and "401" in message
    assert "wrong-password" not in message


def test_test_connection_token_location_step(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, access_response_path="data.token"),
    )
    ok, message = CustomTokenHook("acme").test_connection()
    assert not ok
    assert message.startswith("Token location failed") and "data.token" in message
    assert "access_token" in message  # names what the response held instead


def test_test_connection_test_endpoint_step(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, test_endpoint="/api/v1/status/403"),
    )
    ok, message = CustomTokenHook("acme").test_connection()
    assert not ok
    assert message.startswith("Test endpoint failed") and "403" in message
    assert "tok_" not in message


def test_form_defaults_saved_by_an_account_do_not_override_its_integration(demo, make_conn):
    """The UI saves every field with its default; an account made there still inherits GET and url."""
    make_conn(
        "acme_integration",
        host=demo.url,
        extra=demo_extra(
            demo,
            access_verb="GET",
            access_parameters={"username": "{login}", "password": "{password}"},
            inject_as="url",
            inject_name="key",
            inject_template="{token}",
        ),
    )
    form_saved = {
        "integration_conn_id": "acme_integration",
        "access_verb": "POST",
        "access_body": "form",
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        "realm": "us",
        "refresh_on": [401],
        "verify": True,
        "timeout": None,
        "integration_key": None,
        "access_parameters": {},
        "allowed_hosts": [],
    }
    make_conn("acme_dev", login="dev", password="dev-secret", extra=form_saved)
    hook = CustomTokenHook("acme_dev")
    assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    assert demo.token_log[0]["method"] == "GET"
    assert demo.api_log[-1]["query"]["key"] == hook.get_token()


def test_proxy_variables_are_honoured_per_origin(demo, make_conn, monkeypatch):
    """HTTP_PROXY / NO_PROXY are read once per origin: the base URL bypasses, an allowed host does not."""
    port = demo.url.rsplit(":", 1)[1]
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, allowed_hosts=[f"http://localhost:{port}"]),
    )
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").status_code == 200  # 127.0.0.1 is in NO_PROXY
    with pytest.raises(RequestError, match=r"ProxyError|ConnectionError"):
        hook.run(f"http://localhost:{port}/api/v1/whoami")  # localhost is not: it goes to the proxy
    assert demo.stats()["api_requests"] == 1


def test_a_header_value_a_header_cannot_carry_is_a_placeholder_error_before_anything_is_sent(demo, make_conn):
    make_conn(
        "acme",
        host=demo.url,
        login="dev",
        password="dev-secret",
        extra=demo_extra(demo, integration_parameters={"city": "東京", "town": "Zürich"}),
    )
    hook = CustomTokenHook("acme")

    # Latin-1 text travels in a header; the path takes any text, percent-encoded
    hook.run("/api/v1/whoami", headers={"X-Town": "{town}"})
    assert demo.api_log[-1]["headers"]["X-Town"] == "Zürich"
    with pytest.raises(ConfigurationError) as caught:
        hook.run("/api/v1/whoami", headers={"X-City": "{city}"})

    assert "headers.X-City: placeholder {city} has a value with characters a header cannot carry" in str(
        caught.value
    )
    assert "東京" not in str(caught.value)
    assert len(demo.api_log) == 1  # the second request was never sent
