"""Transport settings of a connection (issue 13): a TLS client certificate (`client_cert`, `client_key`), a
CA bundle (`ca_bundle`) and `proxies`, for token and API requests, sync and deferred.

The TLS API (`tests.apis.Api(tls=pki)`) requires a client certificate signed by its test CA; the
certificates are made by the tests (`tests.apis.Pki`, with cryptography).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_custom_token.errors import ConfigurationError, CustomTokenError, TokenRequestError
from airflow_custom_token.hooks.custom_token import CustomTokenAsyncHook, CustomTokenHook
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.apis import Api, ForwardProxy, Pki, closed_port
from tests.servers.test_operators import run_deferred
from tests.triggering import run_trigger

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("task_runner_off")]

CONN_ID = "mtls"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_api(pki: Pki) -> Iterator[Api]:
    with Api(tls=pki) as server:
        yield server


@pytest.fixture
def conn(tls_api: Api, make_conn: Callable[..., str]) -> Callable[..., str]:
    def make(**extra: Any) -> str:
        return make_conn(CONN_ID, **tls_api.connection(**extra))

    return make


def certificate(pki: Pki) -> dict[str, str]:
    return {"ca_bundle": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}


def via(kind: str, endpoint: str = "/api/data") -> dict[str, Any]:
    """GET `endpoint` the way `kind` does; the echo of the API."""
    if kind == "sync":
        return dict(CustomTokenHook(CONN_ID).run(endpoint).json())
    if kind == "async":
        return dict(asyncio.run(CustomTokenAsyncHook(CONN_ID).run(endpoint)).json())
    op = CustomTokenHttpOperator(
        task_id="call",
        custom_token_conn_id=CONN_ID,
        endpoint=endpoint,
        deferrable=True,
        response_filter=lambda response: response.json(),
    )
    result: dict[str, Any] = run_deferred(op, {})[0]
    return result


# -- a TLS client certificate -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async", "deferred"])
def test_token_and_api_requests_present_the_client_certificate(
    tls_api: Api, conn: Callable[..., str], pki: Pki, kind: str
) -> None:
    conn(**certificate(pki))

    echo = via(kind)

    assert echo["peer"] == "client"
    assert [s.peer for s in tls_api.state.token_requests] == ["client"]
    assert [(s.peer, s.token) for s in tls_api.state.seen] == [("client", tls_api.state.issued[0])]
    assert tls_api.state.refused == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_certificate_file_that_holds_its_key_needs_no_client_key(
    tls_api: Api, conn: Callable[..., str], pki: Pki, kind: str
) -> None:
    conn(ca_bundle=str(pki.ca), client_cert=str(pki.client_both))

    assert via(kind)["peer"] == "client"


@pytest.mark.parametrize("kind", ["sync", "async", "deferred"])
def test_without_the_certificate_the_error_says_why(
    tls_api: Api, conn: Callable[..., str], pki: Pki, kind: str
) -> None:
    conn(ca_bundle=str(pki.ca))
    expected = TokenRequestError if kind != "deferred" else CustomTokenError

    with pytest.raises(expected) as error:
        via(kind)

    message = str(error.value)
    assert message.startswith(f"Token request failed: POST {tls_api.url}/token "), message
    # the server's alert ("requires a TLS client certificate"), or only its closing the connection
    assert "TLS client certificate" in message, message
    assert message.endswith("the connection sets none (client_cert)"), message
    assert tls_api.state.token_requests == [] and tls_api.state.seen == []
    assert any("peer did not return a certificate" in why for why in tls_api.state.refused)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_untrusted_server_says_to_set_ca_bundle(
    tls_api: Api, conn: Callable[..., str], pki: Pki, kind: str
) -> None:
    conn(client_cert=str(pki.client_cert), client_key=str(pki.client_key))

    with pytest.raises(TokenRequestError, match=r"not signed by a CA this host trusts: set ca_bundle"):
        via(kind)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # verify=False: on purpose here
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_verify_false_still_presents_the_client_certificate(
    tls_api: Api, conn: Callable[..., str], pki: Pki, kind: str
) -> None:
    conn(verify=False, client_cert=str(pki.client_cert), client_key=str(pki.client_key))

    assert via(kind)["peer"] == "client"


def test_a_certificate_of_another_ca_is_refused_and_said_so(
    tls_api: Api, conn: Callable[..., str], pki: Pki, tmp_path: Path
) -> None:
    stranger = Pki(tmp_path / "other", ca_name="another CA")
    conn(ca_bundle=str(pki.ca), client_cert=str(stranger.client_cert), client_key=str(stranger.client_key))

    with pytest.raises(TokenRequestError) as error:
        via("sync")

    message = str(error.value)  # the server's alert (unknown CA), or only its closing the connection
    assert message.endswith(
        ("the server did not accept the TLS client certificate of client_cert", "certificate (client_cert)")
    ), message


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_missing_certificate_file_is_a_configuration_error(
    tls_api: Api, conn: Callable[..., str], pki: Pki, tmp_path: Path, kind: str
) -> None:
    missing = tmp_path / "nope.pem"
    conn(ca_bundle=str(pki.ca), client_cert=str(missing), client_key=str(tmp_path))

    with pytest.raises(ConfigurationError) as error:
        via(kind)

    assert error.value.problems == [
        f"client_cert: expected the path of a readable PEM file, found '{missing}', which does not exist",
        f"client_key: expected the path of a readable PEM file, found '{tmp_path}', which is not a file",
    ]
    assert tls_api.state.refused == []  # nothing was sent


def test_a_client_key_needs_its_certificate(conn: Callable[..., str], pki: Pki) -> None:
    conn(client_key=str(pki.client_key))

    with pytest.raises(ConfigurationError, match=r"client_key: expected together with client_cert"):
        CustomTokenHook(CONN_ID).account


# -- proxies -------------------------------------------------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as server:
        yield server


@pytest.mark.parametrize("kind", ["sync", "async", "deferred"])
def test_token_and_api_requests_go_through_the_connections_proxy_over_the_environments(
    proxy: ForwardProxy, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)  # the environment's proxy would refuse the connection
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Api() as api:
        make_conn(CONN_ID, **api.connection(proxies={"http": proxy.url}))

        assert via(kind)["path"] == "/api/data"

    assert proxy.log == [("POST", f"{api.url}/token"), ("GET", f"{api.url}/api/data")]
    assert api.state.statuses() == [200]


def test_a_proxy_password_never_shows(make_conn: Callable[..., str]) -> None:
    secret = "proxy-pass-9f3"
    with Api() as api:
        make_conn(
            CONN_ID, **api.connection(proxies={"http": f"http://user:{secret}@127.0.0.1:{closed_port()}"})
        )

        with pytest.raises(TokenRequestError, match="could not connect") as error:
            CustomTokenHook(CONN_ID).run("/api/data")
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=CONN_ID, endpoint="/api/data"))

    assert secret not in str(error.value)
    assert event["status"] == "error" and "could not connect" in event["message"]
    assert secret not in json.dumps(event)
    assert secret in CustomTokenHook(CONN_ID).account.secrets


def test_proxies_are_checked_without_quoting_them(make_conn: Callable[..., str]) -> None:
    with Api() as api:
        make_conn(CONN_ID, **api.connection(proxies={"http": "user:hunter22@proxy", "https": 3128}))

        with pytest.raises(ConfigurationError) as error:
            CustomTokenHook(CONN_ID).account

    assert error.value.problems == [
        "proxies.http: expected a proxy URL such as http://proxy.example:3128 (scheme http, https, socks4, "
        "socks4a, socks5, socks5h), found a value without one of these schemes (not quoted: it may hold "
        "credentials)",
        "proxies.https: expected a proxy URL (text), found int",
    ]
    assert "hunter22" not in str(error.value)


def test_the_triggerer_refuses_a_socks_proxy_by_name(make_conn: Callable[..., str]) -> None:
    with Api() as api:
        make_conn(CONN_ID, **api.connection(proxies={"http": "socks5://127.0.0.1:1080"}))

        with pytest.raises(
            ConfigurationError, match=r"proxies.http: expected an http or https proxy for the triggerer"
        ):
            asyncio.run(CustomTokenAsyncHook(CONN_ID).run("/api/data"))

        assert api.state.token_requests == []
