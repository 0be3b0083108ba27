"""The adapter between requests' objects and the request rules (`rules.request_rules`).

What both ways of carrying the rules over requests share (`session.AccountSession`, which sends every
hop itself, and `RequestsHook`, for a `CustomTokenAuth` on a session of your own): what the rules see
of a prepared request and of an answer, making a prepared request the one the rules yielded, carrying
cookies between hops, letting go of an answer replaced by a retry, and raising requests' errors with
every secret masked. `RulesAuth` is what these need of an auth object (`auth.CustomTokenAuth` is one).
"""

from __future__ import annotations

import time
import weakref
from typing import Any, NoReturn

import requests
import urllib3
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar, merge_cookies
from requests.structures import CaseInsensitiveDict

from airflow_custom_token import redaction, rules
from airflow_custom_token.account import ConnectedAccount
from airflow_custom_token.rules import ApiRequest, Head
from airflow_custom_token.token import Token
from airflow_custom_token.wire import CHUNK_BYTES

# What requests raises when a request got no answer: what the rules may retry.
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout)

# Why a `refresh_on` answer was not retried with a new token, by answer (see `refresh_note`).
_NOTES: weakref.WeakKeyDictionary[requests.Response, str] = weakref.WeakKeyDictionary()


class RulesAuth(AuthBase):
    """An auth whose requests go under the request rules: the account, its tokens (`rules.Tokens`), and
    the rules of one request. `auth.CustomTokenAuth` is the one implementation."""

    account: ConnectedAccount

    def current(self) -> Token:
        raise NotImplementedError

    def discard(self, token: Token) -> None:
        raise NotImplementedError

    def request_rules(
        self, request: ApiRequest, *, follow_redirects: bool = True, max_redirects: int = 30
    ) -> rules.Rules:
        raise NotImplementedError


def as_api_request(r: requests.PreparedRequest) -> ApiRequest:
    """What the rules see of a prepared request (its body stays requests')."""
    body = r.body
    headers = tuple(r.headers.items())
    if not all(type(k) is str and type(v) is str for k, v in headers):
        headers = tuple((_text(k), _text(v)) for k, v in headers)
    return ApiRequest(
        (r.method or "GET").upper(),
        r.url or "",
        headers,
        body,
        body is None or isinstance(body, bytes | str),
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
    r.headers = CaseInsensitiveDict(request.headers)
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

    def __init__(self, auth: RulesAuth, prepared: requests.PreparedRequest) -> None:
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

    def __init__(self, auth: RulesAuth, first: Token | None) -> None:
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
