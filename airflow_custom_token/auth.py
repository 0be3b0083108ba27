"""`CustomTokenAuth`: a `requests` auth object that fetches, caches, injects and refreshes the token.

What to inject, when to refresh and what a redirect may carry are decided by the request rules
(`rules.request_rules`); they are carried over requests in two ways:

- `session.AccountSession` (the session of `CustomTokenHook.get_conn()` and `run`) sends every hop
  itself with `rules.drive`: the first request, a retry with a fresh token, an API retry, each
  redirect. requests follows no redirect of its own there.
- On a session of your own (`session.auth = CustomTokenAuth(...)`), requests sends the request and
  follows redirects itself; `CustomTokenAuth.__call__` injects the token and registers
  `requests_adapter.RequestsHook`, a small adapter that hands each answer to the rules (sending a
  retry they ask for on the same connection) and prepares each redirect requests is about to follow
  as the rules say.

Usable without an Airflow deployment (`CustomTokenAuth.from_values`: no configuration, connections or
database); the package itself depends on Airflow.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import Mapping
from typing import Any, Literal

import requests
import urllib3

from airflow_custom_token import connections, redaction, rules
from airflow_custom_token.account import ConnectedAccount, RawConnection
from airflow_custom_token.bounded import BoundedBody
from airflow_custom_token.requests_adapter import (
    DRAIN_BYTES,
    DRAIN_SECONDS,
    RequestsHook,
    RulesAuth,
    refresh_note,
)
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import NOT_RESENT, ApiRequest
from airflow_custom_token.session import AccountSession, authenticated_session
from airflow_custom_token.settings import Settings, load_settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.tls import requests_options, tls_hint
from airflow_custom_token.token import Token, TokenLimits
from airflow_custom_token.wire import CHUNK_BYTES, HttpRequest, HttpResponse, transport_error

__all__ = [
    "DRAIN_BYTES",
    "DRAIN_SECONDS",
    "NOT_RESENT",
    "AccountSession",
    "CustomTokenAuth",
    "RequestsHook",
    "authenticated_session",
    "refresh_note",
    "send_with_requests",
]


def send_with_requests(
    session: requests.Session,
    secrets: tuple[str, ...] = (),
    limits: TokenLimits | None = None,
    account: ConnectedAccount | None = None,
) -> Any:
    """A `send` for `TokenSource`: carries a token request over `session` (never following a redirect).

    The answer is read as `bounded.BoundedBody` says (bounded size, one deadline for the whole request),
    with `read1`: it returns what has arrived (decompressed), so that a trickling server meets the deadline.
    With `account`, its transport settings apply (client certificate, CA bundle, proxies).
    """

    options: dict[str, Any] | None = None

    def send(request: HttpRequest) -> HttpResponse:
        nonlocal options
        if options is None:
            options = {"verify": request.verify} if account is None else requests_options(account)
        redaction.remember(*secrets)  # before urllib3 logs the URL: a GET's client secret is in it
        bounded = BoundedBody(request, limits, secrets)
        try:
            response = session.request(
                request.method,
                request.url,
                params=list(request.params) or None,
                headers=dict(request.headers),
                data=list(request.form) if request.form is not None else None,
                json=request.json,
                timeout=request.timeout,
                verify=options["verify"] if request.verify else False,
                cert=options.get("cert"),
                proxies=options.get("proxies") or None,
                allow_redirects=False,  # the request carries the client's credentials
                stream=True,
            )
            with response:  # an answer not read to its end closes its connection
                chunks = iter(lambda: response.raw.read1(CHUNK_BYTES, decode_content=True), b"")
                body = bounded.read(response.status_code, chunks)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            hint = "" if account is None else tls_hint(account.transport, request.url, exc)
            raise transport_error(request, exc, secrets, hint) from None
        return HttpResponse(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=body,
            cookies=response.cookies.get_dict(),
            reason=response.reason or "",
        )

    return send


def token_session() -> requests.Session:
    """A session for token requests that keeps no cookie: a token request (and a login step) sends only
    the cookies its login received (`airflow_custom_token.login`), never one left by an earlier answer,
    as the async client (`aiohttp.DummyCookieJar`) does."""
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


class CustomTokenAuth(RulesAuth):
    """Authenticates every request on the account's origin with the account's current token.

    :param source: where the account's tokens come from (caches, else a token request).
    :param token_session: the session token requests go over (default: one of its own, on first use).
    :param retry: the API retry policy (idempotent requests, on transport errors and 429/502/503/504);
        by default the connection's (`request_retries`, with `[custom_token]`'s waits: `rules.api_policy`);
        None: API requests are not retried (token requests have their own policy, in `source`).

    Errors: what fails in this auth (a token request, a retry it sends) is raised with every secret
    masked. On a plain `requests.Session`, though, a request that gets no answer at all (connection
    refused, timeout) fails inside requests before any auth or hook runs, and requests' message quotes
    the URL: with inject_as=url, the token in its query (URL-encoded). No auth object can reach that
    error. Every form of the token is registered with Airflow's secrets masker (task logs mask it) and
    `redaction.redact_string(str(error))` masks it in your own code; `authenticated_session(auth)`
    (the session of `CustomTokenHook.get_conn()`) raises those errors masked too.
    """

    def __init__(
        self,
        source: TokenSource,
        token_session: requests.Session | None = None,
        *,
        retry: RetryPolicy | Literal["connection"] | None = "connection",
    ) -> None:
        self.source = source
        self.account: ConnectedAccount = source.account
        self.retry = rules.api_policy(self.account, source.settings.retry) if retry == "connection" else retry
        self._token_session = token_session
        self._send: Any = None
        self._pinned: Token | None = None

    @classmethod
    def from_values(
        cls,
        host: str,
        extra: Mapping[str, Any],
        *,
        login: str | None = None,
        password: str | None = None,
        integration_parameters: Mapping[str, Any] | None = None,
        name: str = "custom_token",
        settings: Settings | None = None,
    ) -> CustomTokenAuth:
        """Build from plain values, as a connection would hold them (no Airflow connection needed).

        Without `settings`, tokens stay in the process cache: the host and shared caches need Airflow's
        Fernet key and configuration, which plain values do not bring.
        """
        raw = RawConnection(name, "custom_token", host=host, login=login, password=password, extra=extra)
        settings = settings or Settings(host_cache=False)
        account = connections.build([raw], integration_parameters, settings)
        redaction.register(*account.secrets)  # the password and secret-named parameters
        return cls(TokenSource(account, settings))

    @classmethod
    def from_airflow(
        cls, conn_id: str, integration_parameters: Mapping[str, Any] | None = None
    ) -> CustomTokenAuth:
        """Build from an Airflow connection (and its integration), with `[custom_token]`'s settings."""
        settings = load_settings()
        return cls(TokenSource(connections.account(conn_id, integration_parameters, settings), settings))

    def __repr__(self) -> str:
        return f"<CustomTokenAuth {self.account.describe()}>"

    def pinned(self, token: Token) -> CustomTokenAuth:
        """This auth sending `token` itself, never refreshed nor discarded: to check a token just fetched."""
        auth = CustomTokenAuth(self.source, self._token_session, retry=self.retry)
        auth._send = self._send
        auth._pinned = token
        return auth

    # -- tokens (`rules.Tokens`) -----------------------------------------------------------------
    def get_token(self) -> Token:
        return self.source.get(self.send_token_request)

    def send_token_request(self, request: HttpRequest) -> HttpResponse:
        """Carry a token request over this auth's own session (created on first use)."""
        if self._send is None:
            if self._token_session is None:
                self._token_session = token_session()
            self._send = send_with_requests(
                self._token_session, self.account.secrets, self.source.limits, self.account
            )
        response: HttpResponse = self._send(request)
        return response

    def current(self) -> Token:
        """The token the rules ask for: the pinned one, else the account's current token."""
        return self._pinned if self._pinned is not None else self.get_token()

    def discard(self, token: Token) -> None:
        if self._pinned is None:
            self.source.discard(token)

    def request_rules(
        self, request: ApiRequest, *, follow_redirects: bool = True, max_redirects: int = 30
    ) -> rules.Rules:
        """The request rules for one request of this auth."""
        return rules.request_rules(
            self.account,
            request,
            retry=self.retry,
            refresh=self._pinned is None,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
        )

    # -- requests' auth protocol (a session of your own) ----------------------------------------
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if not rules.concerns(self.account, r.url or ""):
            return r  # another origin: left untouched, redirects included
        hook = RequestsHook.of(r)
        if hook is None or hook.auth is not self:
            hook = RequestsHook(self, r)
            r.register_hook("response", hook)  # type: ignore[no-untyped-call]
        hook.inject(r)
        return r
