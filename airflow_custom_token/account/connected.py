"""The connected account: every input resolved, ready to fetch and inject a token."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from airflow_custom_token import templating
from airflow_custom_token.account.refresh import RefreshSpec
from airflow_custom_token.account.steps import LoginStep
from airflow_custom_token.account.urls import HTTP_URL, origin_of, origin_text, url_problem
from airflow_custom_token.assertion import AssertionSpec, sign
from airflow_custom_token.errors import (
    ConfigurationError,
    PlaceholderError,
    TokenResponseError,
)
from airflow_custom_token.wire import HttpRequest


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
    timeout: float | None  # the connection's own; token requests: else token_request_timeout
    api_timeout: float  # API requests: the connection's timeout, else api_request_timeout
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
    refresh: RefreshSpec | None = None  # renewal with a refresh token (`refresh_path`)
    assertion: AssertionSpec | None = field(default=None, repr=False)  # `{assertion}`: a JWT per request
    steps: tuple[LoginStep, ...] = field(
        default=(), repr=False
    )  # `access_steps`: sent before the token request

    @property
    def cache_key(self) -> str:
        """Integration key plus a digest of everything that decides which token is read: the fully
        resolved token request, the token location, the outputs read with it, the expiry location and
        the default lifetime. Two accounts that differ in any of them never share a cache entry.

        The digest covers the client's secret: it is never stored as is. The caches name their entries
        by a keyed hash of it (`airflow_custom_token.cache.names`)."""
        reading = [
            self.token_request.fingerprint(),
            self.response_path,
            [list(output) for output in self.outputs],
            self.expiry_path,
            self.default_lifetime,
        ]
        if self.refresh is not None:  # accounts without refresh tokens keep their 0.3 keys
            reading.append(self.refresh.fingerprint())
        if self.assertion is not None:  # whom the assertion names, not the assertion of the moment
            reading.append(self.assertion.fingerprint())
        if self.steps:  # the login that precedes the token request
            reading.append([step.fingerprint() for step in self.steps])
        digest = hashlib.sha256(json.dumps(["cache key 2", *reading]).encode()).hexdigest()
        return f"{self.integration_key}-{digest[:40]}"

    def late_values(self, now: float) -> dict[str, str]:
        """Values of the token request's late placeholders for a request sent at `now` (epoch
        seconds): a freshly signed `{assertion}` when the account has one."""
        return {} if self.assertion is None else {"assertion": sign(self.assertion, now)}

    def has_outputs(self, outputs: Mapping[str, str]) -> bool:
        """Does a token read with `outputs` carry every output this account reads (its login's too)?"""
        return all(name in outputs for name in self.output_names)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the outputs a token carries: `access_outputs`, then the login steps'."""
        return (*(name for name, _ in self.outputs), *(n for step in self.steps for n, _ in step.outputs))

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
        return origin_of(url) in self.allowed_origins

    def request_url(self, endpoint: str, extra_values: Mapping[str, str] | None = None) -> str:
        """Absolute URL of an API endpoint: `host` + endpoint, or an absolute URL on an allowed origin."""
        values = {**self.values, **(extra_values or {})}
        url = templating.render_url(endpoint or "", values, "endpoint")
        if "://" not in url:
            return self.base_url + ("" if not url or url.startswith("/") else "/") + url
        problems: list[str] = []
        if not url_problem(problems, "endpoint", url, HTTP_URL) and not self.is_allowed(url):
            scheme, host, port = origin_of(url)
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
            rendered_headers = templating.render_headers(dict(headers or {}), self.values, "headers")
            rendered_params = templating.render_object(dict(params or {}), self.values, "query_params")
        except PlaceholderError as exc:
            raise ConfigurationError(self.conn_id, [str(exc)]) from None
        return url, rendered_headers, rendered_params

    def describe(self) -> str:
        return f"{self.integration_name} ({self.conn_id})"
