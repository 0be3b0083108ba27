"""``/oauth2/v1/jwt-bearer``: a token endpoint that takes signed JWT assertions (RFC 7523), not a secret.

Two forms, as OAuth servers take them:

- the JWT bearer grant: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``;
- ``private_key_jwt`` client authentication, with any grant:
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<JWT>``.

The JWT must be signed with a key the demo trusts for its issuer (``iss``, an account name): the demo key
below for every account, or one a test trusts (`DemoState.trust_assertion_key`). Its signature, ``exp``
(required; at most an hour after ``iat``), ``iat``, ``aud`` (this endpoint's URL) and ``jti`` (never
seen before) are checked; a failure is ``400 invalid_grant`` (grant) or ``401 invalid_client`` (client
authentication), its reason in ``error_description``. The claims and header of each accepted JWT are kept
(`DemoState.assertions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_custom_token.demo.httpd import json_response
from airflow_custom_token.demo.tokens import expiry_value, reports_expiry

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request, Response
    from airflow_custom_token.demo.state import DemoState

JWT_BEARER = "/oauth2/v1/jwt-bearer"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 3600

# The demo's own signing key (Ed25519, algorithm EdDSA): a demo key, published here, for the demo API only.
DEMO_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPUvuEvTe1D+vbxl15z6TEN0FZSX3oXroClhNb5qj7pN
-----END PRIVATE KEY-----
"""
DEMO_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA41IzNPfHcpvXDPVqvjhJSbFEOXE03iumMd5sHWulR0s=
-----END PUBLIC KEY-----
"""


def jwt_bearer(state: DemoState, req: Request) -> Response:
    """A token for a valid assertion (grant or client authentication); 400 or 401 otherwise."""
    if req.method != "POST":
        return json_response(405, {"error": "method_not_allowed"})
    fields = req.form or {}
    if fields.get("grant_type") == GRANT_TYPE:
        jwt_text, error = fields.get("assertion", ""), (400, "invalid_grant")
    elif fields.get("client_assertion_type") == CLIENT_ASSERTION_TYPE:
        jwt_text, error = fields.get("client_assertion", ""), (401, "invalid_client")
    else:
        return json_response(400, {"error": "unsupported_grant_type"})
    audience = f"http://{req.message.get('Host', '')}{JWT_BEARER}"
    account, why = verify(state, str(jwt_text), audience)
    if account is None:
        return json_response(error[0], {"error": error[1], "error_description": why})
    issued = state.issue(account)
    payload: dict[str, Any] = {"access_token": issued.token, "token_type": "Bearer"}
    if reports_expiry(issued):
        payload["expires_in"] = expiry_value(issued)
    return json_response(200, payload)


def verify(state: DemoState, jwt_text: str, audience: str) -> tuple[str | None, str]:
    """``(account, "")`` for a valid assertion, else ``(None, why)``."""
    import jwt

    try:
        unverified = jwt.decode(jwt_text, options={"verify_signature": False})
        issuer = str(unverified.get("iss") or "")
        key, algorithms = state.assertion_key(issuer)
        if key is None:
            return None, f"no key is trusted for issuer {issuer!r}"
        claims = jwt.decode(
            jwt_text,
            key,
            algorithms=algorithms,
            audience=audience,
            options={"require": ["exp", "iat", "jti"]},
        )
    except jwt.PyJWTError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if float(claims["exp"]) - float(claims["iat"]) > MAX_LIFETIME:
        return None, f"the assertion lives longer than {MAX_LIFETIME} s"
    if not state.first_use_of_jti(str(claims["jti"]), claims, jwt.get_unverified_header(jwt_text)):
        return None, "jti used before"
    return issuer, ""
