"""The integration and its connected account: validated, immutable, built from connections. No I/O.

`load_chain` walks `integration_conn_id` inheritance as a generator (it yields the conn ids it needs and
receives their fields), so the sync hook and the async trigger share it. `build_account` merges the chain,
validates every field, resolves the placeholders and returns a `ConnectedAccount`, or raises one
`ConfigurationError` that lists every problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from airflow_custom_token import templating
from airflow_custom_token.errors import ConfigurationError, PlaceholderError

CONN_TYPE = "custom_token"
LEGACY_PREFIX = f"extra__{CONN_TYPE}__"

DEFAULT_REDIRECT_URIS: Mapping[str, str] = {
    "us": "https://us.api.prod.airkit.com/internal/sessions/v1/auth/callback",
    "eu": "https://eu.api.prod.airkit.com/internal/sessions/v1/auth/callback",
    "ap": "https://ap.api.prod.airkit.com/internal/sessions/v1/auth/callback",
}

# Extra keys of the connection contract: key -> (kind, default). `None` default: no default.
EXTRA_FIELDS: Mapping[str, tuple[str, Any]] = {
    "integration_name": ("str", None),
    "integration_key": ("str", None),
    "integration_parameters": ("object", None),
    "integration_conn_id": ("str", None),
    "access_endpoint": ("str", None),
    "access_verb": ("str", None),
    "access_parameters": ("object", None),
    "access_body": ("str", "form"),
    "access_headers": ("object", None),
    "access_response_path": ("str", "access_token"),
    "access_expiry_path": ("str", "expires_in"),
    "access_lifetime": ("int", 3600),
    "inject_as": ("str", None),
    "inject_name": ("str", None),
    "inject_template": ("str", None),
    "request_parameters": ("object", None),
    "realm": ("str", "us"),
    "refresh_on": ("list", [401]),
    "test_endpoint": ("str", None),
    "timeout": ("number", None),
    "verify": ("bool", True),
    "allowed_hosts": ("list", None),
}
# What the UI form pre-fills. An account's value equal to one of these does not override a value
# inherited from its integration: a form-saved account always holds them, chosen or not.
FORM_DEFAULTS: Mapping[str, Any] = {
    "access_verb": "POST",
    "access_body": "form",
    "access_response_path": "access_token",
    "access_expiry_path": "expires_in",
    "access_lifetime": 3600,
    "inject_as": "header",
    "inject_name": "Authorization",
    "inject_template": "Bearer {token}",
    "realm": "us",
    "refresh_on": [401],
    "verify": True,
}
REQUIRED = (
    "integration_key",
    "access_endpoint",
    "access_verb",
    "inject_as",
    "inject_name",
    "inject_template",
)
BUILT_INS = ("login", "password", "redirectUri")
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
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


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

    @property
    def cache_key(self) -> str:
        """Integration key plus a digest of the fully resolved token request."""
        return f"{self.integration_key}-{self.token_request.fingerprint()[:40]}"

    def injection_value(self, token: str) -> str:
        """The rendered value that carries the token, e.g. `Bearer <token>`."""
        return token.join(self.inject_segments)

    def credentials(self, token: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Headers and query parameters an API request carries: request parameters plus the token."""
        headers = list(self.request_headers)
        query = list(self.request_query)
        target = headers if self.inject_as == "header" else query
        target.append((self.inject_name, self.injection_value(token)))
        return headers, query

    @property
    def added_names(self) -> tuple[set[str], set[str]]:
        """Names of the headers and query parameters `credentials` adds (to strip them on redirect)."""
        headers = {n for n, _ in self.request_headers}
        query = {n for n, _ in self.request_query}
        (headers if self.inject_as == "header" else query).add(self.inject_name)
        return headers, query

    def with_query_credentials(self, url: str, token: str) -> str:
        """`url` carrying the query parameters `credentials` adds, once (for a redirect on the origin)."""
        parts = urlsplit(self.without_added_params(url))
        pairs = [*parse_qsl(parts.query, keep_blank_values=True), *self.credentials(token)[1]]
        return urlunsplit(parts._replace(query=urlencode(pairs)))

    def without_added_params(self, url: str) -> str:
        """`url` without the query parameters `credentials` adds (for a redirect off the origin)."""
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
            url = self.base_url + ("" if not url or url.startswith("/") else "/") + url
        elif not self.is_allowed(url):
            scheme, host, port = _origin(url)
            raise ConfigurationError(
                self.conn_id,
                [
                    f"endpoint: expected a path or a URL on the origin of host ({self.base_url}) or of "
                    f"allowed_hosts; found a URL on {scheme}://{host}:{port}, which would receive the token"
                ],
            )
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
# Merging and validating


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
    return {k: v for k, v in out.items() if v not in (None, "", {}) and (v != [] or k == "refresh_on")}


def _coerce(key: str, kind: str, value: Any, problems: list[str]) -> Any:
    """Turn a stored value into its type; on failure, note a problem naming the key and return None."""
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
    except (TypeError, ValueError):
        problems.append(f"{key}: expected a number, found {found}")
        return None
    if kind == "int":
        if number != int(number):
            problems.append(f"{key}: expected a whole number of seconds, found {number}")
            return None
        return int(number)
    return number


def _merge(chain: list[RawConnection], problems: list[str]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Merge the chain, integration first, account last; integration_parameters merge key by key."""
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    std: dict[str, str | None] = {"host": None, "login": None, "password": None}
    for raw in reversed(chain):
        if raw.extra_error:
            problems.append(raw.extra_error if raw is chain[0] else f"{raw.extra_error} (in {raw.conn_id!r})")
        extra = normalize_extra(raw.extra)
        for key, value in extra.items():
            if key not in EXTRA_FIELDS:
                continue
            kind, _ = EXTRA_FIELDS[key]
            coerced = _coerce(key, kind, value, problems)
            if coerced is None:
                continue
            if key == "integration_parameters":
                params.update(coerced)
            elif not (key in fields and key in FORM_DEFAULTS and coerced == FORM_DEFAULTS[key]):
                fields[key] = coerced
        for name in std:
            value = getattr(raw, name)
            if value not in (None, ""):
                std[name] = value
    fields["integration_parameters"] = params
    return fields, std


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


def build_account(
    chain: list[RawConnection],
    task_parameters: Mapping[str, Any] | None = None,
    *,
    redirect_uris: Mapping[str, str] = DEFAULT_REDIRECT_URIS,
    default_timeout: float | None = None,
) -> ConnectedAccount:
    """Validate the merged chain and resolve every placeholder. Raises one `ConfigurationError`."""
    conn_id = chain[0].conn_id
    problems: list[str] = []
    fields, std = _merge(chain, problems)

    def get(key: str) -> Any:
        value = fields.get(key)
        return EXTRA_FIELDS[key][1] if value is None else value

    for key in REQUIRED:
        if fields.get(key) in (None, ""):
            problems.append(f"{key}: required field is missing (set it on {conn_id!r} or on its integration)")
    if not std["host"]:
        problems.append(
            "host: required field is missing: the base URL of the API, e.g. https://api.example.com"
        )

    integration_key = fields.get("integration_key")
    if integration_key and not re.fullmatch(r"[A-Za-z0-9]+", integration_key):
        problems.append(f"integration_key: expected letters and digits only, found {integration_key!r}")
    verb = str(get("access_verb") or "").upper()
    if fields.get("access_verb") and verb not in ("GET", "POST"):
        problems.append(f"access_verb: expected GET or POST, found {fields['access_verb']!r}")
    body = str(get("access_body")).lower()
    if body not in ("form", "json"):
        problems.append(f"access_body: expected form or json, found {fields['access_body']!r}")
    inject_as = str(get("inject_as") or "").lower()
    if fields.get("inject_as") and inject_as not in ("header", "url"):
        problems.append(f"inject_as: expected header or url, found {fields['inject_as']!r}")
    template = fields.get("inject_template") or ""
    if fields.get("inject_template") and "{token}" not in template:
        problems.append(f"inject_template: expected a template containing {{token}}, found {template!r}")
    realm = str(get("realm")).lower()
    if realm not in redirect_uris:
        problems.append(f"realm: expected one of {', '.join(redirect_uris)}, found {fields['realm']!r}")
    lifetime = get("access_lifetime")
    if lifetime is not None and lifetime <= 0:
        problems.append(f"access_lifetime: expected a positive number of seconds, found {lifetime}")
    timeout = fields.get("timeout", default_timeout)
    if timeout is not None and timeout <= 0:
        problems.append(f"timeout: expected a positive number of seconds, found {timeout}")
    refresh_on: list[int] = []
    for status in get("refresh_on"):
        if (
            isinstance(status, bool)
            or not isinstance(status, int | str)
            or not str(status).isdigit()
            or not (100 <= int(status) <= 599)
        ):
            problems.append(f"refresh_on: expected HTTP status codes (100-599), found {status!r}")
        else:
            refresh_on.append(int(status))
    response_path = str(get("access_response_path"))
    if response_path.startswith(("header:", "cookie:")) and not response_path.split(":", 1)[1].strip():
        problems.append(f"access_response_path: expected a name after {response_path!r}, found none")

    request_parameters = get("request_parameters") or {}
    unknown_parts = sorted(set(request_parameters) - {"header", "url"})
    if unknown_parts:
        problems.append(
            f"request_parameters: expected an object with keys 'header' and/or 'url', found {unknown_parts}"
        )

    # Placeholder values, lowest precedence first.
    values: dict[str, str] = {"redirectUri": redirect_uris.get(realm, "")}
    if std["login"] is not None:
        values["login"] = std["login"]
    if std["password"] is not None:
        values["password"] = std["password"]
    params = {**fields["integration_parameters"], **dict(task_parameters or {})}
    values.update(_str_map("integration_parameters", params, problems))

    def render(name: str, fn: Callable[[Any, Mapping[str, str], str], Any], value: Any) -> Any:
        try:
            return fn(value, values, name)
        except PlaceholderError as exc:
            problems.append(str(exc))
            return None

    base_url = render("host", templating.render_url, (std["host"] or "").rstrip("/"))
    if base_url and (urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname):
        problems.append(
            f"host: expected a base URL with scheme, e.g. https://api.example.com; found {base_url!r}"
        )
    endpoint = render("access_endpoint", templating.render_url, fields.get("access_endpoint") or "")
    if endpoint and "://" not in endpoint and base_url:
        endpoint = base_url + ("" if endpoint.startswith("/") else "/") + endpoint
    elif endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        problems.append(
            f"access_endpoint: expected an http(s) URL, found scheme {urlsplit(endpoint).scheme!r}"
        )
    access_params = render("access_parameters", templating.render_object, get("access_parameters") or {})
    access_headers = render("access_headers", templating.render_object, get("access_headers") or {})
    inject_name = render("inject_name", templating.render_text, fields.get("inject_name") or "")
    segments = [render("inject_template", templating.render_text, s) for s in template.split("{token}")]
    req_headers = render(
        "request_parameters", templating.render_object, request_parameters.get("header") or {}
    )
    req_query = render("request_parameters", templating.render_object, request_parameters.get("url") or {})
    test_endpoint = fields.get("test_endpoint")
    if test_endpoint:
        missing = templating.missing_placeholders(test_endpoint, values)
        if missing:
            problems.append(f"test_endpoint: placeholder {{{missing[0]}}} has no value")

    allowed = {_origin(base_url)} if base_url else set()
    for entry in get("allowed_hosts") or []:
        if not isinstance(entry, str) or not entry.strip():
            problems.append(f"allowed_hosts: expected host names or origins, found {entry!r}")
            continue
        entry = entry.strip()
        if "://" in entry:
            allowed.add(_origin(entry))
        elif templating.HOST_NAME.fullmatch(entry):
            allowed.add(("https", entry.lower(), 443))
        else:
            problems.append(
                f"allowed_hosts: expected a host name (meaning https) or an origin like https://host:port, "
                f"found {entry!r}"
            )

    if test_endpoint and base_url and not templating.missing_placeholders(test_endpoint, values):
        test_url = render("test_endpoint", templating.render_url, test_endpoint) or ""
        if "://" in test_url and _origin(test_url) not in allowed:
            scheme, host, port = _origin(test_url)
            problems.append(
                f"test_endpoint: expected a path or a URL on the origin of host ({base_url}) or of "
                f"allowed_hosts; found a URL on {scheme}://{host}:{port}, which would receive the token"
            )

    # Values that must be text: checked now, so that they are listed with every other problem.
    headers: tuple[tuple[str, str], ...] = ()
    if access_headers is not None:
        headers = tuple(_str_map("access_headers", access_headers, problems).items())
    flat_params: tuple[tuple[str, str], ...] = ()
    if access_params is not None and not (verb != "GET" and body == "json"):
        flat_params = tuple(_str_map("access_parameters", access_params, problems).items())
    header_map = {} if req_headers is None else _str_map("request_parameters.header", req_headers, problems)
    query_map = {} if req_query is None else _str_map("request_parameters.url", req_query, problems)
    if problems:
        raise ConfigurationError(conn_id, problems)

    assert base_url is not None and access_params is not None and access_headers is not None
    form: tuple[tuple[str, str], ...] | None = None
    json_body: Any = None
    query: tuple[tuple[str, str], ...] = ()
    if verb == "GET":
        query = flat_params
    elif body == "json":
        json_body = access_params
    else:
        form = flat_params

    secrets = [values["password"]] if values.get("password") else []
    secrets += [v for k, v in values.items() if is_secret_name(k) and k != "redirectUri" and v]
    return ConnectedAccount(
        conn_id=conn_id,
        integration_name=fields.get("integration_name") or conn_id,
        integration_key=str(integration_key),
        base_url=base_url,
        token_request=HttpRequest(
            method=verb,
            url=endpoint,
            params=query,
            headers=headers,
            form=form,
            json=json_body,
            timeout=timeout,
            verify=bool(get("verify")),
            redact=tuple(s for s in secrets if s),
        ),
        response_path=response_path,
        expiry_path=str(get("access_expiry_path")),
        default_lifetime=int(lifetime),
        inject_as=inject_as,
        inject_name=inject_name,
        inject_segments=tuple(segments),
        request_headers=tuple(header_map.items()),
        request_query=tuple(query_map.items()),
        refresh_on=frozenset(refresh_on),
        test_endpoint=test_endpoint,
        timeout=timeout,
        verify=bool(get("verify")),
        allowed_origins=frozenset(allowed),
        values=values,
        secrets=tuple(dict.fromkeys(s for s in secrets if len(s) >= 1)),
    )
