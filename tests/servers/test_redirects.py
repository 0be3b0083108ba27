"""The token and the request parameters go only to the connection's origin, whatever the redirects say.

Every test talks to real servers on loopback: the demo API on 127.0.0.1 (the connection's `host`), a
second demo API on 127.0.0.2 (another origin), and for https -> http a small TLS server (tests/tls.py).
Each client the provider offers is checked: `hook.run`, the session from `hook.get_conn()`,
`CustomTokenAuth` on a plain `requests.Session`, and the async client the trigger uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import TokenRequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.settings import Settings
from tests.conftest import demo_extra
from tests.tls import RedirectServer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


PASSWORD = "dev-secret"
TENANT = "tenant-5d1c9e"  # a request parameter value, sent as header X-Tenant and query parameter tenant

INJECTIONS = {
    "custom-header": {"inject_as": "header", "inject_name": "X-Api-Key", "inject_template": "{token}"},
    "bearer": {"inject_as": "header", "inject_name": "Authorization", "inject_template": "Bearer {token}"},
    "url": {"inject_as": "url", "inject_name": "sid", "inject_template": "{token}"},
}
REQUEST_PARAMETERS = {"header": {"X-Tenant": TENANT}, "url": {"tenant": TENANT}}


@dataclass
class Account:
    """A connection as the user defined it (kept to build `CustomTokenAuth` without Airflow too)."""

    conn_id: str
    host: str
    extra: dict[str, Any]

    @property
    def hook(self) -> CustomTokenHook:
        return CustomTokenHook(self.conn_id)


@pytest.fixture
def other() -> Iterator[DemoServer]:
    """Another origin: a second demo API on 127.0.0.2 (loopback)."""
    with DemoServer(host="127.0.0.2") as server:
        yield server


@pytest.fixture
def connect(demo: DemoServer, make_conn: Callable[..., str]) -> Callable[..., Account]:
    def make(injection: str, host: str | None = None, **overrides: Any) -> Account:
        settings = {
            **INJECTIONS[injection],
            "request_parameters": REQUEST_PARAMETERS,
            "access_endpoint": f"{demo.url}/oauth2/v1/token",  # absolute: the API host may differ
            **overrides,
        }
        extra = demo_extra(demo, **settings)
        host = host or demo.url
        make_conn("redirecting", host=host, login="dev", password=PASSWORD, extra=extra)
        return Account("redirecting", host, extra)

    return make


# -- the four clients ---------------------------------------------------------------------------------


def via_run(account: Account, url: str) -> int:
    return account.hook.run(url, extra_options={"check_response": False}).status_code


def via_get_conn(account: Account, url: str) -> int:
    return account.hook.get_conn().get(url, timeout=10).status_code


def via_auth(account: Account, url: str) -> int:
    """`CustomTokenAuth` on a plain `requests.Session`, built from values (no Airflow connection)."""
    auth = CustomTokenAuth.from_values(
        account.host, account.extra, login="dev", password=PASSWORD, settings=Settings(host_cache=False)
    )
    with requests.Session() as session:
        return session.get(url, auth=auth, timeout=10, verify=account.extra.get("verify", True)).status_code


def via_async(account: Account, url: str) -> int:
    async def go() -> int:
        async with AsyncCustomTokenClient(account.hook.source) as client:
            return (await client.request("GET", url)).status

    return asyncio.run(go())


CLIENTS = {"run": via_run, "get_conn": via_get_conn, "auth": via_auth, "async": via_async}
# The session of get_conn() is CustomTokenAuth on a requests.Session, as "auth" is: the secondary
# tests run on one of the two (plus the hook and the async client) to keep the suite quick.
SOME_CLIENTS = ["run", "auth", "async"]


# -- helpers ------------------------------------------------------------------------------------------


def issued_tokens(server: DemoServer) -> list[str]:
    """Every token the demo server has issued (its own record)."""
    return list(server._tokens)


def leaked(entries: list[dict[str, Any]], secrets: list[str]) -> list[str]:
    """The secrets (raw or URL-encoded) that appear anywhere in the recorded requests."""
    blob = json.dumps(entries)
    return [s for s in secrets if any(form in blob for form in {s, quote(s, safe=""), quote_plus(s)})]


def redirect_to(origin: DemoServer, target: str) -> str:
    return f"{origin.url}/api/v1/redirect?to={quote(target, safe='')}"


# -- redirects to another origin ------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_redirect_to_another_origin_carries_no_token_and_no_request_parameters(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, injection: str, client: str
) -> None:
    account = connect(injection)

    status = CLIENTS[client](account, redirect_to(demo, f"{other.url}/api/v1/echo?page=2"))

    assert status == 401  # the other origin got no token
    origin_saw = [e for e in demo.api_log if e["path"] == "/api/v1/redirect"]
    assert origin_saw[0]["account"] == "dev", "control: the origin itself received the token"
    assert other.api_log, "the redirect was followed"
    for entry in other.api_log:
        assert entry["query"].get("page") == "2"  # the target's own query survives
        assert "X-Api-Key" not in entry["headers"] and "Authorization" not in entry["headers"]
        assert "sid" not in entry["query"] and "tenant" not in entry["query"]
    assert leaked(other.api_log, [*issued_tokens(demo), TENANT, PASSWORD]) == []


@pytest.mark.parametrize("client", SOME_CLIENTS)
@pytest.mark.parametrize("injection", ["custom-header", "url"])
def test_redirect_chain_strips_credentials_at_the_hop_that_leaves_the_origin(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, injection: str, client: str
) -> None:
    account = connect(injection)
    chain = redirect_to(demo, redirect_to(demo, f"{other.url}/api/v1/echo"))

    assert CLIENTS[client](account, chain) == 401

    hops = [e for e in demo.api_log if e["path"] == "/api/v1/redirect"]
    assert [e["account"] for e in hops[:2]] == ["dev", "dev"], "same-origin hops keep the token"
    assert leaked(other.api_log, [*issued_tokens(demo), TENANT]) == []


@pytest.mark.parametrize("client", SOME_CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_same_origin_redirect_keeps_the_token(
    connect: Callable[..., Account], demo: DemoServer, injection: str, client: str
) -> None:
    account = connect(injection)

    assert CLIENTS[client](account, redirect_to(demo, f"{demo.url}/api/v1/echo")) == 200

    echo = [e for e in demo.api_log if e["path"] == "/api/v1/echo"]
    assert echo and echo[-1]["account"] == "dev"
    assert echo[-1]["headers"].get("X-Tenant") == TENANT or echo[-1]["query"].get("tenant") == TENANT


@pytest.mark.parametrize("client", SOME_CLIENTS)
@pytest.mark.parametrize("injection", ["custom-header", "url"])
def test_allowed_hosts_lets_the_token_follow(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, injection: str, client: str
) -> None:
    """Control for the tests above: an origin listed in `allowed_hosts` does receive the token."""
    account = connect(injection, allowed_hosts=[other.url])

    CLIENTS[client](account, redirect_to(demo, f"{other.url}/api/v1/echo"))

    assert set(leaked(other.api_log, issued_tokens(demo))) == set(issued_tokens(demo))


def test_an_explicit_request_to_another_origin_is_refused_before_any_request(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer
) -> None:
    from airflow_custom_token.errors import ConfigurationError

    account = connect("custom-header")

    with pytest.raises(ConfigurationError, match="endpoint"):
        account.hook.run(f"{other.url}/api/v1/echo")

    assert demo.stats()["token_requests"] == 0 and other.stats()["api_requests"] == 0


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_redirect_that_keeps_the_query_string_does_not_take_the_token_along(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, injection: str, client: str
) -> None:
    """Servers often redirect to `<elsewhere><request URI>`, query included: the URL token must not follow."""
    with RedirectServer(lambda port, path: f"{other.url}{path}") as tls:
        account = connect(injection, host=tls.https_url, verify=False)

        CLIENTS[client](account, f"{tls.https_url}/api/v1/echo?page=2")

        assert leaked(tls.received("https")[:1], issued_tokens(demo)), "control: the origin got the token"
    assert [e["query"].get("page") for e in other.api_log][:1] == ["2"]
    assert leaked(other.api_log, [*issued_tokens(demo), TENANT]) == []


@pytest.mark.parametrize("client", CLIENTS)
def test_scheme_relative_redirect_to_another_origin_drops_the_token(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, client: str
) -> None:
    """`Location: //127.0.0.2:port/...` names another origin without a scheme."""
    with RedirectServer(plain_redirect_to=f"//{other.host}:{other.port}/api/v1/echo") as origin:
        account = connect("url", host=origin.http_url)

        assert CLIENTS[client](account, f"{origin.http_url}/start") == 401

        assert leaked(origin.received("http"), issued_tokens(demo)), "control: the origin got the token"
    assert other.api_log, "the redirect was followed"
    assert leaked(other.api_log, [*issued_tokens(demo), TENANT]) == []


# -- https -> http ------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_https_to_http_redirect_on_the_same_host_and_port_drops_the_token(
    connect: Callable[..., Account], demo: DemoServer, injection: str, client: str
) -> None:
    """https://127.0.0.1:P answers 302 to http://127.0.0.1:P: only the scheme changes."""
    with RedirectServer() as tls:
        account = connect(injection, host=tls.https_url, verify=False)

        CLIENTS[client](account, f"{tls.https_url}/api/v1/echo")

        secure, plain = tls.received("https"), tls.received("http")
    tokens = issued_tokens(demo)
    assert leaked(secure[:1], tokens) == tokens, "control: the https origin received the token"
    assert plain, "the downgrade redirect was followed"
    assert leaked(plain, [*tokens, TENANT]) == []


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_https_to_http_redirect_to_the_demo_api_drops_the_token(
    connect: Callable[..., Account], demo: DemoServer, injection: str, client: str
) -> None:
    with RedirectServer(f"{demo.url}/api/v1/echo") as tls:
        account = connect(injection, host=tls.https_url, verify=False)

        assert CLIENTS[client](account, f"{tls.https_url}/anything") == 401

    assert leaked(demo.api_log, [*issued_tokens(demo), TENANT]) == []


# -- what another origin says does not touch the token ----------------------------------------------------


@pytest.mark.parametrize(
    "client",
    SOME_CLIENTS,
)
def test_a_401_from_another_origin_does_not_refresh_the_token(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, client: str
) -> None:
    """The 401 comes from an origin that was sent no token: it says nothing about ours."""
    account = connect("custom-header")

    CLIENTS[client](account, redirect_to(demo, f"{other.url}/api/v1/echo"))

    assert demo.stats()["token_requests"] == 1
    assert len(other.api_log) == 1


# -- the token request itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sync", "async"])
def test_token_request_redirected_to_another_origin_does_not_carry_the_client_secret(
    connect: Callable[..., Account], demo: DemoServer, other: DemoServer, transport: str
) -> None:
    """A token endpoint that redirects elsewhere must not hand the other origin the client's secret."""
    account = connect(
        "custom-header",
        access_endpoint=redirect_to(demo, f"{other.url}/oauth2/v1/token"),
        access_headers={"X-Client-Secret": "{password}"},
    )
    hook = account.hook

    with pytest.raises(TokenRequestError) as caught:
        if transport == "sync":
            hook.get_token()
        else:

            async def go() -> str:
                async with AsyncCustomTokenClient(hook.source) as client:
                    return await client.get_token()

            asyncio.run(go())

    message = str(caught.value)
    assert message.startswith(f"Token request failed: POST {demo.url}/api/v1/redirect?to=")
    assert f"answered 302 (a redirect to http://{other.host})" in message
    assert "do not follow redirects: set access_endpoint to the final URL" in message
    assert caught.value.status == 302 and not caught.value.retryable
    assert PASSWORD not in message
    assert demo.stats()["token_requests"] == 0 and len(demo.token_log) == 0  # /redirect is the API's route
    assert [e["path"] for e in demo.api_log] == ["/api/v1/redirect"]  # asked once: a redirect is not retried
    assert other.token_log == [] and other.api_log == [], "the redirect was not followed"
    assert leaked(other.token_log + other.api_log, [PASSWORD]) == []
