"""What crosses the wire, transport-neutral: a request (`HttpRequest`), an answer (`HttpResponse`), an
excerpt of an error answer's body, and the error for a request that got no answer."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_custom_token.account.urls import masked_url
from airflow_custom_token.errors import (
    TokenRequestError,
)
from airflow_custom_token.redaction import redact_string


@dataclass(frozen=True)
class HttpRequest:
    """A transport-neutral HTTP request (the token request, or a test request)."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = None
    json: Any = None
    timeout: float | None = None
    verify: bool = True
    content: bytes | str | None = None  # a raw body (API requests only)
    redact: tuple[str, ...] = field(default=(), repr=False, compare=False)  # secrets the URL may hold

    def __repr__(self) -> str:  # parameters, headers and bodies may hold secrets; the path may too
        url = urlsplit(self.url)._replace(query="").geturl()
        return f"<HttpRequest {self.method} {redact_string(url, self.redact)}>"

    def fingerprint(self) -> str:
        """Digest of everything that identifies this request (and so the token it returns)."""
        body = json.dumps(
            [self.method, self.url, self.params, sorted(self.headers), self.form, self.json],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()


EXCERPT_CHARS = 200  # what an error message quotes of an error answer's body


ERROR_BODY_BYTES = EXCERPT_CHARS * 4  # what `excerpt` reads for that (UTF-8: up to 4 bytes a character)


CHUNK_BYTES = 64 * 1024  # what a transport reads at a time


@dataclass(frozen=True)
class HttpResponse:
    """A transport-neutral HTTP response. `headers` keys are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


def excerpt(body: bytes, secrets: tuple[str, ...], limit: int = EXCERPT_CHARS) -> str:
    """A short, redacted, single-line excerpt of a response body."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(redact_string(text, secrets).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def transport_failure(
    request: HttpRequest, exc: BaseException, secrets: tuple[str, ...], hint: str = ""
) -> str:
    """A secret-free sentence for a request that got no answer (connection error, timeout).

    `hint` ends it: what the failure most likely means (`tls.tls_hint`).
    """
    kind = "timed out" if "timeout" in type(exc).__name__.lower() else "could not connect"
    # urllib3 quotes the URL it could not reach, query included: a GET token request's credentials.
    detail = re.sub(r"\?[^\s'\")]*", "?<query>", redact_string(str(exc), secrets))[:200]
    return (
        f"{request.method} {masked_url(request.url, secrets)} {kind} ({type(exc).__name__}: {detail}){hint}"
    )


def transport_error(
    request: HttpRequest, exc: BaseException, secrets: tuple[str, ...], hint: str = ""
) -> TokenRequestError:
    """A retryable error for a token request that got no answer (`transport_failure` says why)."""
    return TokenRequestError(
        f"Token request failed: {transport_failure(request, exc, secrets, hint)}", retryable=True
    )


def shape(value: Any) -> str:
    """How an error names a JSON value without quoting it: its keys, its length, or its type."""
    if isinstance(value, Mapping):
        keys = ", ".join(sorted(map(str, value))[:12]) or "none"
        return f"an object with keys: {keys}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"
