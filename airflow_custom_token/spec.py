"""The integration and its connected account: validated, immutable, built from connections. No I/O.

`load_chain` walks `integration_conn_id` inheritance as a generator (it yields the conn ids it needs and
receives their fields), so the sync hook and the async trigger share it. `build_account` turns the chain
into a `ConnectedAccount` in named phases, each a function that returns what it built and the problems it
found:

1. `merge_chain`: each connection's extra typed by the field table (`read_extra`), then merged,
   integration first, account last;
2. `check_fields`: the generic checks the table declares (required, choices, pattern, range, list items,
   object keys), defaults applied; `check_token_location` for what the table cannot say;
3. `collect_values`: the placeholder values (built-ins, integration and task parameters);
   `check_outputs`: the additional outputs (`access_outputs`), whose names must not shadow them;
4. `render_inputs`: every input with its placeholders resolved (an output's, in `inject_template` and
   `request_parameters`, left to fill per token: `PerToken`);
5. `allowed_origins`: the origins that may receive the token;
6. `build_token_request`: the token request (`access_auth`: the client's Basic header, if asked).

`build_account` runs them all and raises one `ConfigurationError` that lists every problem, or returns the
account. The fields themselves (keys, kinds, defaults, choices, ranges) are declared once, in
`airflow_custom_token.fields`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from airflow_custom_token import templating
from airflow_custom_token.errors import ConfigurationError, PlaceholderError, TokenResponseError
from airflow_custom_token.fields import (
    BUILT_INS,
    CONN_TYPE,
    EXTRA_FIELDS,
    FIELDS,
    LEGACY_PREFIX,
    REDIRECT_URIS,
    STANDARD_FIELDS,
    ExtraField,
)

# Integration parameters whose name says they are secret: masked and redacted like the token.
SECRET_NAME = re.compile(r"secret|password|passwd|pwd|token|key|credential|auth|private|sign", re.IGNORECASE)
# ... unless the name says it is about the secret rather than the secret (`token_type: bearer` must not
# make Airflow's masker hide the word "bearer" everywhere).
NOT_SECRET_NAME = re.compile(r"(type|kind|scheme|method|name|url|uri|endpoint|path|id)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Does a parameter's name mark its value as secret?"""
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


@dataclass(frozen=True)
class RawConnection:
    """What the provider reads of an Airflow connection, with `extra` already parsed to a dict."""

    conn_id: str
    conn_type: str | None
    host: str | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    port: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    extra_error: str | None = None  # why `extra` could not be parsed, if it could not

    @classmethod
    def from_airflow(cls, conn: Any) -> RawConnection:
        """Build from an `airflow.sdk.Connection` (or anything with its attributes)."""
        extra: Mapping[str, Any] = {}
        error = None
        raw = getattr(conn, "extra", None)
        if isinstance(raw, Mapping):
            extra = raw
        elif raw:
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                error = (
                    "extra: expected a JSON object, found text that is not valid JSON "
                    f"({exc.msg} at char {exc.pos})"
                )
            else:
                if isinstance(parsed, dict):
                    extra = parsed
                else:
                    error = f"extra: expected a JSON object, found {type(parsed).__name__}"
        return cls(
            conn_id=conn.conn_id,
            conn_type=conn.conn_type,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            schema=getattr(conn, "schema", None),
            port=getattr(conn, "port", None),
            extra=extra,
            extra_error=error,
        )


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
        from airflow_custom_token.redaction import redact_string

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


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`; a URL that cannot be read (a bad port, an unclosed `[`) has no host,
    so it is never an allowed origin."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return "", "", None
    return scheme, (parts.hostname or "").lower(), port


def origin_text(url: str | None) -> str:
    """`scheme://host[:port]` of a URL as written, without its userinfo and path (which may hold secrets)."""
    scheme, _, rest = (url or "").partition("://")
    return f"{scheme}://{re.split(r'[/?#]', rest, maxsplit=1)[0].rpartition('@')[2]}"


# What a URL's authority (`[userinfo@]host[:port]`) may hold (RFC 3986): ASCII only, no space or `\`.
_AUTHORITY_CHARS = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@\[\]]")
_PORT_TEXT = re.compile(r"[0-9:]{1,12}")


def url_flaw(url: str) -> tuple[str, str] | None:
    """Why `url` is not a usable absolute http(s) URL, as (what was expected, what was found); None if it is.

    Only what cannot hold a secret is quoted: the part before the path of a URL without a scheme
    (userinfo dropped), a scheme, one character, a port. Checked here, not left to the HTTP clients:
    they refuse or silently change (IDNA: a full-width at sign or full stop) what `urlsplit` reads, so
    the origin checked and the host called could differ.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        first = re.split(r"[/?#]", url, maxsplit=1)[0]
        _, at, host = first.rpartition("@")
        shown = ("...@" if at else "") + host + ("/..." if url[len(first) :].strip("/") else "")
        return "scheme", f"found {shown!r}"
    if head.lower() not in ("http", "https"):
        valid = re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", head)
        return "scheme", f"found scheme {head!r}" if valid else "found no valid scheme"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "\\" in authority:  # urlsplit reads `h\@x` as user `h\`, host `x`; urllib3 as host `h`, path `\@x`
        return "a host name", "found the character '\\', which a URL's host cannot hold"
    userinfo, _, host_port = authority.rpartition("@")
    if any(not _AUTHORITY_CHARS.match(c) for c in userinfo):  # may hold a password: nothing quoted
        return "a URL whose user and password (before @) are ASCII and percent-encoded", "found other text"
    bad = next((c for c in host_port if not _AUTHORITY_CHARS.match(c)), None)
    if bad is not None and not bad.isascii():
        return (
            "a host name in ASCII (an internationalized domain name in its xn-- form)",
            f"found the character {bad!r} (U+{ord(bad):04X}), which HTTP clients read as another or refuse",
        )
    if bad is not None:
        return "a host name", f"found the character {bad!r}, which a URL's host cannot hold"
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a `[` without its `]`, or the reverse
        return "an IPv6 address in brackets, e.g. http://[::1]:8080", "found an unmatched '[' or ']'"
    if not parts.hostname:
        return "a URL with a host name", "found none"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        text = authority.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        return (
            "a port from 1 to 65535 after the host",
            f"found {text!r}" if _PORT_TEXT.fullmatch(text) else "found another value",
        )
    return None


@dataclass(frozen=True)
class PerToken:
    """Text completed per token: `parts` (their placeholders resolved) around `slots`, each `token` or an
    additional output's name: ``parts[0] + <slots[0]> + parts[1] + ...``."""

    parts: tuple[str, ...]
    slots: tuple[str, ...] = ()

    def fill(self, token: str, outputs: Mapping[str, str]) -> str:
        """The text for one token and the outputs read with it."""
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            if slot == "token":
                out.append(token)
            elif slot in outputs:
                out.append(outputs[slot])
            else:  # a token cached without it (see `ConnectedAccount.has_outputs`)
                raise TokenResponseError(
                    f"The token in use has no output {slot!r} (access_outputs); discard it "
                    "(CustomTokenHook.invalidate_token) to fetch a new one"
                )
            out.append(part)
        return "".join(out)


@dataclass(frozen=True)
class Transport:
    """How an account's requests reach the servers (token and API requests, sync and async): TLS and
    proxies. `airflow_custom_token.transport` turns it into what requests and aiohttp take."""

    verify: bool = True  # the on/off switch; `ca_bundle` says against what
    ca_bundle: str | None = None  # a PEM file of CA certificates (instead of the system's)
    client_cert: str | None = None  # a PEM file: the TLS client certificate (and its key, without client_key)
    client_key: str | None = None  # a PEM file: the client certificate's private key
    proxies: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # requests' dict; may hold secrets


@dataclass(frozen=True)
class ConnectedAccount:
    """A connected account of an integration: every input resolved, ready to fetch and inject a token."""

    conn_id: str
    integration_name: str
    integration_key: str
    base_url: str = field(repr=False)
    token_request: HttpRequest
    response_path: str
    expiry_path: str
    default_lifetime: int
    inject_as: str
    inject_name: str
    inject_segments: tuple[str, ...] = field(repr=False)  # the template split at `{token}`
    request_headers: tuple[tuple[str, str], ...] = field(repr=False)
    request_query: tuple[tuple[str, str], ...] = field(repr=False)
    refresh_on: frozenset[int]
    test_endpoint: str | None
    timeout: float | None
    verify: bool
    allowed_origins: frozenset[tuple[str, str, int | None]]
    values: Mapping[str, str] = field(repr=False)  # placeholder values, for per-request rendering
    secrets: tuple[str, ...] = field(repr=False)  # password and secret-named parameter values
    # access_outputs: (name, location in the token answer), read with each token (`Token.outputs`)
    outputs: tuple[tuple[str, str], ...] = ()
    inject_slots: tuple[str, ...] = field(default=(), repr=False)  # between the segments: token or an output
    # request parameters whose value holds an output's placeholder, completed per token
    token_headers: tuple[tuple[str, PerToken], ...] = field(default=(), repr=False)
    token_query: tuple[tuple[str, PerToken], ...] = field(default=(), repr=False)
    request_retries: int = 0  # API retries of idempotent requests (`rules.api_policy`)
    transport: Transport = field(default_factory=Transport)  # TLS client certificate, CA bundle, proxies

    @property
    def cache_key(self) -> str:
        """Integration key plus a digest of the fully resolved token request (and of the outputs read
        with the token, when there are any: a token cached without them is not this account's)."""
        digest = self.token_request.fingerprint()
        if self.outputs:
            digest = hashlib.sha256(json.dumps([digest, self.outputs]).encode()).hexdigest()
        return f"{self.integration_key}-{digest[:40]}"

    def has_outputs(self, outputs: Mapping[str, str]) -> bool:
        """Does a token read with `outputs` carry every output this account reads?"""
        return all(name in outputs for name, _ in self.outputs)

    @property
    def injection(self) -> PerToken:
        """The value that carries the token: `inject_template`, completed per token."""
        slots = self.inject_slots or ("token",) * (len(self.inject_segments) - 1)
        return PerToken(self.inject_segments, slots)

    @property
    def header_slots(self) -> frozenset[str]:
        """`token` and the outputs that travel in a header (where only ASCII goes)."""
        slots = {slot for _, template in self.token_headers for slot in template.slots}
        if self.inject_as == "header":
            slots.update(self.injection.slots)
        return frozenset(slots)

    def injection_value(self, token: str, outputs: Mapping[str, str] | None = None) -> str:
        """The rendered value that carries the token, e.g. `Bearer <token>` (with the outputs read with
        it, when the template holds any)."""
        return self.injection.fill(token, outputs or {})

    def credentials(
        self, token: str, outputs: Mapping[str, str] | None = None
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Headers and query parameters an API request carries: request parameters plus the token."""
        outputs = outputs or {}
        headers = [*self.request_headers, *((n, t.fill(token, outputs)) for n, t in self.token_headers)]
        query = [*self.request_query, *((n, t.fill(token, outputs)) for n, t in self.token_query)]
        target = headers if self.inject_as == "header" else query
        target.append((self.inject_name, self.injection_value(token, outputs)))
        return headers, query

    def token_values(self, token: str, outputs: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """Every value that carries the token or an output: to redact like the token."""
        outputs = outputs or {}
        values = [token, *outputs.values(), self.injection_value(token, outputs)]
        values += [t.fill(token, outputs) for _, t in (*self.token_headers, *self.token_query)]
        return tuple(dict.fromkeys(v for v in values if v))

    @property
    def added_names(self) -> tuple[set[str], set[str]]:
        """Names of the headers and query parameters `credentials` adds (to strip them on redirect)."""
        headers = {n for n, _ in (*self.request_headers, *self.token_headers)}
        query = {n for n, _ in (*self.request_query, *self.token_query)}
        (headers if self.inject_as == "header" else query).add(self.inject_name)
        return headers, query

    def without_added_params(self, url: str) -> str:
        """`url` without the query parameters `credentials` adds (a Location that repeats them: `rules`)."""
        names = self.added_names[1]
        parts = urlsplit(url)
        if not names or not parts.query:
            return url
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
        return urlunsplit(parts._replace(query=urlencode(kept)))

    def is_allowed(self, url: str) -> bool:
        """May a request to `url` carry the token and the request parameters?"""
        return _origin(url) in self.allowed_origins

    def request_url(self, endpoint: str, extra_values: Mapping[str, str] | None = None) -> str:
        """Absolute URL of an API endpoint: `host` + endpoint, or an absolute URL on an allowed origin."""
        values = {**self.values, **(extra_values or {})}
        url = templating.render_url(endpoint or "", values, "endpoint")
        if "://" not in url:
            return self.base_url + ("" if not url or url.startswith("/") else "/") + url
        problems: list[str] = []
        if not _url_problem(problems, "endpoint", url, _HTTP_URL) and not self.is_allowed(url):
            scheme, host, port = _origin(url)
            problems.append(
                f"endpoint: expected a path or a URL on the origin of host ({origin_text(self.base_url)}) "
                f"or of allowed_hosts; found a URL on {scheme}://{host}:{port}, which would receive the token"
            )
        if problems:
            raise ConfigurationError(self.conn_id, problems)
        return url

    def render_request(
        self, endpoint: str, headers: Mapping[str, Any] | None, params: Mapping[str, Any] | None
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A request's URL, headers and query parameters with placeholders resolved (bodies never are).

        Raises `ConfigurationError` naming the field, before anything is sent.
        """
        try:
            url = self.request_url(endpoint)
            rendered_headers = templating.render_object(dict(headers or {}), self.values, "headers")
            rendered_params = templating.render_object(dict(params or {}), self.values, "query_params")
        except PlaceholderError as exc:
            raise ConfigurationError(self.conn_id, [str(exc)]) from None
        return url, rendered_headers, rendered_params

    def describe(self) -> str:
        return f"{self.integration_name} ({self.conn_id})"


# ---------------------------------------------------------------------------------------------------
# Loading the inheritance chain


ChainLoader = Generator[str, "RawConnection | None", list[RawConnection]]


def load_chain(conn_id: str) -> ChainLoader:
    """Yield the conn ids to fetch (account first, then its integrations); return the chain.

    Drive it with `drive_chain` (sync) or send connections yourself (async). A cycle or a missing
    connection raises `ConfigurationError`.
    """
    chain: list[RawConnection] = []
    seen: list[str] = []
    current: str | None = conn_id
    while current:
        if current in seen:
            path = " -> ".join([*seen, current])
            raise ConfigurationError(conn_id, [f"integration_conn_id: inheritance cycle {path}"])
        seen.append(current)
        raw = yield current
        if raw is None:
            if not chain:
                raise ConfigurationError(conn_id, [f"connection {current!r} is not defined"])
            raise ConfigurationError(
                conn_id,
                [
                    f"integration_conn_id: expected the conn id of a custom_token connection; "
                    f"found {current!r}, which is not defined"
                ],
            )
        if chain and raw.conn_type and raw.conn_type != CONN_TYPE:
            raise ConfigurationError(
                conn_id,
                [
                    f"integration_conn_id: expected a custom_token connection; {current!r} has conn_type "
                    f"{raw.conn_type!r}"
                ],
            )
        chain.append(raw)
        parent = normalize_extra(raw.extra).get("integration_conn_id")
        current = str(parent) if parent else None
    return chain


def drive_chain(conn_id: str, lookup: Callable[[str], RawConnection | None]) -> list[RawConnection]:
    """Run `load_chain` with a synchronous lookup."""
    gen = load_chain(conn_id)
    try:
        wanted = next(gen)
        while True:
            wanted = gen.send(lookup(wanted))
    except StopIteration as stop:
        return list(stop.value)


async def adrive_chain(
    conn_id: str, lookup: Callable[[str], Awaitable[RawConnection | None]]
) -> list[RawConnection]:
    """Run `load_chain` with an asynchronous lookup (the triggerer)."""
    gen = load_chain(conn_id)
    try:
        wanted = next(gen)
        while True:
            wanted = gen.send(await lookup(wanted))
    except StopIteration as stop:
        return list(stop.value)


# ---------------------------------------------------------------------------------------------------
# Phase 1: merging the chain, each connection's extra typed by the field table


def normalize_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the form's unprefixed keys and older UIs' `extra__custom_token__<key>`; unprefixed wins."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key.startswith(LEGACY_PREFIX):
            out.setdefault(key[len(LEGACY_PREFIX) :], value)
    for key, value in extra.items():
        if not key.startswith(LEGACY_PREFIX):
            out[key] = value
    # Empty means "not set" (inherited): the form saves every field, unset objects as {} or null.
    return {k: v for k, v in out.items() if v not in (None, "", {}) and (v != [] or _keeps_empty(k))}


def _keeps_empty(key: str) -> bool:
    spec = FIELDS.get(key)
    return spec is not None and spec.keep_empty


def coerce(spec: ExtraField, value: Any, problems: list[str]) -> Any:
    """A stored value turned into the field's kind; on failure, a problem naming the key, and None."""
    key, kind = spec.key, spec.kind
    found = type(value).__name__
    if kind == "str":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{key}: expected text, found {found}")
        return None
    if kind in ("object", "list"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                problems.append(
                    f"{key}: expected JSON, found text that is not valid JSON ({exc.msg} at {exc.pos})"
                )
                return None
        want = dict if kind == "object" else list
        if kind == "list" and isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, want):
            label = "a JSON object" if kind == "object" else "a JSON list"
            problems.append(f"{key}: expected {label}, found {type(value).__name__}")
            return None
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        problems.append(f"{key}: expected true or false, found {found}")
        return None
    # int / number
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except OverflowError:  # an integer too large for a float: JSON allows 10**400
        number = math.inf
    except (TypeError, ValueError):
        problems.append(f"{key}: expected a number, found {found}")
        return None
    unit = f" of {spec.unit}" if spec.unit else ""
    if not math.isfinite(number):  # "Infinity", "NaN", "1e400": no range check can hold them
        problems.append(f"{key}: expected a finite number{unit}, found {_non_finite(value, number)}")
        return None
    if kind == "int":
        if number != int(number):
            problems.append(f"{key}: expected a whole number{unit}, found {number}")
            return None
        return int(number)
    return number


def _non_finite(value: Any, number: float) -> str:
    """How an error names a value that is not a finite number (never hundreds of digits)."""
    if isinstance(value, str) and len(value.strip()) <= 24:
        return repr(value.strip())
    if math.isnan(number):
        return "NaN"
    if isinstance(value, float):
        return "Infinity" if number > 0 else "-Infinity"
    return "a number too large to use"


def read_extra(extra: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One connection's extra fields, typed by the table (keys the table does not know are ignored)."""
    problems: list[str] = []
    typed: dict[str, Any] = {}
    for key, value in normalize_extra(extra).items():
        spec = FIELDS.get(key)
        if spec is None:
            continue
        coerced = coerce(spec, value, problems)
        if coerced is not None:
            typed[key] = coerced
    return typed, problems


_STANDARD = tuple(f.name for f in STANDARD_FIELDS if not f.hidden)  # host, login, password


@dataclass(frozen=True)
class MergedChain:
    """The chain merged into one connection: what the fields say before any check."""

    conn_id: str  # the account's
    fields: Mapping[str, Any]  # extra fields set along the chain, typed (objects merged by key: always set)
    standard: Mapping[str, str | None] = field(repr=False)  # host, login, password: last non-empty wins

    @property
    def host(self) -> str | None:
        return self.standard.get("host")


def merge_chain(chain: Sequence[RawConnection]) -> tuple[MergedChain, list[str]]:
    """Merge the chain, integration first, account last.

    A value set further down overrides, except a value equal to the form's default (a form-saved account
    always holds it, chosen or not); objects marked `merge_by_key` (integration_parameters) merge key by
    key; empty standard fields inherit.
    """
    problems: list[str] = []
    merged: dict[str, Any] = {}
    by_key: dict[str, dict[str, Any]] = {f.key: {} for f in EXTRA_FIELDS if f.merge_by_key}
    standard: dict[str, str | None] = dict.fromkeys(_STANDARD)
    for raw in reversed(chain):
        if raw.extra_error:
            problems.append(raw.extra_error if raw is chain[0] else f"{raw.extra_error} (in {raw.conn_id!r})")
        typed, found = read_extra(raw.extra)
        problems += found
        for key, value in typed.items():
            spec = FIELDS[key]
            if spec.merge_by_key:
                by_key[key].update(value)
            elif not (key in merged and spec.form_default is not None and value == spec.form_default):
                merged[key] = value
        for name in standard:
            value = getattr(raw, name)
            if value not in (None, ""):
                standard[name] = value
    merged.update(by_key)
    return MergedChain(chain[0].conn_id, merged, standard), problems


# ---------------------------------------------------------------------------------------------------
# Phase 2: the generic checks of the table


def check_fields(
    merged: MergedChain,
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Every extra field's value, checked against its declaration: required, choices, pattern, range,
    list items, object keys. Returns the value of every field (its default when unset, a choice as the
    table spells it, list items normalized) and the problems.

    `choices` and `defaults` override the table's at run time (the realms that have a redirect URI, the
    timeout from the settings).
    """
    problems: list[str] = []
    for spec in EXTRA_FIELDS:
        if spec.required and merged.fields.get(spec.key) in (None, ""):
            problems.append(
                f"{spec.key}: required field is missing (set it on {merged.conn_id!r} or on its integration)"
            )
    for std in STANDARD_FIELDS:
        if std.required_help and not merged.standard.get(std.name):
            problems.append(f"{std.name}: required field is missing: {std.required_help}")
    checked: dict[str, Any] = {}
    for spec in EXTRA_FIELDS:
        value = merged.fields.get(spec.key)
        if value is None:
            runtime = (defaults or {}).get(spec.key)
            value = spec.fresh_default() if runtime is None else runtime
        allowed = (choices or {}).get(spec.key, spec.choices)
        checked[spec.key] = check_value(spec, value, allowed, problems)
    return checked, problems


def check_value(spec: ExtraField, value: Any, choices: Sequence[str], problems: list[str]) -> Any:
    """One typed value against its field's declaration; returns it normalized."""
    key = spec.key
    if value is None or (spec.required and value == ""):  # missing: reported once, as missing
        return value
    if spec.choices and isinstance(value, str):
        folded = value.upper() if all(c == c.upper() for c in spec.choices) else value.lower()
        if folded not in choices:
            either = " or ".join(choices) if len(spec.choices) == 2 else f"one of {', '.join(choices)}"
            problems.append(f"{key}: expected {either}, found {value!r}")
        value = folded
    if spec.pattern is not None and isinstance(value, str) and not re.search(spec.pattern, value):
        problems.append(f"{key}: expected {spec.pattern_help}, found {value!r}")
    if spec.kind in ("int", "number") and _out_of_range(spec, value):
        problems.append(f"{key}: expected {spec.range_text()}, found {value}")
    if spec.items is not None and isinstance(value, list):
        value = _check_items(spec, value, problems)
    if spec.keys and isinstance(value, Mapping):
        unknown = sorted(set(value) - set(spec.keys))
        if unknown:
            names = " and/or ".join(repr(k) for k in spec.keys)
            problems.append(f"{key}: expected an object with keys {names}, found {unknown}")
    return value


def _out_of_range(spec: ExtraField, value: float) -> bool:
    return (
        (spec.minimum is not None and value < spec.minimum)
        or (spec.exclusive_minimum is not None and value <= spec.exclusive_minimum)
        or (spec.maximum is not None and value > spec.maximum)
    )


def _check_items(spec: ExtraField, values: list[Any], problems: list[str]) -> list[Any]:
    assert spec.items is not None
    item = spec.items
    kept: list[Any] = []
    for value in values:
        if item.kind == "int":
            ok = (
                not isinstance(value, bool)
                and isinstance(value, int | str)
                and str(value).isascii()  # "²" is a digit to isdigit, not to int
                and str(value).isdigit()
                and (item.minimum is None or int(value) >= item.minimum)
                and (item.maximum is None or int(value) <= item.maximum)
            )
            normalized: Any = int(value) if ok else None
        else:
            ok = isinstance(value, str) and bool(value.strip())
            normalized = value.strip() if ok else None
        if ok:
            kept.append(normalized)
        else:
            problems.append(f"{spec.key}: expected {item.expected()}, found {value!r}")
    return kept


PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def check_transport(checked: Mapping[str, Any]) -> list[str]:
    """A client key needs its certificate; each proxy is a URL (never quoted: it may hold credentials)."""
    problems = []
    if checked.get("client_key") and not checked.get("client_cert"):
        problems.append(
            "client_key: expected together with client_cert (the certificate it is the key of), "
            "found client_key alone"
        )
    for name, url in (checked.get("proxies") or {}).items():
        if not isinstance(url, str):
            problems.append(f"proxies.{name}: expected a proxy URL (text), found {type(url).__name__}")
        elif name != "no_proxy":
            parts = urlsplit(url.strip())
            if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
                problems.append(
                    f"proxies.{name}: expected a proxy URL such as http://proxy.example:3128 (scheme "
                    f"{', '.join(PROXY_SCHEMES)}), found a value without "
                    + ("a host" if parts.scheme.lower() in PROXY_SCHEMES else "one of these schemes")
                    + " (not quoted: it may hold credentials)"
                )
    return problems


def proxy_secrets(proxies: Mapping[str, Any] | None) -> list[str]:
    """The passwords in proxy URLs (`http://user:pass@proxy:3128`): redacted and masked like the token."""
    found = []
    for url in (proxies or {}).values():
        if isinstance(url, str):
            password = urlsplit(url.strip()).password
            if password:
                found += [password, unquote(password)]
    return list(dict.fromkeys(found))


def check_token_location(checked: Mapping[str, Any]) -> list[str]:
    """`header:` and `cookie:` need a name after them (the expiry's `header:` too)."""
    problems = []
    path = str(checked["access_response_path"])
    if path.startswith(("header:", "cookie:")) and not path.split(":", 1)[1].strip():
        problems.append(f"access_response_path: expected a name after {path!r}, found none")
    expiry = str(checked.get("access_expiry_path") or "")
    if expiry.startswith("header:") and not expiry.split(":", 1)[1].strip():
        problems.append(f"access_expiry_path: expected a name after {expiry!r}, found none")
    return problems


# ---------------------------------------------------------------------------------------------------
# Phase 3: placeholder values


def collect_values(
    merged: MergedChain,
    checked: Mapping[str, Any],
    task_parameters: Mapping[str, Any] | None = None,
    redirect_uris: Mapping[str, str] = REDIRECT_URIS,
) -> tuple[dict[str, str], list[str]]:
    """The placeholder values, lowest precedence first: `redirectUri` (of the realm), `login`,
    `password`, the integration parameters merged along the chain, the task's parameters."""
    problems: list[str] = []
    values: dict[str, str] = {"redirectUri": redirect_uris.get(checked["realm"], "")}
    for std in STANDARD_FIELDS:
        value = merged.standard.get(std.name)
        if std.placeholder_name and value is not None:
            values[std.placeholder_name] = value
    params = {**checked["integration_parameters"], **dict(task_parameters or {})}
    values.update(_str_map("integration_parameters", params, problems))
    return values, problems


def _str_map(key: str, obj: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(obj, Mapping):
        problems.append(f"{key}: expected a JSON object of names to values, found {type(obj).__name__}")
        return {}
    out: dict[str, str] = {}
    for name, value in obj.items():
        if isinstance(value, dict | list):
            problems.append(f"{key}.{name}: expected text or a number, found {type(value).__name__}")
            continue
        out[str(name)] = (
            "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        )
    return out


def secret_values(values: Mapping[str, str]) -> list[str]:
    """The password and every secret-named parameter's value: masked and redacted like the token."""
    secrets = [values["password"]] if values.get("password") else []
    secrets += [v for k, v in values.items() if is_secret_name(k) and k != "redirectUri" and v]
    return list(dict.fromkeys(secrets))


def check_outputs(
    checked: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """The additional outputs (`access_outputs`) as (name, location) pairs.

    A name is a placeholder name that shadows no other value: not `token`, not a built-in, not an
    integration parameter (nor a task's). A location is written as the token's (`access_response_path`).
    """
    problems: list[str] = []
    outputs: list[tuple[str, str]] = []
    taken = {"token": "the token", **{name: "a built-in" for name in BUILT_INS}}
    for raw_name, location in (checked["access_outputs"] or {}).items():
        name = str(raw_name)
        if not templating.PLACEHOLDER.fullmatch(f"{{{name}}}"):
            problems.append(
                "access_outputs: expected names of letters, digits and underscores (each is used as "
                f"{{name}}), found {name!r}"
            )
            continue
        owner = taken.get(name) or ("an integration parameter" if name in values else None)
        if owner is not None:
            problems.append(
                f"access_outputs: the output name {name!r} is the name of {owner} ({{{name}}}); "
                "choose another name"
            )
            continue
        if not isinstance(location, str) or not location.strip():
            found = repr(location) if isinstance(location, str) else type(location).__name__
            problems.append(
                f"access_outputs.{name}: expected a location as in access_response_path (a dotted JSON "
                f"path, header:<Name>, cookie:<name> or text), found {found}"
            )
            continue
        location = location.strip()
        if location.startswith(("header:", "cookie:")) and not location.split(":", 1)[1].strip():
            problems.append(f"access_outputs.{name}: expected a name after {location!r}, found none")
            continue
        outputs.append((name, location))
    return tuple(outputs), problems


# ---------------------------------------------------------------------------------------------------
# Phase 4: rendering the inputs


@dataclass(frozen=True)
class RenderedInputs:
    """Every input with its placeholders resolved; None where rendering failed (a problem says why)."""

    base_url: str | None  # host, without a trailing slash
    token_url: str | None  # access_endpoint, joined to base_url when relative
    access_parameters: Any
    access_headers: Any
    inject_name: str | None
    inject_segments: tuple[str | None, ...]  # inject_template split at {token} (and at each output)
    request_headers: tuple[tuple[str, str], ...]
    request_query: tuple[tuple[str, str], ...]
    test_url: str | None  # test_endpoint, when set, with a base URL and every placeholder available
    inject_slots: tuple[str, ...] = ()  # what goes between the segments: `token` or an output's name
    token_headers: tuple[tuple[str, PerToken], ...] = ()  # request parameters that hold an output
    token_query: tuple[tuple[str, PerToken], ...] = ()


def _split_slots(text: str, slots: Sequence[str]) -> list[str]:
    """`text` split at the placeholders `slots` name: literal text and slot names alternate."""
    pattern = "|".join(re.escape(slot) for slot in sorted(slots, key=len, reverse=True))
    return re.split(rf"\{{({pattern})\}}", text) if pattern else [text]


def render_inputs(
    merged: MergedChain,
    checked: Mapping[str, Any],
    values: Mapping[str, str],
    outputs: Sequence[str] = (),
) -> tuple[RenderedInputs, list[str]]:
    """Resolve the placeholders of every input; check the URLs' shape.

    The placeholders of `outputs` (names of additional outputs) and `{token}` stay open in
    `inject_template` and in the values of `request_parameters`: they are filled per token (`PerToken`).
    """
    problems: list[str] = []

    def render(name: str, fn: Callable[[Any, Mapping[str, str], str], Any], value: Any) -> Any:
        try:
            return fn(value, values, name)
        except PlaceholderError as exc:
            problems.append(str(exc))
            return None

    base_url = render("host", templating.render_url, (merged.host or "").rstrip("/"))
    if base_url and _url_problem(problems, "host", base_url, _BASE_URL_EXPECTED):
        base_url = None  # reported once: not joined to the endpoints, not an origin
    endpoint = render("access_endpoint", templating.render_url, checked["access_endpoint"] or "")
    if endpoint and "://" not in endpoint and base_url:
        endpoint = base_url + ("" if endpoint.startswith("/") else "/") + endpoint
    elif endpoint and "://" in endpoint:
        _url_problem(problems, "access_endpoint", endpoint, _HTTP_URL)
    access_params = render("access_parameters", templating.render_object, checked["access_parameters"] or {})
    access_headers = render("access_headers", templating.render_object, checked["access_headers"] or {})
    inject_name = render("inject_name", templating.render_text, checked["inject_name"] or "")
    per_token_start = len(problems)
    pieces = _split_slots(checked["inject_template"] or "", ("token", *outputs))
    segments = tuple(render("inject_template", templating.render_text, s) for s in pieces[0::2])
    request_parameters = checked["request_parameters"] or {}
    header_params, header_held = _hold_outputs(request_parameters.get("header") or {}, outputs)
    query_params, query_held = _hold_outputs(request_parameters.get("url") or {}, outputs)
    req_headers = render("request_parameters", templating.render_object, header_params)
    req_query = render("request_parameters", templating.render_object, query_params)
    token_params: dict[str, list[tuple[str, PerToken]]] = {"header": [], "url": []}
    for kind, held in (("header", header_held), ("url", query_held)):
        for key, text in held.items():
            name = render("request_parameters", templating.render_text, str(key))
            split = _split_slots(text, outputs)
            parts = [render(f"request_parameters.{key}", templating.render_text, p) for p in split[0::2]]
            if name is not None and None not in parts:
                token_params[kind].append((name, PerToken(tuple(p or "" for p in parts), tuple(split[1::2]))))
    if outputs:  # a misspelt output is a placeholder with no value: say which outputs there are
        for index in range(per_token_start, len(problems)):
            if "has no value" in problems[index]:
                problems[index] += f"; outputs available: {', '.join(outputs)}"
    test_endpoint = checked["test_endpoint"]
    test_url: str | None = None
    if test_endpoint:
        missing = templating.missing_placeholders(test_endpoint, values)
        if missing:
            problems.append(f"test_endpoint: placeholder {{{missing[0]}}} has no value")
        elif base_url:
            test_url = render("test_endpoint", templating.render_url, test_endpoint) or ""
    header_map = {} if req_headers is None else _str_map("request_parameters.header", req_headers, problems)
    query_map = {} if req_query is None else _str_map("request_parameters.url", req_query, problems)
    rendered = RenderedInputs(
        base_url=base_url,
        token_url=endpoint,
        access_parameters=access_params,
        access_headers=access_headers,
        inject_name=inject_name,
        inject_segments=segments,
        request_headers=tuple(header_map.items()),
        request_query=tuple(query_map.items()),
        test_url=test_url,
        inject_slots=tuple(pieces[1::2]),
        token_headers=tuple(token_params["header"]),
        token_query=tuple(token_params["url"]),
    )
    return rendered, problems


_BASE_URL_EXPECTED = "a base URL with scheme, e.g. https://api.example.com; {found}"
_HTTP_URL = "an http(s) URL, {found}"


def _url_problem(problems: list[str], key: str, url: str, scheme_expected: str) -> bool:
    """Note the problem of an absolute URL `url` (`url_flaw`), if it has one; whether it had one.

    `scheme_expected` words a missing or wrong scheme, e.g. "an http(s) URL, {found}".
    """
    flaw = url_flaw(url)
    if flaw is None:
        return False
    expected, found = flaw
    if expected == "scheme":
        problems.append(f"{key}: expected " + scheme_expected.format(found=found))
    else:
        problems.append(f"{key}: expected {expected}, {found}")
    return True


def _hold_outputs(params: Any, outputs: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """`params` without the values that hold an output's placeholder, and those values by key."""
    if not outputs or not isinstance(params, Mapping):
        return params, {}
    rest: dict[str, Any] = {}
    held: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, str) and set(templating.placeholders(value)) & set(outputs):
            held[str(key)] = value
        else:
            rest[key] = value
    return rest, held


# ---------------------------------------------------------------------------------------------------
# Phase 5: the origins that may receive the token


def allowed_origins(
    base_url: str | None, allowed_hosts: Sequence[str] | None, test_url: str | None = None
) -> tuple[frozenset[tuple[str, str, int | None]], list[str]]:
    """The origin of the base URL plus `allowed_hosts` (a bare host name means https); a test endpoint
    elsewhere could never be called with the token, so it is a problem too."""
    problems: list[str] = []
    allowed = {_origin(base_url)} if base_url else set()
    either = "a host name (meaning https) or an origin like https://host:port"
    for entry in allowed_hosts or []:
        if "://" in entry:
            if not _url_problem(problems, "allowed_hosts", entry, either + ", {found}"):
                allowed.add(_origin(entry))
        elif templating.HOST_NAME.fullmatch(entry):
            allowed.add(("https", entry.lower(), 443))
        else:
            problems.append(f"allowed_hosts: expected {either}, found {entry!r}")
    absolute_test = bool(test_url) and "://" in str(test_url)
    if absolute_test and not _url_problem(problems, "test_endpoint", str(test_url), _HTTP_URL):
        scheme, host, port = _origin(str(test_url))
        if (scheme, host, port) not in allowed:
            problems.append(
                f"test_endpoint: expected a path or a URL on the origin of host ({origin_text(base_url)}) or "
                f"of allowed_hosts; found a URL on {scheme}://{host}:{port}, which would receive the token"
            )
    return frozenset(allowed), problems


# ---------------------------------------------------------------------------------------------------
# Phase 6: the token request


def basic_authorization(
    checked: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[str | None, list[str]]:
    """`access_auth` basic: the token request's `Authorization: Basic base64(login:password)` value
    (RFC 7617, UTF-8), from the values of `{login}` and `{password}`; None for `body`."""
    if checked["access_auth"] != "basic":
        return None, []
    login, password = values.get("login"), values.get("password") or ""
    if not login:
        return None, ["access_auth: basic sends login:password in an Authorization header; set login"]
    if ":" in login:
        return None, [
            "access_auth: basic cannot send a login that contains ':' (RFC 7617); found one that does"
        ]
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii"), []


def build_token_request(
    checked: Mapping[str, Any],
    rendered: RenderedInputs,
    secrets: Sequence[str] = (),
    authorization: str | None = None,
) -> tuple[HttpRequest, list[str]]:
    """The token request: the verb, the rendered endpoint, parameters as query (GET), form or JSON
    body (POST), headers (`authorization` as the Authorization header: `basic_authorization`), timeout
    and TLS verification. Parameter and header values must be text."""
    problems: list[str] = []
    verb = checked["access_verb"] or ""
    body = checked["access_body"]
    headers: tuple[tuple[str, str], ...] = ()
    if rendered.access_headers is not None:
        headers = tuple(_str_map("access_headers", rendered.access_headers, problems).items())
    if authorization is not None:
        if any(name.lower() == "authorization" for name, _ in headers):
            problems.append(
                "access_auth: basic sets the Authorization header of the token request, which "
                "access_headers sets too; remove it from access_headers"
            )
        headers = (*headers, ("Authorization", authorization))
    json_body = verb != "GET" and body == "json"
    flat_params: tuple[tuple[str, str], ...] = ()
    if rendered.access_parameters is not None and not json_body:
        flat_params = tuple(_str_map("access_parameters", rendered.access_parameters, problems).items())
    request = HttpRequest(
        method=verb,
        url=rendered.token_url or "",
        params=flat_params if verb == "GET" else (),
        headers=headers,
        form=None if verb == "GET" or json_body else flat_params,
        json=rendered.access_parameters if json_body else None,
        timeout=checked["timeout"],
        verify=bool(checked["verify"]),
        redact=tuple(s for s in secrets if s),
    )
    return request, problems


# ---------------------------------------------------------------------------------------------------
# All phases


def build_account(
    chain: list[RawConnection],
    task_parameters: Mapping[str, Any] | None = None,
    *,
    redirect_uris: Mapping[str, str] = REDIRECT_URIS,
    default_timeout: float | None = None,
) -> ConnectedAccount:
    """Run every phase on the chain (account first); raise one `ConfigurationError` listing every
    problem, or return the connected account."""
    merged, problems = merge_chain(chain)
    checked, found = check_fields(
        merged, choices={"realm": tuple(redirect_uris)}, defaults={"timeout": default_timeout}
    )
    problems += found
    problems += check_token_location(checked)
    problems += check_transport(checked)
    values, found = collect_values(merged, checked, task_parameters, redirect_uris)
    problems += found
    outputs, found = check_outputs(checked, values)
    problems += found
    rendered, found = render_inputs(merged, checked, values, [name for name, _ in outputs])
    problems += found
    allowed, found = allowed_origins(rendered.base_url, checked["allowed_hosts"], rendered.test_url)
    problems += found
    secrets = secret_values(values)
    secrets += [s for s in proxy_secrets(checked["proxies"]) if s not in secrets]
    authorization, found = basic_authorization(checked, values)
    problems += found
    if authorization is not None:  # the client's credentials, encoded: as secret as the password
        secrets += [authorization, authorization.removeprefix("Basic ")]
    token_request, found = build_token_request(checked, rendered, secrets, authorization)
    problems += found
    if problems:  # a problem quotes values that can hold no secret; a secret is masked anyway
        from airflow_custom_token.redaction import redact_string

        raise ConfigurationError(merged.conn_id, [redact_string(p, secrets) for p in problems])

    assert rendered.base_url is not None and rendered.inject_name is not None
    return ConnectedAccount(
        conn_id=merged.conn_id,
        integration_name=checked["integration_name"] or merged.conn_id,
        integration_key=str(checked["integration_key"]),
        base_url=rendered.base_url,
        token_request=token_request,
        response_path=str(checked["access_response_path"]),
        expiry_path=str(checked["access_expiry_path"]),
        default_lifetime=int(checked["access_lifetime"]),
        inject_as=checked["inject_as"],
        inject_name=rendered.inject_name,
        inject_segments=tuple(s or "" for s in rendered.inject_segments),
        request_headers=rendered.request_headers,
        request_query=rendered.request_query,
        refresh_on=frozenset(checked["refresh_on"]),
        test_endpoint=checked["test_endpoint"],
        timeout=checked["timeout"],
        verify=bool(checked["verify"]),
        allowed_origins=allowed,
        values=values,
        secrets=tuple(secrets),
        outputs=outputs,
        inject_slots=rendered.inject_slots,
        token_headers=rendered.token_headers,
        token_query=rendered.token_query,
        request_retries=int(checked["request_retries"]),
        transport=Transport(
            verify=bool(checked["verify"]),
            ca_bundle=checked["ca_bundle"] or None,
            client_cert=checked["client_cert"] or None,
            client_key=checked["client_key"] or None,
            proxies=tuple((str(k), str(v).strip()) for k, v in (checked["proxies"] or {}).items()),
        ),
    )
