"""The token flow, free of I/O: what to send to the token endpoint, and how to read its answer.

The sync hook (requests) and the async trigger (aiohttp) only carry `HttpRequest`s over the wire and
hand back `HttpResponse`s; everything that decides lives here, written once:

- `read_token(account, response, now)` turns an answer into a `Token` (or a precise error);
- `retry_options(...)` is the one retry policy (tenacity) that both transports run the fetch under;
- `Token.is_fresh(now, margin)` decides when a token must be refreshed.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from airflow_custom_token.errors import TokenRequestError, TokenResponseError
from airflow_custom_token.redaction import redact_string
from airflow_custom_token.spec import ConnectedAccount, HttpRequest, is_secret_name

EPOCH_THRESHOLD = 1e9  # an expiry of this many "seconds" or more is an absolute epoch time
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpResponse:
    """A transport-neutral HTTP response. `headers` keys are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class Token:
    """An access token and when it expires (epoch seconds). Its repr never shows the value."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float
    expiry_source: str = "default lifetime"

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.obtained_at

    def refresh_at(self, margin: float) -> float:
        """When to stop using it: `margin` seconds before expiry, at most half its lifetime early."""
        return self.expires_at - min(margin, max(self.lifetime, 0) / 2)

    def is_fresh(self, now: float, margin: float) -> bool:
        return now < self.refresh_at(margin)

    def to_json(self) -> dict[str, Any]:
        return {"v": self.value, "exp": self.expires_at, "at": self.obtained_at, "src": self.expiry_source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        return cls(str(data["v"]), float(data["exp"]), float(data["at"]), str(data.get("src", "cache")))


# ---------------------------------------------------------------------------------------------------
# Describing requests without secrets


def masked_url(url: str, secrets: tuple[str, ...] = ()) -> str:
    """The URL with query values masked when they are secret (or any secret appears in them)."""
    parts = urlsplit(url)
    if parts.query:
        pairs = [
            (k, "***" if any(s and s in v for s in secrets) or is_secret_name(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        url = urlunsplit(parts._replace(query=urlencode(pairs, safe="*")))
    return redact_string(url, secrets) if secrets else url  # a secret may stand in the path too


def excerpt(body: bytes, secrets: tuple[str, ...], limit: int = 200) -> str:
    """A short, redacted, single-line excerpt of a response body."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(redact_string(text, secrets).split())
    return text[:limit] + ("…" if len(text) > limit else "")


# ---------------------------------------------------------------------------------------------------
# Reading the token response


def _json(response: HttpResponse, account: ConnectedAccount, location: str) -> Any:
    try:
        return json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        ctype = response.headers.get("content-type", "no content type")
        raise TokenResponseError(
            f"Token location {location!r} is a JSON path, but the token endpoint "
            f"{masked_url(account.token_request.url, account.secrets)} answered {ctype} that is not JSON "
            f"({len(response.body)} bytes, not quoted: a successful answer may hold the token itself; "
            "if the whole answer is the token, set access_response_path to 'text')"
        ) from None


def _walk(data: Any, path: str) -> tuple[bool, Any, str]:
    """Follow a dotted path; returns (found, value, where it stopped)."""
    current = data
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, current, ".".join(walked)
        walked.append(part)
    return True, current, path


def _shape(value: Any) -> str:
    if isinstance(value, Mapping):
        keys = ", ".join(sorted(map(str, value))[:12]) or "none"
        return f"an object with keys: {keys}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def _extract_value(account: ConnectedAccount, response: HttpResponse) -> tuple[str, Any]:
    """The raw token and the parsed JSON body (if the location is a JSON path)."""
    location = account.response_path
    where = f"token location {location!r} (access_response_path)"
    if location.startswith("header:"):
        name = location.split(":", 1)[1].strip().lower()
        value: Any = response.headers.get(name)
        if value is None:
            names = ", ".join(sorted(response.headers)) or "none"
            raise TokenResponseError(f"The {where}: the response has no header {name!r}; headers: {names}")
        return value, None
    if location.startswith("cookie:"):
        name = location.split(":", 1)[1].strip()
        value = response.cookies.get(name)
        if value is None:
            names = ", ".join(sorted(response.cookies)) or "none"
            raise TokenResponseError(
                f"The {where}: the response sets no cookie {name!r}; cookies set: {names}"
            )
        return value, None
    if location == "text":
        return response.body.decode("utf-8", "replace").strip(), None
    data = _json(response, account, location)
    found, value, stopped = _walk(data, location)
    if not found:
        at = f" at {stopped!r}" if stopped else ""
        raise TokenResponseError(f"The {where} is not in the response; it holds {_shape(value)}{at}")
    return value, data


def _jwt_exp(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    except (ValueError, TypeError):
        return None


def _expiry(value: Any, now: float, location: str) -> float:
    """Absolute expiry from a lifetime in seconds, an epoch time, or an ISO-8601 date-time."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise TokenResponseError(
                    f"The expiry location {location!r} (access_expiry_path) holds text that is neither a "
                    "number of seconds nor an ISO-8601 date-time"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    if number is None:
        raise TokenResponseError(
            f"The expiry location {location!r} (access_expiry_path) holds {_shape(value)}, "
            "expected a number of seconds, an epoch time or an ISO-8601 date-time"
        )
    if not math.isfinite(number):
        raise TokenResponseError(
            f"The expiry location {location!r} (access_expiry_path) holds {number}, "
            "expected a finite number of seconds, an epoch time or an ISO-8601 date-time"
        )
    return number if number >= EPOCH_THRESHOLD else now + number


def read_token(account: ConnectedAccount, response: HttpResponse, now: float | None = None) -> Token:
    """Turn the token endpoint's answer into a Token, or raise a precise, secret-free error."""
    now = time.time() if now is None else now
    check_status(account, response)
    value, data = _extract_value(account, response)
    location = account.response_path
    if not isinstance(value, str):
        raise TokenResponseError(
            f"The token location {location!r} (access_response_path) holds {_shape(value)}, expected text"
        )
    if not value.strip():
        raise TokenResponseError(
            f"The token location {location!r} (access_response_path) holds an empty token"
        )
    value = value.strip()
    expires_at: float | None = None
    source = "default lifetime (access_lifetime)"
    if data is not None and account.expiry_path:
        found, raw, _ = _walk(data, account.expiry_path)
        if found and raw is not None:
            expires_at = _expiry(raw, now, account.expiry_path)
            source = f"expiry location {account.expiry_path!r}"
    if expires_at is None:
        exp = _jwt_exp(value)
        if exp is not None:
            expires_at, source = exp, "JWT exp claim"
    if expires_at is None:
        expires_at = now + account.default_lifetime
    return Token(value=value, expires_at=expires_at, obtained_at=now, expiry_source=source)


def check_status(account: ConnectedAccount, response: HttpResponse) -> None:
    """Raise `TokenRequestError` for an error status; retryable for 408/425/429/5xx."""
    request = account.token_request
    if 300 <= response.status < 400:
        location = response.headers.get("location", "")
        target = urlsplit(urljoin(request.url, location)) if location else None
        where = f"{target.scheme}://{target.hostname}" if target and target.hostname else "another URL"
        raise TokenRequestError(
            f"Token request failed: {request.method} {masked_url(request.url, account.secrets)} answered "
            f"{response.status} (a redirect to {where}); token requests carry the client's credentials "
            "and do not follow redirects: set access_endpoint to the final URL",
            status=response.status,
        )
    if response.status < 400:
        return
    retryable = response.status in RETRYABLE_STATUSES or response.status >= 500
    ctype = response.headers.get("content-type", "")
    body = excerpt(response.body, account.secrets)
    if "html" in ctype:
        body = "an HTML page" + (f": {body[:80]}" if body else "")
    raise TokenRequestError(
        f"Token request failed: {request.method} {masked_url(request.url, account.secrets)} answered "
        f"{response.status} {response.reason}".rstrip()
        + (f"; body: {body}" if body else ""),
        status=response.status,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def transport_error(request: HttpRequest, exc: BaseException, secrets: tuple[str, ...]) -> TokenRequestError:
    """A retryable error for a token request that got no answer (connection error, timeout)."""
    kind = "timed out" if "timeout" in type(exc).__name__.lower() else "could not connect"
    # urllib3 quotes the URL it could not reach, query included: a GET token request's credentials.
    detail = re.sub(r"\?[^\s'\")]*", "?<query>", redact_string(str(exc), secrets))[:200]
    return TokenRequestError(
        f"Token request failed: {request.method} {masked_url(request.url, secrets)} {kind} "
        f"({type(exc).__name__}: {detail})",
        retryable=True,
    )


# ---------------------------------------------------------------------------------------------------
# Retry policy (one definition, run by tenacity's Retrying or AsyncRetrying)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    wait_base: float = 0.5
    wait_max: float = 30.0
    retry_after_max: float = 60.0

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Exponential backoff with full jitter; a Retry-After is honoured up to its cap."""
        if isinstance(error, TokenRequestError) and error.retry_after is not None:
            return min(error.retry_after, self.retry_after_max)
        ceiling = min(self.wait_max, self.wait_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def tenacity_options(self) -> dict[str, Any]:
        """Keyword arguments for `tenacity.Retrying` / `AsyncRetrying`."""
        import tenacity

        def should_retry(state: tenacity.RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            error = outcome.exception()
            return isinstance(error, TokenRequestError) and error.retryable

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome and state.outcome.failed else None
            return self.wait(state.attempt_number, error)

        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": wait,
            "retry": should_retry,
            "reraise": True,
        }
