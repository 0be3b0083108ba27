"""Signed JWT assertions (issue 20) against the demo API's `/oauth2/v1/jwt-bearer`, which verifies each one
with the issuer's public key (or HMAC secret), and checks `exp`, `iat`, `aud` (its own URL) and a `jti`
never seen before: the JWT bearer grant (400 `invalid_grant` when refused) and `private_key_jwt` client
authentication (401 `invalid_client`)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.demo.assertions import (
    CLIENT_ASSERTION_TYPE,
    DEMO_PRIVATE_KEY,
    GRANT_TYPE,
    JWT_BEARER,
)
from airflow_custom_token.errors import TokenRequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.conftest import demo_extra

pytestmark = pytest.mark.timeout(60)

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEYS: dict[str, Any] = {"RS256": RSA, "ES256": ec.generate_private_key(ec.SECP256R1())}
HMAC_SECRET = "a-shared-hmac-secret-of-32-bytes!!"


def private_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def bearer_extra(demo: DemoServer, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "integration_key": "jwtbearer",
        "access_endpoint": f"{demo.url}{JWT_BEARER}",
        "access_parameters": {"grant_type": GRANT_TYPE, "assertion": "{assertion}"},
        "assertion_private_key": DEMO_PRIVATE_KEY,
        "assertion_algorithm": "EdDSA",
        "assertion_claims": {"scope": "read"},
    }
    return demo_extra(demo, **{**settings, **overrides})


@pytest.fixture
def connect(demo: DemoServer, make_conn: Callable[..., str]) -> Callable[..., CustomTokenHook]:
    def make(**overrides: Any) -> CustomTokenHook:
        conn = make_conn(
            "jwt", host=demo.url, login="dev", password="dev-secret", extra=bearer_extra(demo, **overrides)
        )
        return CustomTokenHook(conn)

    return make


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "ES256", "HS256"])
def test_jwt_bearer_grant_verified_with_the_issuers_key(demo, connect, algorithm):
    if algorithm == "HS256":
        demo.trust_assertion_key("dev", HMAC_SECRET, ["HS256"])
        key = HMAC_SECRET
    elif algorithm != "EdDSA":
        demo.trust_assertion_key("dev", public_pem(KEYS[algorithm]), [algorithm])
        key = private_pem(KEYS[algorithm])
    else:
        key = DEMO_PRIVATE_KEY
    hook = connect(assertion_private_key=key, assertion_algorithm=algorithm, assertion_lifetime=120)
    assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    [accepted] = demo.assertions
    claims = accepted["claims"]
    assert claims["iss"] == claims["sub"] == "dev"  # Login
    assert claims["aud"] == f"{demo.url}{JWT_BEARER}"  # the token endpoint URL
    assert claims["exp"] - claims["iat"] == 120 and claims["scope"] == "read"
    assert accepted["header"]["alg"] == algorithm


def test_private_key_jwt_client_authentication_and_a_fresh_jti_per_request(demo, connect):
    parameters = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": "{assertion}",
    }
    hook = connect(access_parameters=parameters, assertion_headers={"kid": "demo-1"})
    hook.get_token()
    hook.invalidate_token()
    hook.get_token()
    first, second = demo.assertions
    assert first["claims"]["jti"] != second["claims"]["jti"]  # the server refuses a reused jti
    assert first["header"]["kid"] == "demo-1"


def test_a_key_the_server_does_not_trust_is_refused_without_quoting_the_assertion(demo, connect, caplog):
    other = ed25519.Ed25519PrivateKey.generate()
    hook = connect(assertion_private_key=private_pem(other))
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenRequestError) as caught:
        hook.get_token()
    message = str(caught.value)
    assert caught.value.status == 400 and "invalid_grant" in message
    sent = demo.token_log[-1]["form"]["assertion"]
    assert sent not in message and sent not in caplog.text
    assert "BEGIN PRIVATE KEY" not in message and "BEGIN PRIVATE KEY" not in caplog.text


def test_an_audience_the_server_is_not_is_refused(demo, connect):
    hook = connect(assertion_claims={"aud": "https://elsewhere.example.com/token"})
    with pytest.raises(TokenRequestError, match="invalid_grant") as caught:
        hook.get_token()
    assert caught.value.status == 400
    assert demo.assertions == []


def test_deferrable_path_signs_its_own_assertion(demo, connect):
    hook = connect()

    async def call() -> int:
        async with AsyncCustomTokenClient(hook.source) as client:
            return (await client.request("GET", "/api/v1/whoami")).status

    assert asyncio.run(call()) == 200
    [accepted] = demo.assertions
    assert accepted["claims"]["iss"] == "dev"


def test_the_test_button_signs_a_fresh_assertion(demo, connect):
    ok, message = connect().test_connection()
    assert ok and "Token obtained" in message, message
    [accepted] = demo.assertions
    assert accepted["claims"]["iss"] == "dev"


def test_client_secret_basic_sends_a_secret_as_oauth_servers_decode_it(demo, make_conn):
    secret = "s3cret+/ %:é"
    demo.accounts["oauthclient"] = secret
    extra = demo_extra(
        demo, access_auth="client_secret_basic", access_parameters={"grant_type": "client_credentials"}
    )
    conn = make_conn("csb", host=demo.url, login="oauthclient", password=secret, extra=extra)
    # the demo decodes Basic as RFC 7617 (raw): the form-encoded secret is not the secret there
    with pytest.raises(TokenRequestError) as caught:
        CustomTokenHook(conn).get_token()
    assert caught.value.status == 401 and secret not in str(caught.value)
    sent = demo.token_log[-1]["headers"]["Authorization"]
    client_id, _, encoded = base64.b64decode(sent.split()[1]).decode().partition(":")
    assert client_id == "oauthclient" and encoded != secret and unquote_plus(encoded) == secret
