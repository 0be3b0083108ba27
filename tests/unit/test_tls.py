"""The transport settings and API retries of an account (issue 13), without a server: the fields'
meaning (`spec`), the API retry policy (`rules.api_policy`), requests' and aiohttp's options
(`transport`), and what a TLS failure is said to mean."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from airflow_custom_token import tls as transport
from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.connected import ConnectedAccount, Transport
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.errors import ConfigurationError
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import api_policy


def account(**extra: Any) -> ConnectedAccount:
    fields = {
        "integration_key": "t",
        "access_endpoint": "/token",
        "access_verb": "POST",
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        **extra,
    }
    return build_account([RawConnection("t", "custom_token", host="https://api.example", extra=fields)])


def test_the_fields_default_to_no_retries_and_no_transport_settings() -> None:
    built = account()

    assert built.request_retries == 0
    assert built.transport == Transport(verify=True)
    assert api_policy(built, RetryPolicy()) is None


def test_the_fields_are_carried_on_the_account() -> None:
    built = account(
        request_retries="2",
        verify="false",
        ca_bundle=" /etc/ca.pem ",
        client_cert="/etc/client.pem",
        client_key="/etc/client.key",
        proxies={"https": " http://proxy.example:3128 ", "no_proxy": "internal.example"},
    )

    assert built.request_retries == 2
    assert built.transport == Transport(
        verify=False,
        ca_bundle="/etc/ca.pem",
        client_cert="/etc/client.pem",
        client_key="/etc/client.key",
        proxies=(("https", "http://proxy.example:3128"), ("no_proxy", "internal.example")),
    )


def test_the_api_policy_takes_the_connections_count_and_the_settings_waits() -> None:
    waits = RetryPolicy(retries=3, wait_base=0.5, wait_max=7.0, retry_after_max=9.0)

    assert api_policy(account(request_retries=4), waits) == RetryPolicy(4, 0.5, 7.0, 9.0)


def test_a_proxy_password_is_a_secret_of_the_account() -> None:
    built = account(proxies={"https": "http://me:p%40ss-word-1@proxy.example:3128"})

    assert {"p%40ss-word-1", "p@ss-word-1"} <= set(built.secrets)
    assert "p@ss-word-1" not in repr(built) and "p@ss-word-1" not in repr(built.transport)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"request_retries": -1}, "request_retries: expected a number >= 0 and <= 10, found -1"),
        ({"request_retries": 1.5}, "request_retries: expected a whole number, found 1.5"),
        (
            {"client_key": "/k.pem"},
            "client_key: expected together with client_cert (the certificate it is the key of), "
            "found client_key alone",
        ),
        ({"proxies": ["http://proxy.example"]}, "proxies: expected a JSON object, found list"),
        (
            {"proxies": {"https": "ftp://secret-user:secret-pass@proxy.example"}},
            "proxies.https: expected a proxy URL such as http://proxy.example:3128 (scheme http, https, "
            "socks4, socks4a, socks5, socks5h), found a value without one of these schemes (not quoted: "
            "it may hold credentials)",
        ),
        (
            {"proxies": {"http": "http://"}},
            "proxies.http: expected a proxy URL such as http://proxy.example:3128 (scheme http, https, "
            "socks4, socks4a, socks5, socks5h), found a value without a host (not quoted: it may hold "
            "credentials)",
        ),
    ],
)
def test_bad_values_are_configuration_problems(extra: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        account(**extra)

    assert error.value.problems == [problem]
    assert "secret-pass" not in str(error.value)


# -- requests and aiohttp -----------------------------------------------------------------------------------


def test_requests_options() -> None:
    assert transport.requests_options(account()) == {"verify": True, "cert": None, "proxies": {}}
    assert transport.requests_options(account(verify=False)) == {"verify": False, "cert": None, "proxies": {}}


def test_requests_options_with_files(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "c.pem", "k.pem"))
    for path in (ca, cert, key):
        path.write_text("-")

    options = transport.requests_options(
        account(ca_bundle=str(ca), client_cert=str(cert), client_key=str(key), proxies={"all": "http://p:1"})
    )

    assert options == {"verify": str(ca), "cert": (str(cert), str(key)), "proxies": {"all": "http://p:1"}}
    assert transport.requests_options(account(client_cert=str(cert)))["cert"] == str(cert)
    # verify off: the CA bundle is not needed, nor looked for
    assert transport.requests_options(account(verify=False, ca_bundle="/nowhere.pem"))["verify"] is False


def test_aiohttp_keeps_its_default_without_files() -> None:
    assert transport.ssl_context(account()) is None
    assert transport.ssl_context(account(verify=False)) is False


def test_an_ssl_context_that_cannot_load_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")

    with pytest.raises(ConfigurationError, match=r"ca_bundle: expected PEM CA certificates in '.*bad\.pem'"):
        transport.ssl_context(account(ca_bundle=str(bad)))
    with pytest.raises(
        ConfigurationError, match=r"client_cert: expected a PEM certificate and its unencrypted"
    ):
        transport.ssl_context(account(client_cert=str(bad)))


@pytest.mark.parametrize(
    ("proxies", "url", "chosen"),
    [
        ({}, "https://api.example/x", None),
        ({"https": "http://s:1", "http": "http://p:1"}, "https://api.example/x", "http://s:1"),
        ({"https://api.example": "http://h:1", "https": "http://s:1"}, "https://api.example/x", "http://h:1"),
        ({"all://api.example": "http://a:1", "all": "http://b:1"}, "http://api.example/x", "http://a:1"),
        ({"all": "http://b:1"}, "https://other.example/x", "http://b:1"),
        ({"http": "http://p:1"}, "https://api.example/x", None),
    ],
)
def test_the_proxy_aiohttp_takes_is_picked_as_requests_picks_it(
    proxies: dict[str, str], url: str, chosen: str | None
) -> None:
    assert transport.proxy_for(account(proxies=proxies), url) == chosen


@pytest.mark.parametrize(
    ("settings", "error", "said"),
    [
        (
            {},
            ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
            "; the server requires a TLS client certificate, and the connection sets none (client_cert)",
        ),
        ({}, ConnectionResetError(104, "Connection reset by peer"), "as servers that require a TLS client"),
        (
            {"client_cert": "/c.pem"},
            ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"),
            "; the server did not accept the TLS client certificate of client_cert",
        ),
        (
            {},
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "not signed by a CA this host trusts: set ca_bundle",
        ),
        (
            {"ca_bundle": "/ca.pem"},
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
            "; the server's TLS certificate is not signed by a CA of the connection's ca_bundle",
        ),
        ({}, TimeoutError("timed out"), ""),
    ],
)
def test_what_a_tls_failure_is_said_to_mean(
    settings: dict[str, str], error: BaseException, said: str
) -> None:
    hint = transport.tls_hint(Transport(**settings), "https://api.example/x", error)

    assert said in hint and (said or hint == "")


def test_no_tls_hint_for_plain_http() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")

    assert transport.tls_hint(Transport(), "http://api.example/x", reset) == ""


def test_the_hint_reads_the_causes_of_an_error() -> None:
    try:
        try:
            raise ssl.SSLError(1, "tlsv13 alert certificate required")
        except ssl.SSLError as inner:
            raise OSError("Max retries exceeded") from inner
    except OSError as outer:
        hint = transport.tls_hint(Transport(), "https://api.example/x", outer)

    assert "requires a TLS client certificate" in hint
