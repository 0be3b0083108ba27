"""`CustomTokenAuth`: a `requests` auth object that fetches, caches, injects and refreshes the token.

Plugs into any `requests.Session` (`session.auth = CustomTokenAuth(...)`), with or without Airflow.
What to inject, when to refresh and what a redirect may carry are decided by the request rules
(`rules.request_flow`); this module only carries them over requests:

- `CustomTokenAuth.__call__` starts the rules for the request, sends them the prepared request, applies
  the first request they yield and registers a response hook (`RequestsFlow`) that holds the rules'
  state for that request;
- the hook hands each answer to the rules: a retry they ask for is sent on the same connection; a
  redirect they allow is followed by requests, once the hook has set the request's headers and the
  Location the rules chose (so the token, whatever its header, the token URL parameter and the request
  parameters reach the account's allowed origins only);
- `AccountSession` (the session of `CustomTokenHook.get_conn()` and `run`) also hands the rules the
  transport errors that requests raises before any hook runs, for the API retry policy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict

from airflow_custom_token import redaction, rules
from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import NOT_RESENT, ApiRequest, Follow, Head, Send
from airflow_custom_token.settings import Settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.tls import requests_options, tls_hint
from airflow_custom_token.token import BoundedBody, Token, TokenLimits
from airflow_custom_token.wire import CHUNK_BYTES, HttpRequest, HttpResponse, transport_error

__all__ = [
    "NOT_RESENT",
    "AccountSession",
    "CustomTokenAuth",
    "RequestsFlow",
    "authenticated_session",
    "refresh_note",
    "send_with_requests",
]

# What requests raises when a request got no answer: what the rules may retry.
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout)


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
    import urllib3

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
        account = build_account([raw], integration_parameters, redirect_uris=settings.redirect_uris)
        redaction.register(*account.secrets)  # the password and secret-named parameters
        return cls(TokenSource(account, settings))

    @classmethod
    def from_airflow(
        cls, conn_id: str, integration_parameters: Mapping[str, Any] | None = None
    ) -> CustomTokenAuth:
        """Build from an Airflow connection (and its integration), with `[custom_token]`'s settings."""
        from airflow_custom_token import redaction
        from airflow_custom_token.account.chain import drive_chain
        from airflow_custom_token.compat import lookup_connection
        from airflow_custom_token.settings import load_settings

        settings = load_settings()
        chain = drive_chain(conn_id, lookup_connection)
        account = build_account(chain, integration_parameters, redirect_uris=settings.redirect_uris)
        redaction.register(*account.secrets)  # the password and secret-named parameters
        return cls(TokenSource(account, settings))

    def __repr__(self) -> str:
        return f"<CustomTokenAuth {self.account.describe()}>"

    def pinned(self, token: Token) -> CustomTokenAuth:
        """This auth sending `token` itself, never refreshed nor discarded: to check a token just fetched."""
        auth = CustomTokenAuth(self.source, self._token_session, retry=self.retry)
        auth._send = self._send
        auth._pinned = token
        return auth

    # -- tokens -------------------------------------------------------------------------------
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

    def flow(self, request: ApiRequest, *, max_redirects: int | None = None) -> rules.Flow:
        """The request rules for one request (`max_redirects` None: requests counts them itself)."""
        return rules.request_flow(
            self.account,
            request,
            retry=self.retry,
            refresh=self._pinned is None,
            max_redirects=max_redirects,
        )

    def current_token(self) -> Token:
        """The token the rules ask for: the pinned one, else the account's current token."""
        return self._pinned if self._pinned is not None else self.get_token()

    def discard(self, token: Token) -> None:
        if self._pinned is None:
            self.source.discard(token)

    # -- requests' auth protocol --------------------------------------------------------------
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if not rules.concerns(self.account, r.url or ""):
            return r  # another origin: left untouched, redirects included
        hook = RequestsFlow.of(r)
        if hook is None or hook.auth is not self:
            hook = RequestsFlow(self, r)
            r.register_hook("response", hook)  # type: ignore[no-untyped-call]
        hook.begin(r, sent=False)
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


def head_of(response: requests.Response, sent: ApiRequest | None = None) -> Head:
    """What the rules see of an answer."""
    return Head(response.status_code, {k.lower(): v for k, v in response.headers.items()}, sent=sent)


def apply(r: requests.PreparedRequest, request: ApiRequest, *, body: bool = True) -> None:
    """Make `r` the request the rules yielded (its body too, unless `body` is False)."""
    r.method = request.method
    r.url = request.url
    r.headers = CaseInsensitiveDict(dict(request.headers))
    if body:
        r.body = request.body


class RequestsFlow:
    """The response hook of one prepared request: drives its rules (`rules.request_flow`) over requests.

    The rules' state lives here (the generator), never on the prepared request. requests calls the
    hook with each answer: the first, and each one of a redirect that requests follows.
    """

    def __init__(self, auth: CustomTokenAuth, prepared: requests.PreparedRequest) -> None:
        self.auth = auth
        self.prepared = prepared  # the request this hook was registered on (sent by the caller)
        self.base = as_api_request(prepared)  # as the caller prepared it: without credentials
        self.note: str | None = None
        self._flow: rules.Flow | None = None
        self._expect: requests.PreparedRequest | None = None  # whose answer comes next (None: a hop's)
        self._following = False  # is the next answer that of a redirect requests follows?
        self._carrier: requests.PreparedRequest = prepared  # what requests copies for the next hop

    def __repr__(self) -> str:
        return f"<RequestsFlow {self.base!r}>"

    @classmethod
    def of(cls, request: requests.PreparedRequest) -> RequestsFlow | None:
        """The hook registered on `request`, if `CustomTokenAuth` prepared it."""
        hooks = request.hooks.get("response", []) if request.hooks else []
        return next((hook for hook in hooks if isinstance(hook, RequestsFlow)), None)

    # -- the rules -----------------------------------------------------------------------------
    def begin(self, request: requests.PreparedRequest, *, sent: bool) -> None:
        """(Re)start the rules for `request`; unless it has been `sent` already, apply their first request.

        A restart happens when the prepared request (or a copy) is sent again after its rules finished.
        """
        if request is self.prepared:
            base = self.base
        else:
            base = rules.uninjected(self.auth.account, as_api_request(request))
        self._flow = self.auth.flow(base)
        self.note = None
        command = self._advance(None)
        if not sent and isinstance(command, Send):
            apply(request, command.request, body=False)
        self._expect, self._following, self._carrier = request, False, request

    def _advance(self, outcome: Any, error: BaseException | None = None) -> Send | Follow | None:
        """Run the rules up to their next request (None: they are done), serving tokens and waits."""
        flow = self._flow
        if flow is None:
            if error is not None:
                raise error
            return None
        try:
            command = flow.throw(error) if error is not None else flow.send(outcome)
            while not isinstance(command, Send | Follow):
                if isinstance(command, rules.GetToken):
                    command = flow.send(self.auth.current_token())
                    continue
                if isinstance(command, rules.Discard):
                    self.auth.discard(command.token)
                else:
                    time.sleep(command.seconds)
                command = flow.send(None)
            return command
        except StopIteration as stop:
            self.note = stop.value.note
            self._flow = None
            return None
        except BaseException:
            self._flow = None  # a transport error the rules did not retry, or a failed token request
            raise

    def awaits(self, request: requests.PreparedRequest | None) -> bool:
        """Are the rules waiting for the answer to `request`?"""
        if self._flow is None:
            return False
        if self._expect is not None:
            return request is self._expect
        return request is not self.prepared  # a hop's answer: requests sends a copy

    # -- requests' hook protocol ---------------------------------------------------------------
    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        sent = response.request  # the request of this hop, which requests copies for a redirect
        assert sent is not None
        if not self.awaits(sent):  # the prepared request sent again, or a copy of it
            self.begin(sent, sent=True)
        head = head_of(response, sent=as_api_request(sent) if self._following else None)
        self._expect, self._following = None, False
        command = self._advance(head)
        while isinstance(command, Send):
            retry = sent.copy()
            apply(retry, command.request)
            release(response)  # before the retry: its body is nobody's
            if response.raw is not None and retry._cookies is not None:  # type: ignore[attr-defined]
                extract_cookies_to_jar(retry._cookies, sent, response.raw)  # type: ignore[attr-defined,no-untyped-call]
                retry.prepare_cookies(retry._cookies)  # type: ignore[attr-defined]
            assert response.connection is not None
            try:
                answer: requests.Response = response.connection.send(retry, **kwargs)
            except TRANSPORT_ERRORS as exc:
                try:
                    command = self._advance(None, exc)  # raises unless the rules retry
                except TRANSPORT_ERRORS as final:  # its message quotes the URL: the token, inject_as=url
                    raise_redacted(final, self.auth.account.secrets)
                continue
            answer.history = [*response.history, response]
            answer.request = retry
            response = answer
            command = self._advance(head_of(answer))
        if isinstance(command, Follow):  # requests follows: from `sent`, to the Location
            sent.headers = CaseInsensitiveDict(dict(command.request.headers))
            response.headers["location"] = command.request.url
            self._following, self._carrier = True, sent
        return response

    def resend_after(self, error: BaseException) -> requests.PreparedRequest:
        """A transport error before any answer (raised by requests): the request to send instead.

        Raises `error` when the rules do not retry it (or the hook already handed it to them).
        """
        command = self._advance(None, error)
        if not isinstance(command, Send):
            self._flow = None
            raise error
        retry = self._carrier.copy()
        apply(retry, command.request)
        self._expect, self._following = retry, False
        return retry


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
    import urllib3

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
    request = response.request
    hook = RequestsFlow.of(request) if isinstance(request, requests.PreparedRequest) else None
    return hook.note if hook is not None else None


class AccountSession(requests.Session):
    """A session for one connected account, reading the environment once per origin, not per request.

    A default `requests.Session` re-reads proxy variables and `.netrc` on every request. Here the
    proxies of an origin (honouring NO_PROXY) are resolved the first time a request goes there, and
    `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` once; `.netrc` never applies, since the session's auth is
    the token. A transport error (no answer) goes to the request rules, which may send the request
    again under the auth's retry policy.

    The connection's transport settings apply: `client_cert`/`client_key` (`cert`), `ca_bundle`
    (`verify`, over the environment's bundle), `proxies` (over the environment's, key by key; a
    request's own `proxies` over both).
    """

    def __init__(self, auth: CustomTokenAuth) -> None:
        super().__init__()
        self.auth = auth
        self.trust_env = False
        self._proxies_by_origin: dict[str, dict[str, str]] = {}
        account = auth.account
        options = requests_options(account)  # a missing certificate file: ConfigurationError, now
        self.verify = options["verify"]
        self.cert = options["cert"]
        self._connection_proxies: dict[str, str] = options["proxies"]
        if self.verify is True:
            import os

            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                self.verify = bundle

    def __repr__(self) -> str:
        return f"<AccountSession {self.auth!r}>"

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        hook = RequestsFlow.of(request)
        if hook is not None and not hook.awaits(request):
            hook.begin(request, sent=False)  # sent again: the rules start over, with a fresh token
        try:
            while True:
                try:
                    return super().send(request, **kwargs)
                except TRANSPORT_ERRORS as exc:
                    if hook is None:
                        raise
                    request = hook.resend_after(exc)
        except requests.RequestException as exc:  # urllib3 quotes the URL: the token, with inject_as=url
            raise_redacted(exc, hook.auth.account.secrets if hook is not None else ())

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


def authenticated_session(auth: CustomTokenAuth) -> requests.Session:
    """A session that authenticates every request to the account's origin (see `AccountSession`)."""
    return AccountSession(auth)
