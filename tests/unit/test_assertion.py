"""Signed JWT assertions: keys per algorithm, errors that name the field and never quote the key, the
claims' defaults, a fresh assertion per token request, and client_secret_basic's encoding."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import unquote_plus

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from airflow_custom_token import redaction, templating
from airflow_custom_token.account import RawConnection, build_account
from airflow_custom_token.assertion import GRANT_TYPE
from airflow_custom_token.errors import ConfigurationError, TokenRequestError
from airflow_custom_token.renewal import Step
from airflow_custom_token.settings import Settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.wire import HttpResponse

TOKEN_URL = "https://idp.example.com/oauth2/token"


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEYS = {
    "RS256": RSA, "RS384": RSA, "RS512": RSA, "PS256": RSA,
    "ES256": ec.generate_private_key(ec.SECP256R1()), "ES384": ec.generate_private_key(ec.SECP384R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}  # fmt: skip


def account(**extra: Any) -> Any:
    fields = {
        "integration_key": "idp",
        "access_endpoint": TOKEN_URL,
        "access_verb": "POST",
        "access_parameters": {"grant_type": GRANT_TYPE, "assertion": "{assertion}"},
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        "integration_parameters": {"tenant": "t1"},
        **extra,
    }
    raw = RawConnection(
        conn_id="idp",
        conn_type="custom_token",
        host="https://api.example.com",
        login="client-1",
        password="s3cret+/ %:é",
        extra=fields,
    )
    return build_account([raw])


def decode(assertion: str, key: Any, algorithm: str, **options: Any) -> dict[str, Any]:
    public = key if isinstance(key, bytes) else key.public_key()
    return jwt.decode(assertion, public, algorithms=[algorithm], audience=TOKEN_URL, **options)


@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_each_algorithm_signs_what_its_public_key_verifies(algorithm: str) -> None:
    acc = account(assertion_private_key=pem(KEYS[algorithm]), assertion_algorithm=algorithm.lower())
    claims = decode(acc.late_values(time.time())["assertion"], KEYS[algorithm], algorithm)
    assert claims["iss"] == claims["sub"] == "client-1"


def test_hs256_signs_with_the_client_secret_client_secret_jwt() -> None:
    acc = account(assertion_private_key="{password}", assertion_algorithm="HS256")
    claims = decode(acc.late_values(time.time())["assertion"], "s3cret+/ %:é".encode(), "HS256")
    assert claims["aud"] == TOKEN_URL


def test_defaults_exp_iat_jti_and_claims_placeholders() -> None:
    acc = account(
        assertion_private_key=pem(KEYS["ES256"]), assertion_algorithm="ES256", assertion_lifetime=120,
        assertion_claims={"iss": "svc@{tenant}", "scope": "read {tenant}"},
        assertion_headers={"kid": "k-{tenant}"},
    )  # fmt: skip
    now = time.time()
    first, second = (acc.late_values(now)["assertion"] for _ in range(2))
    claims = decode(first, KEYS["ES256"], "ES256")
    assert claims["exp"] == int(now) + 120 and claims["iat"] == int(now)
    assert claims["iss"] == "svc@t1" and claims["scope"] == "read t1" and claims["sub"] == "client-1"
    assert jwt.get_unverified_header(first)["kid"] == "k-t1"
    assert claims["jti"] != decode(second, KEYS["ES256"], "ES256")["jti"]


@pytest.mark.parametrize(
    ("key", "algorithm", "match"),
    [
        ("not a key at all", "RS256", "found no PEM block"),
        (pem(KEYS["ES256"]), "RS256", "RS256 signs with an RSA private key; found an EC private key"),
        (pem(RSA), "ES256", "ES256 signs with an EC private key on curve P-256; found an RSA"),
        (pem(KEYS["ES384"]), "ES256", "found an EC private key on curve P-384"),
        (pem(RSA), "HS256", "HS256 signs with a shared secret"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "EdDSA", "not a private key"),
    ],
)
def test_a_bad_key_names_the_field_and_never_quotes_the_key(key: str, algorithm: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match="assertion_private_key") as caught:
        account(assertion_private_key=key, assertion_algorithm=algorithm)
    assert match in str(caught.value)
    assert not any(
        line in str(caught.value) for line in key.splitlines() if len(line) > 8 and "-----" not in line
    )


def test_a_one_line_pem_still_reads() -> None:
    one_line = pem(KEYS["EdDSA"]).replace("\n", " ")
    acc = account(assertion_private_key=one_line, assertion_algorithm="EdDSA")
    decode(acc.late_values(time.time())["assertion"], KEYS["EdDSA"], "EdDSA")


def test_assertion_without_a_key_and_a_key_without_assertion_are_errors() -> None:
    with pytest.raises(
        ConfigurationError, match=r"placeholder \{assertion\} .* assertion_private_key is set"
    ):
        account()
    with pytest.raises(ConfigurationError, match=r"assertion_private_key: set, but neither"):
        account(assertion_private_key=pem(RSA), access_parameters={"grant_type": "client_credentials"})
    with pytest.raises(ConfigurationError, match=r"assertion_claims.exp: set by the assertion itself"):
        account(assertion_private_key=pem(RSA), assertion_claims={"exp": 1})


def test_fresh_assertion_per_request_and_the_cache_key_stays() -> None:
    acc = account(assertion_private_key=pem(RSA))
    source = TokenSource(acc, Settings())
    flows = [source._exchange(Step(source.request)) for _ in range(2)]  # one attempt each
    (one, fresh_one), (two, fresh_two) = (next(flow) for flow in flows)
    assert (
        dict(one.form or ())["assertion"] == fresh_one[0] != fresh_two[0] == dict(two.form or ())["assertion"]
    )
    assert (
        acc.token_request.fingerprint() == account(assertion_private_key=pem(RSA)).token_request.fingerprint()
    )
    assert dict(acc.token_request.form or ())["assertion"] == "{assertion}"
    assert fresh_two[0] in two.redact
    echo = HttpResponse(400, {}, json.dumps({"error": "invalid_grant", "seen": fresh_two[0]}).encode())
    with pytest.raises(TokenRequestError, match="answered 400") as refused:
        flows[1].send(echo)  # the answer that quotes the assertion: redacted in the error
    assert fresh_two[0] not in str(refused.value) and "***" in str(refused.value)
    other = account(assertion_private_key=pem(RSA), assertion_claims={"sub": "someone-else"})
    assert other.cache_key != acc.cache_key  # whom the assertion names decides the token


def test_the_assertion_is_redacted_once_registered() -> None:
    assertion = account(assertion_private_key=pem(RSA)).late_values(time.time())["assertion"]
    redaction.register_token("idp#late", assertion, (assertion,))
    assert assertion not in redaction.redact_string(f"invalid_grant: {assertion}")


def test_fill_late_fills_params_form_json_and_headers_only_the_names_given() -> None:
    from airflow_custom_token.wire import HttpRequest

    request = HttpRequest(
        "POST", TOKEN_URL, params=(("a", "{assertion}"),), headers=(("X-A", "JWT {assertion}"),),
        json={"nested": ["{assertion}", "{other}"]},
    )  # fmt: skip
    filled = templating.fill_late(request, {"assertion": "abc.def.ghi"})
    assert filled.params == (("a", "abc.def.ghi"),) and filled.headers == (("X-A", "JWT abc.def.ghi"),)
    assert filled.json == {"nested": ["abc.def.ghi", "{other}"]} and "abc.def.ghi" in filled.redact


@pytest.mark.parametrize("secret", ["p+s s%20:é/x", "plain"])
def test_client_secret_basic_form_encodes_each_part(secret: str) -> None:
    raw = RawConnection(
        conn_id="c", conn_type="custom_token", host="https://api.example.com", login="id:1", password=secret,
        extra={"integration_key": "c", "access_endpoint": TOKEN_URL, "access_verb": "POST",
               "access_auth": "client_secret_basic", "inject_as": "header", "inject_name": "Authorization",
               "inject_template": "Bearer {token}"},
    )  # fmt: skip
    header = dict(build_account([raw]).token_request.headers)["Authorization"]
    client_id, _, sent = base64.b64decode(header.removeprefix("Basic ")).decode("ascii").partition(":")
    assert (unquote_plus(client_id), unquote_plus(sent)) == ("id:1", secret)
