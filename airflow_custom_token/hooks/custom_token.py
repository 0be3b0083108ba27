"""`CustomTokenHook`: the connection, its token, and authenticated requests (sync, with requests)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.hook import BaseHook

from airflow_custom_token import redaction
from airflow_custom_token.compat import lookup_connection
from airflow_custom_token.errors import (
    ConfigurationError,
    CustomTokenError,
    RequestError,
    TokenRequestError,
    TokenResponseError,
)
from airflow_custom_token.flow import HttpResponse, excerpt, masked_url, read_token
from airflow_custom_token.spec import ConnectedAccount, HttpRequest, build_account, drive_chain

if TYPE_CHECKING:
    import requests

    from airflow_custom_token.auth import CustomTokenAuth
    from airflow_custom_token.settings import Settings
    from airflow_custom_token.source import TokenSource

EXTRA_OPTIONS = frozenset(
    {"check_response", "timeout", "verify", "allow_redirects", "stream", "proxies", "cert"}
)


class CustomTokenHook(BaseHook):
    """Fetches, caches and refreshes a custom token, and sends authenticated requests.

    :param custom_token_conn_id: conn id of a `custom_token` connection (a connected account).
    :param integration_parameters: values for `{placeholders}`, over the connection's own.
    """

    conn_name_attr = "custom_token_conn_id"
    default_conn_name = "custom_token_default"
    conn_type = "custom_token"
    hook_name = "Custom Token"

    def __init__(
        self,
        custom_token_conn_id: str = default_conn_name,
        integration_parameters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.custom_token_conn_id = custom_token_conn_id
        self.integration_parameters = dict(integration_parameters or {})
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"<CustomTokenHook conn_id={self.custom_token_conn_id!r}>"

    # -- the connected account ----------------------------------------------------------------
    @cached_property
    def settings(self) -> Settings:
        from airflow_custom_token.settings import load_settings

        return load_settings()

    @cached_property
    def account(self) -> ConnectedAccount:
        """The validated account; raises `ConfigurationError` listing every problem."""
        chain = drive_chain(self.custom_token_conn_id, lookup_connection)
        account = build_account(chain, self.integration_parameters, redirect_uris=self.settings.redirect_uris)
        redaction.register(*account.secrets)  # the password and secret-named parameters
        return account

    @cached_property
    def source(self) -> TokenSource:
        from airflow_custom_token.source import TokenSource

        return TokenSource(self.account, self.settings)

    @cached_property
    def auth(self) -> CustomTokenAuth:
        from airflow_custom_token.auth import CustomTokenAuth

        return CustomTokenAuth(self.source)

    # -- public API ---------------------------------------------------------------------------
    def get_token(self) -> str:
        """The current token: from the process cache, the host cache, or a new token request."""
        return self.source.get(self._send_token_request).value

    def _send_token_request(self, request: HttpRequest) -> HttpResponse:
        # `requests` (via the auth module) is imported only when a token request is actually sent
        return self.auth.send_token_request(request)

    def invalidate_token(self) -> None:
        """Drop this account's token from the process and host caches; the next request fetches anew."""
        self.source.discard(None)

    def get_conn(self) -> requests.Session:
        """A `requests.Session` that authenticates every request to the account's origin."""
        from airflow_custom_token.auth import authenticated_session

        return authenticated_session(self.auth)

    def run(
        self,
        endpoint: str,
        method: str = "GET",
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        extra_options: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        """One authenticated request to `host` + `endpoint`; raises `RequestError` for a status >= 400.

        Placeholders resolve in the endpoint, headers and query parameters (never in bodies).
        """
        options = dict(extra_options or {})
        unknown = sorted(set(options) - EXTRA_OPTIONS)
        if unknown:
            raise ConfigurationError(
                self.custom_token_conn_id,
                [f"extra_options: expected keys among {', '.join(sorted(EXTRA_OPTIONS))}; found {unknown}"],
            )
        check = options.pop("check_response", True)
        account = self.account
        url, headers, params = account.render_request(endpoint, headers, params)
        if self._session is None:
            self._session = self.get_conn()
        options.setdefault("timeout", account.timeout)
        method = method.upper()
        self.log.debug("Sending %s %s", method, masked_url(url, account.secrets))
        import requests

        try:
            response = self._session.request(
                method, url, params=params or None, headers=headers or None, data=data, json=json, **options
            )
        except requests.RequestException as exc:
            detail = redaction.redact_string(str(exc), [*redaction.known(), *account.secrets])
            raise RequestError(
                f"{method} {masked_url(url, account.secrets)} failed: {type(exc).__name__}: {detail[:300]}"
            ) from None
        if check and response.status_code >= 400:
            raise RequestError(self.describe_failure(response), status=response.status_code)
        return response

    def describe_failure(self, response: requests.Response) -> str:
        """A secret-free sentence for a failed response: request, status, body excerpt, retry note."""
        secrets = (*redaction.known(), *self.account.secrets)
        url = redaction.redact_string(masked_url(response.url, self.account.secrets), secrets)
        try:
            body = excerpt(response.content, tuple(secrets))
        except Exception:  # a stream that was already read or closed
            body = ""
        method = response.request.method if response.request is not None else "GET"
        message = f"{method} {url} answered {response.status_code} {response.reason or ''}".rstrip()
        if body:
            message += f"; body: {body}"
        if response.status_code in self.account.refresh_on:
            note = getattr(response, "_custom_token_note", None)
            message += f" ({note})" if note else " (after fetching a new token and retrying once)"
        return message

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token (and GET `test_endpoint` when set); say which step failed, never the token."""
        try:
            account = self.account
        except CustomTokenError as exc:
            return False, f"Configuration failed: {exc}"
        secrets: list[str] = list(account.secrets)
        step = "Token request failed"
        try:
            import requests

            # Bypasses the cache: the Test button must really check the credentials.
            token = read_token(account, self.auth.send_token_request(self.source.request), time.time())
            secrets = list(self.source.secrets(token))
            redaction.register(*secrets)
            expires = datetime.fromtimestamp(token.expires_at, UTC).isoformat(timespec="seconds")
            message = (
                f"Token obtained from {masked_url(account.token_request.url, account.secrets)} "
                f"(expires {expires}, in {max(0, round(token.expires_at - time.time()))} s)."
            )
            if not account.test_endpoint:
                return True, message
            step = "Test endpoint failed"
            prepared = requests.Request("GET", account.request_url(account.test_endpoint)).prepare()
            self.auth._inject(prepared, token)
            response = self.get_conn().send(prepared, timeout=account.timeout or 30, allow_redirects=False)
            if response.status_code >= 400:
                return False, redaction.redact_string(f"{step}: {self.describe_failure(response)}", secrets)
            return True, f"{message} GET {account.test_endpoint} answered {response.status_code}."
        except TokenRequestError as exc:
            return False, redaction.redact_string(str(exc), secrets)
        except TokenResponseError as exc:
            return False, redaction.redact_string(f"Token location failed: {exc}", secrets)
        except Exception as exc:
            text = redaction.redact_string(f"{type(exc).__name__}: {exc}", secrets)
            return False, f"{step}: {text[:400]}"
