"""Signed JWT assertions (RFC 7523): the `{assertion}` placeholder, free of I/O.

An account that sets `assertion_private_key` carries an `AssertionSpec`: the key (read and checked when
the account is built, so that validating the connection finds a bad key), the algorithm, the claims and
headers with their placeholders resolved, and the lifetime. `sign(spec, now)` makes a fresh assertion
for each token request: `exp` = now + lifetime, `iat` = now and a random `jti` unless the claims give
them. The token request keeps `{assertion}` in place until it is sent (a late placeholder:
`templating.fill_late`), so the account's cache key does not change with each assertion.

Used in `access_parameters` as the JWT bearer grant (`grant_type`
`urn:ietf:params:oauth:grant-type:jwt-bearer`, `assertion`) or as client authentication
(`client_assertion_type` `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion`):
`private_key_jwt` with an asymmetric key, `client_secret_jwt` with HS256 and the client secret as key.

Errors name the field and never quote the key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token import templating
from airflow_custom_token.errors import PlaceholderError
from airflow_custom_token.fields import extra_field

__all__ = ["ALGORITHMS", "GRANT_TYPE", "AssertionSpec", "assertion_spec", "load_key", "sign"]

#: The algorithms `assertion_algorithm` offers (JWS names, RFC 7518 and RFC 8037).
ALGORITHMS: tuple[str, ...] = extra_field("assertion_algorithm").choices
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KEY_FIELD = "assertion_private_key"
#: Claims and headers that the assertion sets itself: `exp` from `assertion_lifetime`, `alg` from
#: `assertion_algorithm`.
SET_BY_US = {"assertion_claims": ("exp",), "assertion_headers": ("alg",)}

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_RSA = "an RSA private key"
#: What key each algorithm signs with: how an error names it, and the kinds `_key_kind` finds that fit.
_KEYS: Mapping[str, tuple[str, frozenset[str]]] = {
    "RS": (_RSA, frozenset({_RSA})),
    "PS": (_RSA, frozenset({_RSA})),
    "ES256": ("an EC private key on curve P-256", frozenset({"an EC private key on curve P-256"})),
    "ES384": ("an EC private key on curve P-384", frozenset({"an EC private key on curve P-384"})),
    "EdDSA": (
        "an Ed25519 or Ed448 private key",
        frozenset({"an Ed25519 private key", "an Ed448 private key"}),
    ),
}


@dataclass(frozen=True)
class AssertionSpec:
    """What each assertion of an account is made of; `sign` makes one."""

    algorithm: str
    key: Any = field(repr=False)  # a cryptography private key, or the HMAC secret (bytes) for HS256
    claims: Mapping[str, Any] = field(repr=False)  # placeholders resolved
    headers: Mapping[str, Any] = field(default_factory=dict, repr=False)
    lifetime: int = 300  # seconds: exp = now + lifetime
    key_digest: str = field(default="", repr=False)  # of the key text: for the cache key only

    def fingerprint(self) -> str:
        """Digest of everything that decides whom the assertion names (for the account's cache key):
        two accounts whose assertions differ in key, claims or headers never share a token."""
        body = [self.algorithm, self.key_digest, dict(self.claims), dict(self.headers), self.lifetime]
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _pem(text: str) -> bytes | None:
    """The PEM block in `text`, re-wrapped: a key pasted with its line breaks lost (a one-line form
    input) or written as `\\n` (JSON inside JSON) reads as the original. None: no PEM block."""
    match = _PEM.search(text.replace("\\n", "\n"))
    if match is None:
        return None
    label, body = match.group(1), "".join(match.group(2).split())
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode()


def load_key(text: str, algorithm: str) -> tuple[Any, str | None]:
    """The signing key of `text` for `algorithm`, or None and the problem (naming the field, never
    quoting the key): a PEM private key for RS*, PS*, ES* and EdDSA; the secret itself for HS256."""
    if not text:
        return None, f"{KEY_FIELD}: required when {{assertion}} is used; found an empty value"
    if algorithm.startswith("HS"):
        if _PEM.search(text.replace("\\n", "\n")):
            return None, (
                f"{KEY_FIELD}: {algorithm} signs with a shared secret (the client secret for "
                "client_secret_jwt); found a PEM key: choose an asymmetric assertion_algorithm for it"
            )
        return text.encode(), None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    pem = _pem(text)
    expected, fits = _KEYS.get(algorithm) or _KEYS[algorithm[:2]]
    if pem is None:
        return (
            None,
            f"{KEY_FIELD}: expected {expected} in PEM form (-----BEGIN PRIVATE KEY-----); found no PEM block",
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # a password is needed
        return None, f"{KEY_FIELD}: expected an unencrypted PEM private key; found an encrypted one"
    except (ValueError, UnsupportedAlgorithm) as exc:  # cryptography's errors quote no part of the key
        return (
            None,
            f"{KEY_FIELD}: the PEM block is not a private key cryptography can read ({type(exc).__name__})",
        )
    found = _key_kind(key)
    if found not in fits:
        return None, f"{KEY_FIELD}: {algorithm} signs with {expected}; found {found}"
    return key, None


def _key_kind(key: Any) -> str:
    """How an error names the key's type (its size and curve name no secret)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "an RSA private key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
        return f"an EC private key on curve {curve or key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 private key"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "an Ed448 private key"
    return f"a {type(key).__name__.removeprefix('_')}"


def assertion_spec(
    checked: Mapping[str, Any], values: Mapping[str, str], token_url: str | None
) -> tuple[AssertionSpec | None, list[str]]:
    """The account's assertion, from its checked `assertion_*` fields and placeholder values; None
    when `assertion_private_key` is unset. Claims default: `aud` the token endpoint's URL, `iss` and
    `sub` the login (when set). A trial signature proves the key signs."""
    raw_key = checked.get(KEY_FIELD)
    if raw_key in (None, ""):
        return None, []
    problems: list[str] = []
    algorithm = str(checked["assertion_algorithm"])
    try:
        key_text = templating.render_text(str(raw_key), values, KEY_FIELD)  # `{password}`: client_secret_jwt
        claims = templating.render_object(checked["assertion_claims"] or {}, values, "assertion_claims")
        headers = templating.render_object(checked["assertion_headers"] or {}, values, "assertion_headers")
    except PlaceholderError as exc:
        return None, [str(exc)]
    for name, reserved in SET_BY_US.items():
        given = claims if name == "assertion_claims" else headers
        problems += [f"{name}.{r}: set by the assertion itself; remove it" for r in reserved if r in given]
    defaults = {"aud": token_url, "iss": values.get("login"), "sub": values.get("login")}
    claims = {**{k: v for k, v in defaults.items() if v}, **claims}
    key, problem = load_key(key_text, algorithm)
    if problem:
        problems.append(problem)
    if problems:
        return None, problems
    spec = AssertionSpec(
        algorithm=algorithm,
        key=key,
        claims=claims,
        headers=headers,
        lifetime=int(checked["assertion_lifetime"]),
        key_digest=hashlib.sha256(key_text.encode()).hexdigest(),
    )
    try:
        sign(spec, 0.0)
    except Exception as exc:  # PyJWT's errors quote no key; the type says enough
        return None, [f"{KEY_FIELD}: cannot sign {algorithm} with this key ({type(exc).__name__})"]
    return spec, []


def sign(spec: AssertionSpec, now: float) -> str:
    """A fresh assertion: the claims, `exp` = now + lifetime, `iat` = now and a random `jti` unless
    the claims give them, signed with the spec's key and headers."""
    import jwt

    claims = {
        "iat": int(now),
        "jti": secrets.token_urlsafe(16),
        **spec.claims,
        "exp": int(now) + spec.lifetime,
    }
    with warnings.catch_warnings():  # a short client secret (HS256) is the server's choice, not ours
        warnings.simplefilter("ignore", UserWarning)
        return jwt.encode(claims, spec.key, algorithm=spec.algorithm, headers=dict(spec.headers) or None)
