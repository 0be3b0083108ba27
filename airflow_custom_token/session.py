"""`AccountSession`: the session of `CustomTokenHook.get_conn()` and `run`, which sends every hop of a
request itself under the request rules (`rules.drive`): the first request, a retry with a fresh token,
an API retry, each redirect. requests follows no redirect of its own there.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import requests
from requests._internal_utils import to_native_string
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar
from requests.hooks import dispatch_hook
from requests.sessions import merge_hooks, merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from airflow_custom_token import rules
from airflow_custom_token.account import ConnectedAccount
from airflow_custom_token.requests_adapter import (
    _NOTES,
    TRANSPORT_ERRORS,
    RequestsHook,
    RulesAuth,
    _carry_cookies,
    apply,
    as_api_request,
    head_of,
    raise_redacted,
    release,
)
from airflow_custom_token.rules import ApiRequest, Head, Result
from airflow_custom_token.tls import requests_options

__all__ = ["AccountSession", "authenticated_session"]

_REMEMBERED = 256  # prepared URLs and valid headers an `AccountSession` remembers (then starts afresh)


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

    def __init__(self, auth: RulesAuth) -> None:
        super().__init__()
        self.auth = auth
        self.trust_env = False
        self._proxies_by_origin: dict[str, dict[str, str]] = {}
        self._prepared_urls: dict[str, str | None] = {}  # a URL (no query parameters), prepared
        self._valid_headers: set[tuple[str, str]] = set()  # (name, value) that passed requests' check
        # the requests this session prepared for its auth, and each one as prepared (without credentials)
        self._ours: weakref.WeakKeyDictionary[requests.PreparedRequest, tuple[RulesAuth, ApiRequest]] = (
            weakref.WeakKeyDictionary()
        )
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
        if request.auth is not None or not isinstance(auth, RulesAuth):
            return super().prepare_request(request)
        prepared = self._prepare_plain(request)
        if prepared is None:
            request.auth = _no_auth  # the rules inject, when the session sends it
            try:
                prepared = super().prepare_request(request)
            finally:
                request.auth = None
        if rules.concerns(auth.account, prepared.url or ""):
            self._ours[prepared] = (auth, as_api_request(prepared))
        return prepared

    def _prepare_plain(self, request: requests.Request) -> requests.PreparedRequest | None:
        """What requests' `Session.prepare_request` makes of a plain request of ours (no files, no cookies
        and no query parameters on either side, the session's own auth left to the rules), at a fraction
        of its cost; None for any other request (requests prepares it).

        The same steps in the same order, less what cannot apply to a plain request, and with the two
        pure, costly steps remembered: the prepared URL of a URL, and that a header is valid. requests'
        generic merging and URL preparation (typed-protocol checks on every mapping, URL parsing and
        requoting) are most of the per-request cost of a plain session.
        """
        url = request.url
        if (
            self.trust_env
            or request.files
            or request.cookies
            or request.params
            or len(self.cookies)
            or self.params
            or not isinstance(self.headers, Mapping)
            or type(url) is not str
        ):
            return None
        p = requests.PreparedRequest()
        p.prepare_method(request.method)
        known = self._prepared_urls.get(url)
        if known is None:
            p.prepare_url(url, None)
            if len(self._prepared_urls) >= _REMEMBERED:
                self._prepared_urls.clear()
            self._prepared_urls[url] = p.url
        else:
            p.url = known
        headers = request.headers
        merged = self.headers if headers is None else _merge_headers(headers, self.headers)
        p.headers = CaseInsensitiveDict()
        valid = self._valid_headers
        for name, value in merged.items():
            if type(value) is not str or (name, value) not in valid:
                check_header_validity((name, value))  # type: ignore[no-untyped-call,type-var]
                if type(value) is str and len(valid) < _REMEMBERED:
                    valid.add((name, value))
            p.headers[to_native_string(name)] = value  # type: ignore[assignment]
        p._cookies = RequestsCookieJar()  # type: ignore[attr-defined,no-untyped-call]  # empty: no Cookie header
        p.prepare_body(request.data, None, request.json)
        p.prepare_auth(_no_auth, url)  # the rules inject, when the session sends it
        p.prepare_hooks(merge_hooks(request.hooks, self.hooks))  # type: ignore[no-untyped-call]
        return p

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

    def _claim(self, request: requests.PreparedRequest) -> tuple[RulesAuth | None, ApiRequest]:
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
        if self.trust_env or not isinstance(proxies, dict) or not isinstance(self.proxies, dict):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # What requests' `merge_setting` makes of these, without its generic (and costly) type checks
        merged = {**self.proxies, **proxies} if self.proxies else dict(proxies)
        return {
            "proxies": {k: v for k, v in merged.items() if v is not None},
            "stream": self.stream if stream is None else stream,
            "verify": self.verify if verify is None else verify,
            "cert": self.cert if cert is None else cert,
        }


def _merge_headers(own: Any, session: Any) -> Any:
    """requests' `merge_setting` of a request's headers over the session's."""
    return merge_setting(own, session, dict_class=CaseInsensitiveDict)  # type: ignore[no-untyped-call]


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
            cookie_names = {name.lower() for name in self.account.added_names[0]}
            injects_cookie = "cookie" in cookie_names and rules.concerns(self.account, request.url)
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


def authenticated_session(auth: RulesAuth) -> requests.Session:
    """A session that authenticates every request to the account's origin (see `AccountSession`)."""
    return AccountSession(auth)
