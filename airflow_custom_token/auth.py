"""`CustomTokenAuth`: a `requests` auth object that fetches, caches, injects and refreshes the token.

What to inject, when to refresh and what a redirect may carry are decided by the request rules
(`rules.request_rules`); this module carries them over requests, in two ways:

- `AccountSession` (the session of `CustomTokenHook.get_conn()` and `run`) sends every hop itself with
  `rules.drive`: the first request, a retry with a fresh token, an API retry, each redirect. requests
  follows no redirect of its own there.
- On a session of your own (`session.auth = CustomTokenAuth(...)`), requests sends the request and
  follows redirects itself; `CustomTokenAuth.__call__` injects the token and registers `RequestsHook`,
  a small adapter that hands each answer to the rules (sending a retry they ask for on the same
  connection) and prepares each redirect requests is about to follow as the rules say.

Usable without an Airflow deployment (`CustomTokenAuth.from_values`: no configuration, connections or
database); the package itself depends on Airflow.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal, NoReturn

import requests
import urllib3
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar, merge_cookies
from requests.hooks import dispatch_hook
from requests.structures import CaseInsensitiveDict

from airflow_custom_token import connections, redaction, rules
from airflow_custom_token.account import ConnectedAccount, RawConnection
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import NOT_RESENT, ApiRequest, Head, Result
from airflow_custom_token.settings import Settings, load_settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.tls import requests_options, tls_hint
from airflow_custom_token.token import BoundedBody, Token, TokenLimits
from airflow_custom_token.wire import CHUNK_BYTES, HttpRequest, HttpResponse, transport_error

__all__ = [
    "NOT_RESENT",
    "AccountSession",
    "CustomTokenAuth",
    "RequestsHook",
    "authenticated_session",
    "refresh_note",
    "send_with_requests",
]

# What requests raises when a request got no answer: what the rules may retry.
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout)

# Why a `refresh_on` answer was not retried with a new token, by answer (see `refresh_note`).
_NOTES: weakref.WeakKeyDictionary[requests.Response, str] = weakref.WeakKeyDictionary()


def send_with_requests(
    session: requests.Session,
    secrets: tuple[str, ...] = (),
    limits: TokenLimits | None = None,
    account: ConnectedAccount | None = None,
) -> Any:
    """A `send` for `TokenSource`: carries a token request over `session` (never following a redirect).

    The answer is read as `flow.BoundedBody` says (bounded size, one deadline for the whole request),
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


class CustomTokenAuth(AuthBase):
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
                self._token_session = requests.Session()
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


def as_api_request(r: requests.PreparedRequest) -> ApiRequest:
    """What the rules see of a prepared request (its body stays requests')."""
    body = r.body
    return ApiRequest(
        method=(r.method or "GET").upper(),
        url=r.url or "",
        headers=tuple((_text(k), _text(v)) for k, v in r.headers.items()),
        body=body,
        replayable=body is None or isinstance(body, bytes | str),
    )


def _text(value: str | bytes) -> str:
    """A header name or value as text (http.client sends text as latin-1: this round-trips bytes)."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def head_of(response: requests.Response) -> Head:
    """What the rules see of an answer (requests' headers are case-insensitive already)."""
    return Head(response.status_code, response.headers)


def apply(r: requests.PreparedRequest, request: ApiRequest) -> None:
    """Make `r` the request the rules yielded."""
    r.method = request.method
    r.url = request.url
    r.headers = CaseInsensitiveDict(dict(request.headers))
    r.body = request.body


def _carry_cookies(
    r: requests.PreparedRequest, answered: requests.Response, jar: Any = None, *, renew: bool = False
) -> None:
    """Give `r` the cookies that `answered` set (and those of `jar`), as requests does between hops.

    `renew`: `r` goes elsewhere (a redirect), so its Cookie header is made anew from the jar, as requests
    does; otherwise (the same request again) a Cookie header it has is kept: the rules may have set it.
    """
    cookies = getattr(r, "_cookies", None)
    if cookies is None or answered.raw is None or answered.request is None:
        return
    if renew:
        r.headers.pop("Cookie", None)
    extract_cookies_to_jar(cookies, answered.request, answered.raw)  # type: ignore[no-untyped-call]
    if jar is not None:
        merge_cookies(cookies, jar)  # type: ignore[no-untyped-call]
    r.prepare_cookies(cookies)


class RequestsHook:
    """The adapter for a session of your own: the response hook of one request `CustomTokenAuth` prepared.

    requests sends the request and calls this hook with each answer, the first and that of each
    redirect it follows. The hook runs the rules for that hop with `rules.drive`, the hop's answer
    standing for the first `Send`: a retry the rules ask for (a fresh token, an API retry) is sent on
    the same connection; a redirect is left to requests, once the hook has set the request requests
    copies for it (headers, and the Location the rules chose).
    """

    def __init__(self, auth: CustomTokenAuth, prepared: requests.PreparedRequest) -> None:
        self.auth = auth
        self.base = as_api_request(prepared)  # as the caller prepared it: without credentials
        self.note: str | None = None
        # the token and the request it was injected into, for the next answer to come
        self._injected: tuple[Token, ApiRequest] | None = None

    def __repr__(self) -> str:
        return f"<RequestsHook {self.base!r}>"

    @classmethod
    def of(cls, request: requests.PreparedRequest) -> RequestsHook | None:
        """The hook registered on `request`, if `CustomTokenAuth` prepared it."""
        hooks = request.hooks.get("response", []) if request.hooks else []
        return next((hook for hook in hooks if isinstance(hook, RequestsHook)), None)

    def inject(self, r: requests.PreparedRequest) -> None:
        """Give `r` the account's credentials (requests sends it next)."""
        token = self.auth.current()
        injected = rules.inject(self.auth.account, self.base, token)
        r.url = injected.url
        r.headers = CaseInsensitiveDict(dict(injected.headers))
        self._injected = (token, injected)

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        sent = response.request
        assert sent is not None
        account = self.auth.account
        injected, self._injected = self._injected, None
        base = rules.uninjected(account, as_api_request(sent))
        token = injected[0] if injected is not None else None
        if account.inject_as == "header" and rules.concerns(account, base.url):
            expected = injected[1].header(account.inject_name) if injected is not None else None
            if expected is None or sent.headers.get(account.inject_name) != expected:
                return response  # requests dropped the token on the way (Authorization, another host)
        answers: list[requests.Response] = []

        def send(request: ApiRequest) -> Head:
            if not answers:  # the first send: requests made it
                answers.append(response)
                return head_of(response)
            last = answers[-1]
            retry = sent.copy()
            apply(retry, request)
            release(last)  # before the retry: its body is nobody's
            _carry_cookies(retry, last)
            assert last.connection is not None
            answer: requests.Response = last.connection.send(retry, **kwargs)
            answer.history = [*last.history, last]
            answer.request = retry
            answers.append(answer)
            return head_of(answer)

        tokens = _FirstToken(self.auth, token)
        try:
            result = rules.drive(
                self.auth.request_rules(base, follow_redirects=False), send, tokens, TRANSPORT_ERRORS
            )
        except TRANSPORT_ERRORS as final:  # its message quotes the URL: the token, inject_as=url
            raise_redacted(final, account.secrets)
        final_answer = answers[-1]
        self.note = result.note
        if result.note:
            _NOTES[final_answer] = result.note
        if result.redirect is not None:
            self._prepare_hop(final_answer, result.redirect)
        return final_answer

    def _prepare_hop(self, response: requests.Response, hop: ApiRequest) -> None:
        """Set what requests copies for the redirect it follows next: the rules' headers and Location."""
        sent = response.request
        assert sent is not None
        if rules.concerns(self.auth.account, hop.url):
            token = self.auth.current()
            hop = rules.inject(self.auth.account, hop, token)
            self._injected = (token, hop)
        sent.headers = CaseInsensitiveDict(dict(hop.headers))
        response.headers["location"] = hop.url


class _FirstToken:
    """`rules.Tokens` that answers the first ask with the token already sent (by requests)."""

    def __init__(self, auth: CustomTokenAuth, first: Token | None) -> None:
        self.auth, self.first = auth, first

    def current(self) -> Token:
        first, self.first = self.first, None
        return first if first is not None else self.auth.current()

    def discard(self, token: Token) -> None:
        self.auth.discard(token)


#: What is read of an answer the rules replace with a retry (a 401 before the refresh), for its connection
#: to carry the retry; a longer body, or one slower than `DRAIN_SECONDS`, closes the connection instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0


def release(response: requests.Response) -> None:
    """Let go of an answer replaced by a retry: drain what is left of its body, bounded in size and time
    (`DRAIN_BYTES`, `DRAIN_SECONDS`), so that its connection goes back to the pool; past either bound, the
    connection is closed instead. A huge, endless or trickling body never holds the retry.

    A body read to its end stays the answer's `content` (the retry's `history` shows it, as before).
    """

    read1 = getattr(response.raw, "read1", None)  # urllib3's: reads what has arrived
    if read1 is not None:
        deadline = time.monotonic() + DRAIN_SECONDS
        chunks: list[bytes] = []
        drained = 0
        try:
            while drained <= DRAIN_BYTES and time.monotonic() < deadline:
                chunk = read1(min(CHUNK_BYTES, DRAIN_BYTES + 1 - drained), decode_content=True)
                if not chunk:  # the end: urllib3 has put the connection back in its pool
                    response._content = b"".join(chunks)  # type: ignore[attr-defined]
                    response._content_consumed = True  # type: ignore[attr-defined]
                    break
                chunks.append(chunk)
                drained += len(chunk)
        except (urllib3.exceptions.HTTPError, OSError):  # the connection is closed below
            pass
    response.close()  # unless read to its end, closes the connection


def redacted_error(
    exc: requests.RequestException, secrets: tuple[str, ...] = ()
) -> requests.RequestException:
    """`exc`, or a copy of its type whose message masks every known secret (and `secrets`), when it or an
    error it chains quotes one: urllib3 quotes the URL it could not reach, with inject_as=url the token.

    The copy keeps the answer (`response`), not the request, whose URL and headers carry the token.
    """
    pool = (*redaction.known(), *secrets)
    chained: BaseException | None = exc
    for _ in range(8):  # the errors its traceback shows: requests' wraps urllib3's, which wraps another
        if chained is None:
            return exc
        text = str(chained)
        if redaction.redact_string(text, pool) != text:
            break
        chained = chained.__cause__ or chained.__context__
    else:
        return exc
    message = redaction.redact_string(str(exc), pool)
    try:
        return type(exc)(message, response=exc.response)
    except TypeError:  # a subclass of its own making
        return requests.RequestException(message, response=exc.response)


def raise_redacted(exc: requests.RequestException, secrets: tuple[str, ...] = ()) -> NoReturn:
    """Raise `exc`, or its `redacted_error` copy without the errors it chains (they quote the secret)."""
    clean = redacted_error(exc, secrets)
    if clean is exc:
        raise exc
    raise clean from None


def refresh_note(response: requests.Response) -> str | None:
    """Why a `refresh_on` answer was not retried with a new token (e.g. `NOT_RESENT`), if it was not."""
    return _NOTES.get(response)


class AccountSession(requests.Session):
    """A session for one connected account: it sends every hop of a request itself, under the rules.

    Every request to the account's origins (unless it brings an `auth` of its own) goes through
    `rules.drive`: injected, retried with a fresh token on `refresh_on`, retried under the API retry
    policy, its redirects followed by the rules (so requests follows none). An error requests raises is
    raised with every secret masked.

    A default `requests.Session` re-reads proxy variables and `.netrc` on every request. Here the
    proxies of an origin (honouring NO_PROXY) are resolved the first time a request goes there, and
    `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` once; `.netrc` never applies, since the session's auth is
    the token.

    The connection's transport settings apply: `client_cert`/`client_key` (`cert`), `ca_bundle`
    (`verify`, over the environment's bundle), `proxies` (over the environment's, key by key; a
    request's own `proxies` over both). A request without a timeout of its own gets the account's
    (`ConnectedAccount.api_timeout`).
    """

    def __init__(self, auth: CustomTokenAuth) -> None:
        super().__init__()
        self.auth = auth
        self.trust_env = False
        self._proxies_by_origin: dict[str, dict[str, str]] = {}
        # the requests this session prepared for its auth, and each one as prepared (without credentials)
        self._ours: weakref.WeakKeyDictionary[
            requests.PreparedRequest, tuple[CustomTokenAuth, ApiRequest]
        ] = weakref.WeakKeyDictionary()
        account = auth.account
        options = requests_options(account)  # a missing certificate file: ConfigurationError, now
        self.verify = options["verify"]
        self.cert = options["cert"]
        self._connection_proxies: dict[str, str] = options["proxies"]
        if self.verify is True:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                self.verify = bundle

    def __repr__(self) -> str:
        return f"<AccountSession {self.auth!r}>"

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        auth = self.auth
        if request.auth is not None or not isinstance(auth, CustomTokenAuth):
            return super().prepare_request(request)
        request.auth = _no_auth  # the rules inject, when the session sends it
        try:
            prepared = super().prepare_request(request)
        finally:
            request.auth = None
        if rules.concerns(auth.account, prepared.url or ""):
            self._ours[prepared] = (auth, as_api_request(prepared))
        return prepared

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        auth, base = self._claim(request)
        if auth is None:
            try:
                return super().send(request, **kwargs)
            except requests.RequestException as exc:
                raise_redacted(exc)
        kwargs.setdefault("timeout", None)
        if kwargs["timeout"] is None:
            kwargs["timeout"] = auth.account.api_timeout
        follow = kwargs.pop("allow_redirects", True)
        for name in ("stream", "verify", "cert"):
            kwargs.setdefault(name, getattr(self, name))
        if "proxies" not in kwargs:
            kwargs["proxies"] = self.merge_environment_settings(request.url, {}, None, None, None)["proxies"]
        hops = _Hops(self, auth.account, request, kwargs)
        try:
            result = rules.drive(
                auth.request_rules(base, follow_redirects=follow, max_redirects=self.max_redirects),
                hops.send,
                auth,
                TRANSPORT_ERRORS,
            )
        except requests.RequestException as exc:  # urllib3 quotes the URL: the token, with inject_as=url
            raise_redacted(exc, auth.account.secrets)
        return hops.finish(result)

    def _claim(self, request: requests.PreparedRequest) -> tuple[CustomTokenAuth | None, ApiRequest]:
        """The auth whose rules `request` goes under (None: none), and the request without credentials."""
        ours = self._ours.get(request)
        if ours is not None:  # sent again, it starts from what the caller prepared
            return ours
        hook = RequestsHook.of(request)  # prepared with `auth=CustomTokenAuth(...)` of its own
        if hook is None:
            return None, ApiRequest("GET", "")
        request.hooks = {**request.hooks, "response": [h for h in request.hooks["response"] if h is not hook]}
        return hook.auth, replace(hook.base, body=request.body)

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if url:
            text = url.decode() if isinstance(url, bytes) else url
            scheme, _, rest = text.partition("://")
            origin = f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"
            found = self._proxies_by_origin.get(origin)
            if found is None:
                found = self._proxies_by_origin[origin] = requests.utils.get_environ_proxies(origin)
            if self._connection_proxies or proxies:  # the request's, over the connection's, over the env's
                proxies = {**found, **self._connection_proxies, **(proxies or {})}
            else:
                proxies = found
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def _no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    return r


class _Hops:
    """The hops of one request an `AccountSession` sends: each built from the last, the last kept."""

    def __init__(
        self,
        session: AccountSession,
        account: ConnectedAccount,
        first: requests.PreparedRequest,
        kwargs: dict[str, Any],
    ) -> None:
        self.session = session
        self.account = account
        self.cookie_names = {name.lower() for name in account.added_names[0]}
        self.first: requests.PreparedRequest | None = first
        self.stream = bool(kwargs.get("stream"))
        self.kwargs = {**kwargs, "stream": True}  # a body is read once it is the answer, not before
        self.history: list[requests.Response] = []
        self.sent: requests.PreparedRequest | None = None
        self.response: requests.Response | None = None

    def send(self, request: ApiRequest) -> Head:
        previous = self.response
        if self.first is not None:  # the request as the caller prepared it carries the first hop
            prepared, self.first = self.first, None
        else:  # the next hop, or the same one again after no answer: a copy of the last one sent
            assert self.sent is not None
            prepared = self.sent.copy()
        elsewhere = prepared.url != request.url
        apply(prepared, request)
        if previous is not None:
            injects_cookie = "cookie" in self.cookie_names and rules.concerns(self.account, request.url)
            _carry_cookies(prepared, previous, self.session.cookies, renew=elsewhere and not injects_cookie)
            release(previous)  # before the next hop: its body is nobody's
            self.history.append(previous)
            self.response = None
        self.sent = prepared
        # What `Session.send` does, less its redirect handling (the rules follow redirects here)
        start = time.perf_counter()
        response = self.session.get_adapter(url=request.url).send(prepared, **self.kwargs)
        response.elapsed = timedelta(seconds=time.perf_counter() - start)
        response = dispatch_hook("response", prepared.hooks, response, **self.kwargs)  # type: ignore[no-untyped-call]
        extract_cookies_to_jar(self.session.cookies, prepared, response.raw)  # type: ignore[no-untyped-call]
        self.response = response
        return head_of(response)

    def finish(self, result: Result) -> requests.Response:
        response = self.response
        assert response is not None
        if self.history:
            response.history = self.history
        if result.note:
            _NOTES[response] = result.note
        if not self.stream:
            response.content  # noqa: B018 - read, as requests does without stream
        return response


def authenticated_session(auth: CustomTokenAuth) -> requests.Session:
    """A session that authenticates every request to the account's origin (see `AccountSession`)."""
    return AccountSession(auth)
