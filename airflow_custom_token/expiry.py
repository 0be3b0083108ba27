"""When a token expires: a lifetime or an absolute time in the answer, a JWT's `exp`, the server's clock
(its `Date` header), kept within bounds. Free of I/O."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_custom_token.errors import TokenResponseError
from airflow_custom_token.wire import HttpResponse, shape

EPOCH_THRESHOLD = 1e9  # an expiry of this many "seconds" or more is an absolute epoch time


MIN_TOKEN_LIFETIME = 1.0  # seconds: a shorter (or past) expiry is read as this


# A server clock within this many seconds of ours is taken as ours: its Date header has a resolution of
# one second and is stamped before the answer travels.
CLOCK_TOLERANCE = 5.0


def as_finite(value: int | float) -> float | None:
    """`value` as a finite float; None for NaN, an infinity, or an integer too large for a float."""
    try:
        number = float(value)
    except OverflowError:  # 10**400 is a valid JSON number
        return None
    return number if math.isfinite(number) else None


def not_finite(value: int | float) -> str:
    """How an error names a number that `as_finite` refused (never hundreds of digits)."""
    return repr(value) if isinstance(value, float) else "a number too large to be a time"


def jwt_exp(token: str, location: str) -> float | None:
    """The `exp` claim of a JWT (epoch seconds), or None when the token is not a JWT or has none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    number = as_finite(exp)
    if number is None:
        raise TokenResponseError(
            f"The token at token location {location!r} (access_response_path) is a JWT whose exp claim "
            f"holds {not_finite(exp)}, expected a finite epoch time (the token is not quoted)"
        )
    return number


def expiry(
    value: Any, now: float, location: str, offset: float = 0.0, http_date: bool = False
) -> tuple[float, bool]:
    """When the token expires (our clock), from a lifetime in seconds or an absolute time.

    An absolute time (epoch seconds, or an ISO-8601 date-time; with `http_date`, as a header value, an
    HTTP date too) is the server's: `offset` is how far its clock is ahead of ours. Returns the expiry and
    whether it was absolute.
    """
    where = f"The expiry location {location!r} (access_expiry_path)"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            parsed: datetime | None
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                parsed = parse_http_date(text) if http_date else None
            if parsed is None:
                dates = "an ISO-8601 or HTTP date-time" if http_date else "an ISO-8601 date-time"
                raise TokenResponseError(
                    f"{where} holds text that is neither a number of seconds nor {dates}"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp() - offset, True
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TokenResponseError(
            f"{where} holds {shape(value)}, expected a number of seconds, an epoch time or an ISO-8601 "
            "date-time"
        )
    number = as_finite(value)
    if number is None:
        raise TokenResponseError(
            f"{where} holds {not_finite(value)}, expected a finite number of seconds, an epoch time or an "
            "ISO-8601 date-time"
        )
    if number >= EPOCH_THRESHOLD:
        return number - offset, True
    return now + number, False


def parse_http_date(text: str) -> datetime | None:
    """An HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`), or None."""
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def server_offset(response: HttpResponse, now: float) -> float:
    """How far the server's clock (its `Date` header) is ahead of ours; 0 within `CLOCK_TOLERANCE`."""
    raw = response.headers.get("date")
    if not raw:
        return 0.0
    try:
        date = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    offset = date.timestamp() - now
    return offset if abs(offset) > CLOCK_TOLERANCE else 0.0


def clamp(expires_at: float, now: float, max_lifetime: float) -> tuple[float, str]:
    """Keep a token's lifetime within [MIN_TOKEN_LIFETIME, max_token_lifetime]; says how it was kept."""
    lifetime = expires_at - now
    if not lifetime >= MIN_TOKEN_LIFETIME:
        return now + MIN_TOKEN_LIFETIME, f" (raised to the minimum of {MIN_TOKEN_LIFETIME:g} s)"
    if lifetime > max_lifetime:
        return (
            now + max_lifetime,
            f" (capped by max_token_lifetime, {max_lifetime:g} s)",
        )
    return expires_at, ""
