"""The token and how to read it from the token endpoint's answer, free of I/O."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.account.urls import masked_url
from airflow_custom_token.errors import (
    TokenRequestError,
    TokenResponseError,
)
from airflow_custom_token.expiry import clamp, expiry, jwt_exp, server_offset
from airflow_custom_token.fields import (
    option_default,
)
from airflow_custom_token.retry import RETRYABLE_STATUSES, parse_retry_after
from airflow_custom_token.wire import HttpResponse, excerpt, shape

# A token travels in a header or a URL: no control character (CR, LF, NUL, ...), no line or paragraph
# separator, no unpaired surrogate (not encodable).
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


# A refresh token is kept this long at most (`refresh_lifetime`'s maximum, 366 days), whatever an answer or
# a cache entry says.
MAX_REFRESH_LIFETIME = 31_622_400.0


_LINE_BREAKS = frozenset("\r\n\x85\u2028\u2029")


@dataclass(frozen=True)
class TokenLimits:
    """Bounds on a token answer: the `[custom_token]` options of the same names (defaults from there)."""

    max_token_response_bytes: int = field(default_factory=lambda: option_default("max_token_response_bytes"))
    max_token_bytes: int = field(default_factory=lambda: option_default("max_token_bytes"))
    max_token_lifetime: float = field(default_factory=lambda: option_default("max_token_lifetime"))

    @classmethod
    def from_settings(cls, settings: object) -> TokenLimits:
        """The limits `settings` sets (its attributes of the same names; the default for any it lacks)."""
        default = cls()
        return cls(**{f.name: getattr(settings, f.name, getattr(default, f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class Token:
    """An access token and when it expires (epoch seconds). Its repr never shows the value.

    `outputs`: the additional outputs read with it (`access_outputs`), by name; as secret as the token,
    cached, refreshed and discarded with it.
    """

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float
    expiry_source: str = "default lifetime"
    outputs: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    # the refresh token read with it (`refresh_path`), or kept from the one that renewed it, and when it
    # expires (`refresh_expires_in`, else `refresh_lifetime`): it outlives the access token in the caches
    refresh: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.obtained_at

    @property
    def keep_until(self) -> float:
        """Until when a cache keeps it: its expiry, or its refresh token's when that is later."""
        if self.refresh is None or self.refresh_expires_at is None:
            return self.expires_at
        return max(self.expires_at, self.refresh_expires_at)

    def refresh_usable(self, now: float) -> str | None:
        """The refresh token, if it has not expired."""
        if self.refresh is None or (self.refresh_expires_at is not None and now >= self.refresh_expires_at):
            return None
        return self.refresh

    def spent(self) -> Token:
        """This token with its access token expired and its refresh token kept (a `refresh_on` answer,
        an invalidation): the next use renews it with the refresh token."""
        return replace(self, expires_at=self.obtained_at, expiry_source="discarded")

    def refresh_at(self, margin: float) -> float:
        """When to stop using it: `margin` seconds before expiry, at most half its lifetime early."""
        return self.expires_at - min(margin, max(self.lifetime, 0) / 2)

    def is_fresh(self, now: float, margin: float) -> bool:
        return now < self.refresh_at(margin)

    def to_json(self) -> dict[str, Any]:
        data = {"v": self.value, "exp": self.expires_at, "at": self.obtained_at, "src": self.expiry_source}
        if self.outputs:
            data["o"] = dict(self.outputs)
        if self.refresh is not None:
            data["r"] = self.refresh
            data["rexp"] = self.refresh_expires_at
        return data

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], now: float | None = None, max_lifetime: float | None = None
    ) -> Token:
        """A token as `to_json` wrote it; one written without outputs (an older version) has none.

        An `exp` or `at` that is not a finite number (`Infinity`, `NaN`, 1e400) raises ValueError: the
        caches ignore and replace such an entry. With `now` (the caches' reads), the expiry is kept
        within `max_lifetime` (default: `[custom_token] max_token_lifetime`'s) of when the token was
        obtained, and that is never later than `now`: no entry stays valid for longer.
        """
        raw = data.get("o")
        outputs = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        expires_at, obtained_at = _finite_time(data["exp"], "exp"), _finite_time(data["at"], "at")
        if now is not None:
            limit = option_default("max_token_lifetime") if max_lifetime is None else max_lifetime
            obtained_at = min(obtained_at, now)
            expires_at = min(expires_at, obtained_at + limit)
        refresh = data.get("r")
        refresh_expires_at = None
        if isinstance(refresh, str) and refresh:
            refresh_expires_at = _finite_time(data.get("rexp"), "rexp")
            if now is not None:
                refresh_expires_at = min(refresh_expires_at, obtained_at + MAX_REFRESH_LIFETIME)
        else:
            refresh = None
        return cls(
            str(data["v"]), expires_at, obtained_at, str(data.get("src", "cache")), outputs,
            refresh, refresh_expires_at,
        )  # fmt: skip


def _finite_time(raw: Any, name: str) -> float:
    """A cached entry's time (epoch seconds): a finite number, else ValueError."""
    try:
        value = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else math.nan
    except OverflowError:  # an integer beyond float's range
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"cached token: {name} is not a finite number")
    return value


def _json(
    response: HttpResponse,
    account: ConnectedAccount,
    location: str,
    what: str = "Token location",
    endpoint: str | None = None,
) -> Any:
    hint = (
        "if the whole answer is the token, set access_response_path to 'text'"
        if what == "Token location"
        else "if the whole answer is the value, set its location to 'text'"
    )
    endpoint = endpoint or f"the token endpoint {masked_url(account.token_request.url, account.secrets)}"
    try:
        return json.loads(response.body.decode("utf-8"))
    except RecursionError:  # the decoder recurses once a level: 100,000 `[` exhaust the stack
        raise TokenResponseError(
            f"{what} {location!r} is a JSON path, but {endpoint} answered JSON nested too deeply "
            f"to read ({len(response.body)} bytes, not quoted)"
        ) from None
    except (UnicodeDecodeError, ValueError):
        ctype = response.headers.get("content-type", "no content type")
        raise TokenResponseError(
            f"{what} {location!r} is a JSON path, but {endpoint} answered {ctype} that is not JSON "
            f"({len(response.body)} bytes, not quoted: a successful answer may hold the token itself; "
            f"{hint})"
        ) from None


def _walk(data: Any, path: str) -> tuple[bool, Any, str]:
    """Follow a dotted path; returns (found, value, where it stopped)."""
    current = data
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isascii() and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, current, ".".join(walked)
        walked.append(part)
    return True, current, path


class _Answer:
    """A token answer whose JSON body is parsed once, by the first location that needs it."""

    def __init__(
        self, account: ConnectedAccount, response: HttpResponse, endpoint: str | None = None
    ) -> None:
        self.account = account
        self.response = response
        self.endpoint = endpoint  # how errors name who answered (None: the token endpoint)
        self.data: Any = None  # the parsed body, once a location has needed it

    def json(self, location: str, what: str) -> Any:
        if self.data is None:
            self.data = _json(self.response, self.account, location, what, self.endpoint)
        return self.data


def _locate(answer: _Answer, location: str, where: str, what: str) -> Any:
    """The raw value at `location` (the syntax of `access_response_path`); `where` and `what` name it
    in errors ("token location 'x' (access_response_path)", "Token location")."""
    response = answer.response
    if location.startswith("header:"):
        name = location.split(":", 1)[1].strip().lower()
        value: Any = response.headers.get(name)
        if value is None:
            names = ", ".join(sorted(response.headers)) or "none"
            raise TokenResponseError(f"The {where}: the response has no header {name!r}; headers: {names}")
        return value
    if location.startswith("cookie:"):
        name = location.split(":", 1)[1].strip()
        value = response.cookies.get(name)
        if value is None:
            names = ", ".join(sorted(response.cookies)) or "none"
            raise TokenResponseError(
                f"The {where}: the response sets no cookie {name!r}; cookies set: {names}"
            )
        return value
    if location == "text":
        return response.body.decode("utf-8", "replace").strip()
    found, value, stopped = _walk(answer.json(location, what), location)
    if not found:
        at = f" at {stopped!r}" if stopped else ""
        raise TokenResponseError(f"The {where} is not in the response; it holds {shape(value)}{at}")
    return value


def _read_outputs(
    account: ConnectedAccount,
    answer: _Answer,
    limits: TokenLimits,
    outputs: tuple[tuple[str, str], ...] | None = None,
    key: str = "access_outputs",
) -> dict[str, str]:
    """The additional outputs (`access_outputs`, or `outputs` of `key`): each must be there, as sendable
    as the token."""
    found: dict[str, str] = {}
    in_headers = account.header_slots
    for name, location in account.outputs if outputs is None else outputs:
        where = f"output {name!r} at {location!r} ({key})"
        _check_size(account, answer.response, limits, location, f"The {where}", answer.endpoint)
        value = _locate(answer, location, where, f"Output {name!r} location")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise TokenResponseError(f"The {where} holds {shape(value)}, expected text")
        if not value.strip():
            raise TokenResponseError(f"The {where} holds an empty value")
        value = value.strip()
        header = f"{{{name}}} is sent in a header" if name in in_headers else None
        _check_sendable(value, f"The {where}", limits, header, noun="value")
        found[name] = value
    return found


def read_step_outputs(
    account: ConnectedAccount,
    response: HttpResponse,
    outputs: tuple[tuple[str, str], ...],
    limits: TokenLimits,
    key: str,
    endpoint: str,
) -> dict[str, str]:
    """The outputs a login step reads from its answer (`login`), with the checks of `access_outputs`;
    `endpoint` names the step in errors."""
    return _read_outputs(account, _Answer(account, response, endpoint), limits, outputs, key)


def _check_size(
    account: ConnectedAccount,
    response: HttpResponse,
    limits: TokenLimits,
    location: str | None = None,
    where: str | None = None,
    endpoint: str | None = None,
) -> None:
    """A location in the body (JSON path or text) reads at most `max_token_response_bytes`."""
    location = account.response_path if location is None else location
    where = f"The token location {location!r} (access_response_path)" if where is None else where
    if location.startswith(("header:", "cookie:")) or len(response.body) <= limits.max_token_response_bytes:
        return
    raise TokenResponseError(
        f"{where} was not read: "
        + (endpoint or f"the token endpoint {masked_url(account.token_request.url, account.secrets)}")
        + " answered more than "
        f"{limits.max_token_response_bytes} bytes ([custom_token] max_token_response_bytes), "
        "and was not read further"
    )


def _check_token(account: ConnectedAccount, value: str, limits: TokenLimits) -> None:
    """A token must be sendable as is: of bounded size, text that a header or a URL carries. Never quoted."""
    where = f"The token location {account.response_path!r} (access_response_path)"
    header = "inject_as is header" if account.inject_as == "header" else None
    _check_sendable(value, where, limits, header)


def _check_sendable(
    value: str, where: str, limits: TokenLimits, header: str | None, noun: str = "token"
) -> None:
    """`value` (a token, or an output) is of bounded size and text that a header or a URL carries
    (`header`: why it travels in a header, where only ASCII goes). Never quoted."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limits.max_token_bytes:
        raise TokenResponseError(
            f"{where} holds a {noun} of {size} bytes, more than [custom_token] max_token_bytes "
            f"({limits.max_token_bytes}; the {noun} is not quoted): check that the location points at the "
            f"{noun}, or raise max_token_bytes if the API issues {noun}s that long"
        )
    bad = _UNSENDABLE.search(value)
    if bad is not None:
        char = bad.group()
        what = (
            "a line break (CR or LF)"
            if char in _LINE_BREAKS
            else "an unpaired surrogate"
            if "\ud800" <= char <= "\udfff"
            else "a control character"
        )
        raise TokenResponseError(
            f"{where} holds a {noun} that cannot be sent: it contains {what} (the {noun} is not quoted); "
            f"a {noun} must be printable text to travel in a header or a URL"
        )
    if header is not None and not value.isascii():
        raise TokenResponseError(
            f"{where} holds a {noun} with characters other than ASCII (the {noun} is not quoted), which a "
            f"header cannot carry ({header})"
        )


def read_token(
    account: ConnectedAccount,
    response: HttpResponse,
    now: float | None = None,
    limits: TokenLimits | None = None,
) -> Token:
    """Turn the token endpoint's answer into a Token, or raise a precise, secret-free error."""
    now = time.time() if now is None else now
    limits = TokenLimits() if limits is None else limits
    check_status(account, response)
    _check_size(account, response, limits)
    location = account.response_path
    answer = _Answer(account, response)
    value = _locate(answer, location, f"token location {location!r} (access_response_path)", "Token location")
    if not isinstance(value, str):
        raise TokenResponseError(
            f"The token location {location!r} (access_response_path) holds {shape(value)}, expected text"
        )
    if not value.strip():
        raise TokenResponseError(
            f"The token location {location!r} (access_response_path) holds an empty token"
        )
    value = value.strip()
    _check_token(account, value, limits)
    outputs = _read_outputs(account, answer, limits)
    offset = server_offset(response, now)
    expires_at: float | None = None
    absolute = False
    source = "default lifetime (access_lifetime)"
    expiry_path = account.expiry_path
    if expiry_path.startswith("header:"):
        header = response.headers.get(expiry_path.split(":", 1)[1].strip().lower())
        if header is not None and header.strip():
            expires_at, absolute = expiry(header, now, expiry_path, offset, http_date=True)
            source = f"expiry location {expiry_path!r}"
    elif answer.data is not None and expiry_path:  # a JSON path, in a body a location has parsed
        found, raw, _ = _walk(answer.data, expiry_path)
        if found and raw is not None:
            expires_at, absolute = expiry(raw, now, expiry_path, offset)
            source = f"expiry location {expiry_path!r}"
    if expires_at is None:
        exp = jwt_exp(value, location)
        if exp is not None:
            expires_at, absolute, source = exp - offset, True, "JWT exp claim"
    if expires_at is None:
        expires_at = now + account.default_lifetime
    if absolute and offset:
        source += f" (read against the server's clock, {offset:+.0f} s from ours)"
    expires_at, kept = clamp(expires_at, now, limits.max_token_lifetime)
    refresh, refresh_expires_at = _read_refresh(account, answer, limits, now)
    return Token(
        value=value, expires_at=expires_at, obtained_at=now, expiry_source=source + kept, outputs=outputs,
        refresh=refresh, refresh_expires_at=refresh_expires_at,
    )  # fmt: skip


def _read_refresh(
    account: ConnectedAccount, answer: _Answer, limits: TokenLimits, now: float
) -> tuple[str | None, float | None]:
    """The refresh token the answer carries at `refresh_path` (None: it carries none, and the one that
    was sent stays in use), and when it expires: `refresh_expires_in` (seconds) where the JSON answer
    gives it, else `refresh_lifetime`; never later than `MAX_REFRESH_LIFETIME`."""
    spec = account.refresh
    if spec is None:
        return None, None
    where = f"refresh token location {spec.path!r} (refresh_path)"
    try:
        value = _locate(answer, spec.path, where, "Refresh token location")
    except TokenResponseError:
        return None, None  # not in this answer: many APIs rotate only now and then
    if value is None:
        return None, None
    if not isinstance(value, str) or not value.strip():
        raise TokenResponseError(f"The {where} holds {shape(value)}, expected the refresh token as text")
    value = value.strip()
    _check_sendable(value, f"The {where}", limits, None, noun="refresh token")
    lifetime: float = spec.lifetime
    data = answer.data
    raw = data.get("refresh_expires_in") if isinstance(data, Mapping) else None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw) and raw > 0:
        lifetime = float(raw)
    return value, now + min(lifetime, MAX_REFRESH_LIFETIME)


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
    raise status_error(
        f"Token request failed: {request.method} {masked_url(request.url, account.secrets)} answered",
        response,
        account.secrets,
    )


def status_error(prefix: str, response: HttpResponse, secrets: tuple[str, ...]) -> TokenRequestError:
    """The error for an error answer (status 400 or more): `prefix` ("Token request failed: POST <url>
    answered"), the status, a redacted excerpt of the body; retryable for 408/425/429/5xx."""
    retryable = response.status in RETRYABLE_STATUSES or response.status >= 500
    ctype = response.headers.get("content-type", "")
    body = excerpt(response.body, secrets)
    if "html" in ctype:
        body = "an HTML page" + (f": {body[:80]}" if body else "")
    return TokenRequestError(
        f"{prefix} {response.status} {response.reason}".rstrip() + (f"; body: {body}" if body else ""),
        status=response.status,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
