"""`CustomTokenAuth`: a `requests` auth object that fetches, caches, injects and refreshes the token.

Plugs into any `requests.Session` (`session.auth = CustomTokenAuth(...)`), with or without Airflow.
It also keeps the token on its origin: on a redirect to another origin (or from https to http), the
token header (whatever its name), the token URL parameter and the request parameters are removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from airflow_custom_token.flow import HttpResponse, Token, transport_error
from airflow_custom_token.settings import Settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.spec import ConnectedAccount, HttpRequest, RawConnection, build_account

NOT_RESENT = (
    "the token was refreshed, but the request was not retried because its body is a stream or generator "
    "that cannot be sent twice"
)


def send_with_requests(session: requests.Session, secrets: tuple[str, ...] = ()) -> Any:
    """A `send` for `TokenSource`: carries a token request over `session` (never following a redirect)."""

    def send(request: HttpRequest) -> HttpResponse:
        try:
            response = session.request(
                request.method,
                request.url,
                params=list(request.params) or None,
                headers=dict(request.headers),
                data=list(request.form) if request.form is not None else None,
                json=request.json,
                timeout=request.timeout,
                verify=request.verify,
                allow_redirects=False,  # the request carries the client's credentials
            )
        except requests.RequestException as exc:
            raise transport_error(request, exc, secrets) from None
        return HttpResponse(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=response.content,
            cookies=response.cookies.get_dict(),
            reason=response.reason or "",
        )

    return send


class CustomTokenAuth(AuthBase):
    """Authenticates every request on the account's origin with the account's current token."""

    def __init__(self, source: TokenSource, token_session: requests.Session | None = None) -> None:
        self.source = source
        self.account: ConnectedAccount = source.account
        self._token_session = token_session
        self._send: Any = None

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
        """Build from plain values, as a connection would hold them (no Airflow connection needed)."""
        raw = RawConnection(name, "custom_token", host=host, login=login, password=password, extra=extra)
        settings = settings or Settings()
        account = build_account([raw], integration_parameters, redirect_uris=settings.redirect_uris)
        return cls(TokenSource(account, settings))

    @classmethod
    def from_airflow(
        cls, conn_id: str, integration_parameters: Mapping[str, Any] | None = None
    ) -> CustomTokenAuth:
        from airflow_custom_token.hooks.custom_token import CustomTokenHook

        return CustomTokenHook(conn_id, integration_parameters).auth

    def __repr__(self) -> str:
        return f"<CustomTokenAuth {self.account.describe()}>"

    # -- tokens -------------------------------------------------------------------------------
    def get_token(self) -> Token:
        return self.source.get(self.send_token_request)

    def send_token_request(self, request: HttpRequest) -> HttpResponse:
        """Carry a token request over this auth's own session (created on first use)."""
        if self._send is None:
            if self._token_session is None:
                self._token_session = requests.Session()
            self._send = send_with_requests(self._token_session, self.account.secrets)
        response: HttpResponse = self._send(request)
        return response

    # -- requests' auth protocol --------------------------------------------------------------
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if not r.url or not self.account.is_allowed(r.url):
            return r  # never send the token to another origin
        token = self.get_token()
        r._custom_token_url = r.url  # type: ignore[attr-defined]
        self._inject(r, token)
        r.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return r

    def _inject(self, r: requests.PreparedRequest, token: Token) -> None:
        headers, query = self.account.credentials(token.value)
        for name, value in headers[:-1] if self.account.inject_as == "header" else headers:
            if name not in r.headers:  # the request's own headers win over request parameters
                r.headers[name] = value
        if self.account.inject_as == "header":
            r.headers[self.account.inject_name] = headers[-1][1]
        if query:
            r.prepare_url(r.url, query)
        r._custom_token = token  # type: ignore[attr-defined]

    def _strip(self, r: requests.PreparedRequest) -> None:
        """Remove everything this auth added to a request."""
        header_names, query_names = self.account.added_names
        for name in header_names:
            r.headers.pop(name, None)
        if query_names:
            r.url = getattr(r, "_custom_token_url", r.url)

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.is_redirect:
            self._guard_redirect(response)
            return response
        if response.status_code not in self.account.refresh_on:
            return response
        request = response.request
        used: Token | None = getattr(request, "_custom_token", None)
        if getattr(request, "_custom_token_retried", False) or used is None:
            return response
        self.source.discard(used)  # only if nobody has replaced it meanwhile
        if request.body is not None and not isinstance(request.body, bytes | str):
            response._custom_token_note = NOT_RESENT  # type: ignore[attr-defined]
            return response
        token = self.get_token()
        retry = request.copy()
        self._strip(retry)
        self._inject(retry, token)
        retry._custom_token_retried = True  # type: ignore[attr-defined]
        response.content  # noqa: B018 - drain to release the connection
        response.close()
        if response.raw is not None and retry._cookies is not None:  # type: ignore[attr-defined]
            extract_cookies_to_jar(retry._cookies, request, response.raw)  # type: ignore[attr-defined,no-untyped-call]
            retry.prepare_cookies(retry._cookies)  # type: ignore[attr-defined]
        assert response.connection is not None
        second: requests.Response = response.connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        request.headers, request.url = retry.headers.copy(), retry.url  # requests redirects from `request`
        request._custom_token = token  # type: ignore[attr-defined]
        if second.is_redirect:
            self._guard_redirect(second, request)
        return second

    def _guard_redirect(self, response: requests.Response, original: Any = None) -> None:
        """Before requests follows a redirect: keep the token on its origin only."""
        location = response.headers.get("location")
        if not location:
            return
        target = urljoin(response.url, location)
        if self.account.is_allowed(target):
            token: Token | None = getattr(response.request, "_custom_token", None)
            if token is not None and self.account.added_names[1]:
                response.headers["location"] = self.account.with_query_credentials(target, token.value)
            return
        for request in {id(r): r for r in (response.request, original) if r is not None}.values():
            self._strip(request)  # requests copies the original request for the redirect
        response.headers["location"] = self.account.without_added_params(target)


class AccountSession(requests.Session):
    """A session for one connected account, reading the environment once per origin, not per request.

    A default `requests.Session` re-reads proxy variables and `.netrc` on every request. Here the
    proxies of an origin (honouring NO_PROXY) are resolved the first time a request goes there, and
    `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` once; `.netrc` never applies, since the session's auth is
    the token.
    """

    def __init__(self, auth: CustomTokenAuth) -> None:
        super().__init__()
        self.auth = auth
        self.trust_env = False
        self._proxies_by_origin: dict[str, dict[str, str]] = {}
        account = auth.account
        self.verify = account.verify
        if account.verify:
            import os

            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                self.verify = bundle

    def __repr__(self) -> str:
        return f"<AccountSession {self.auth!r}>"

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if not proxies and url:
            text = url.decode() if isinstance(url, bytes) else url
            scheme, _, rest = text.partition("://")
            origin = f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"
            found = self._proxies_by_origin.get(origin)
            if found is None:
                found = self._proxies_by_origin[origin] = requests.utils.get_environ_proxies(origin)
            proxies = found
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def authenticated_session(auth: CustomTokenAuth) -> requests.Session:
    """A session that authenticates every request to the account's origin (see `AccountSession`)."""
    return AccountSession(auth)
