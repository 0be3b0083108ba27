"""`CustomTokenHook`: the connection, its token, and authenticated requests (sync, with requests)."""

from __future__ import annotations

import json as json_module
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from functools import cached_property
from typing import Any

import requests
import tenacity
from requests.structures import CaseInsensitiveDict

from airflow_custom_token import connections, redaction
from airflow_custom_token import options as request_options
from airflow_custom_token.account import ConnectedAccount
from airflow_custom_token.account.urls import masked_url
from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth, authenticated_session, refresh_note
from airflow_custom_token.compat import BaseHook
from airflow_custom_token.errors import (
    ConfigurationError,
    CustomTokenError,
    RequestError,
    TokenRequestError,
    TokenResponseError,
)
from airflow_custom_token.fields import CONN_TYPE, DEFAULT_CONN_ID
from airflow_custom_token.hooks import form
from airflow_custom_token.settings import Settings, load_settings
from airflow_custom_token.source import TokenSource
from airflow_custom_token.tls import tls_hint
from airflow_custom_token.wire import ERROR_BODY_BYTES, HttpRequest, HttpResponse, excerpt


def _excerpt_bytes(response: requests.Response) -> bytes:
    """What `excerpt` quotes of an answer's body: of a body not read yet (a stream), only its first
    `ERROR_BODY_BYTES` (decompressed), then the answer is closed; never the whole of a large body."""
    try:
        if getattr(response, "_content", False) is not False:  # read already (requests' own flag)
            return response.content[:ERROR_BODY_BYTES]
        if response.raw is None:
            return b""
        with response:  # closing an answer not read to its end drops its connection
            data: bytes = response.raw.read(ERROR_BODY_BYTES, decode_content=True)
        return data
    except Exception:  # a stream that was already consumed, closed or broken
        return b""


class _CustomTokenBaseHook(BaseHook):
    """What the sync and the async hook share: the connection type and its form, the conn id and the
    task's placeholder values."""

    conn_name_attr = "custom_token_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
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

    def _refuse(self, problems: list[str]) -> None:
        if problems:
            raise ConfigurationError(self.custom_token_conn_id, problems)


class CustomTokenHook(_CustomTokenBaseHook):
    """Fetches, caches and refreshes a custom token, and sends authenticated requests.

    :param custom_token_conn_id: conn id of a `custom_token` connection (a connected account).
    :param integration_parameters: values for `{placeholders}`, over the connection's own.
    """

    # -- the connection form of Airflow 3.0 and 3.1 (3.2+ reads `conn-fields`) --
    # Defined on this class itself: Airflow's providers manager looks in the class's own `__dict__`.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the form, generated from the field table (`fields.EXTRA_FIELDS`)."""
        return form.connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabeled and placeholder texts of the standard fields, from the field table."""
        return form.ui_field_behaviour()

    def __init__(
        self,
        custom_token_conn_id: str = _CustomTokenBaseHook.default_conn_name,
        integration_parameters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(custom_token_conn_id, integration_parameters, **kwargs)
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"<CustomTokenHook conn_id={self.custom_token_conn_id!r}>"

    # -- the connected account ----------------------------------------------------------------
    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def account(self) -> ConnectedAccount:
        """The validated account; raises `ConfigurationError` listing every problem."""
        return connections.account(self.custom_token_conn_id, self.integration_parameters, self.settings)

    @cached_property
    def source(self) -> TokenSource:
        return TokenSource(self.account, self.settings)

    @cached_property
    def auth(self) -> CustomTokenAuth:
        return CustomTokenAuth(self.source)

    # -- public API ---------------------------------------------------------------------------
    def get_token(self) -> str:
        """The current token: from the process, host or shared cache, or a new token request."""
        return self.source.get(self._send_token_request).value

    def _send_token_request(self, request: HttpRequest) -> HttpResponse:
        # `requests` (via the auth module) is imported only when a token request is actually sent
        return self.auth.send_token_request(request)

    def invalidate_token(self) -> None:
        """Drop this account's token from the process, host and shared caches: the next request fetches."""
        self.source.discard(None)

    def get_conn(self) -> requests.Session:
        """A `requests.Session` that authenticates every request to the account's origin."""
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
        **request_kwargs: Any,
    ) -> requests.Response:
        """One authenticated request to `host` + `endpoint`; raises `RequestError` for a status >= 400.

        Placeholders resolve in the endpoint, headers and query parameters (never in bodies).
        `request_kwargs` go to requests as they are: `files` (a multipart upload), `cookies`.
        An idempotent request is retried as the connection's `request_retries` says.
        """
        options = dict(extra_options or {})
        if options or request_kwargs:  # nothing to check otherwise
            self._refuse(
                request_options.extra_options_problems(options, "sync")
                + request_options.request_kwargs_problems(request_kwargs)
            )
        check = options.pop("check_response", True)
        account = self.account
        url, headers, params = account.render_request(endpoint, headers, params)
        if self._session is None:
            self._session = self.get_conn()
        options.setdefault("timeout", account.api_timeout)
        method = method.upper()
        if self.log.isEnabledFor(logging.DEBUG):  # the masked URL costs more than the message
            self.log.debug("Sending %s %s", method, masked_url(url, account.secrets))
        stream = bool(options.get("stream"))
        options["stream"] = True  # an error answer is read only as far as its excerpt (describe_failure)
        try:
            response = self._session.request(
                method,
                url,
                params=params or None,
                headers=headers or None,
                data=data,
                json=json,
                **options,
                **request_kwargs,
            )
            if not stream and not (check and response.status_code >= 400):
                response.content  # noqa: B018 - read, as requests does without stream
        except requests.RequestException as exc:
            detail = redaction.redact_string(str(exc), [*redaction.known(), *account.secrets])
            raise RequestError(
                f"{method} {masked_url(url, account.secrets)} failed: {type(exc).__name__}: {detail[:300]}"
                + tls_hint(account.transport, url, exc)
            ) from None
        if check and response.status_code >= 400:
            raise RequestError(self.describe_failure(response), status=response.status_code)
        return response

    def run_with_advanced_retry(
        self, _retry_args: Mapping[str, Any], endpoint: str, method: str = "GET", **kwargs: Any
    ) -> requests.Response:
        """`run`, retried by tenacity as `_retry_args` says (`HttpHook.run_with_advanced_retry`).

        `_retry_args` are `tenacity.Retrying`'s keyword arguments; `run` raises `RequestError` (with its
        `status`) for an answer >= 400 and for a request that got no answer, so for instance::

            hook.run_with_advanced_retry(
                {"stop": tenacity.stop_after_attempt(5), "wait": tenacity.wait_exponential(max=30),
                 "retry": tenacity.retry_if_exception_type(RequestError)},
                "/v1/orders",
            )

        Each attempt is a whole `run` (the request rules included: the `refresh_on` retry and the
        connection's own `request_retries`). Any method is retried, POST included: the caller decides.
        """
        self._retry_obj = tenacity.Retrying(**dict(_retry_args))
        response: requests.Response = self._retry_obj(self.run, endpoint, method, **kwargs)
        return response

    def describe_failure(self, response: requests.Response) -> str:
        """A secret-free sentence for a failed response: request, status, body excerpt, retry note."""
        secrets = (*redaction.known(), *self.account.secrets)
        url = redaction.redact_string(masked_url(response.url, self.account.secrets), secrets)
        body = excerpt(_excerpt_bytes(response), tuple(secrets))
        method = response.request.method if response.request is not None else "GET"
        message = f"{method} {url} answered {response.status_code} {response.reason or ''}".rstrip()
        if body:
            message += f"; body: {body}"
        if response.status_code in self.account.refresh_on:
            note = refresh_note(response)
            message += f" ({note})" if note else " (after fetching a new token and retrying once)"
        return message

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token (and GET `test_endpoint` when set); say which step failed, never the token."""
        steps = self.check()
        failed = next((step for step in steps if not step.ok), None)
        if failed is not None:
            return False, failed.message
        return True, " ".join(step.message for step in steps if step.message)

    def check(self) -> list[CheckStep]:
        """The Test button's steps, each with its outcome, duration and message (secret-free), up to
        the first that fails: the configuration, the token request (its login steps included; the
        caches bypassed), the test endpoint (when set) with that token."""
        started = time.monotonic()
        try:
            account = self.account
        except CustomTokenError as exc:
            return [
                CheckStep("configuration", False, time.monotonic() - started, f"Configuration failed: {exc}")
            ]
        except Exception as exc:  # the settings, the connection lookup: an answer, never a raise
            text = redaction.redact_string(f"{type(exc).__name__}: {exc}")
            return [
                CheckStep(
                    "configuration", False, time.monotonic() - started, f"Configuration failed: {text[:400]}"
                )
            ]
        steps = [CheckStep("configuration", True, time.monotonic() - started, "")]
        secrets: list[str] = list(account.secrets)
        step, started = "Token request failed", time.monotonic()
        try:
            token = self.source.check(self.auth.send_token_request)  # the credentials, really checked
            secrets = list(self.source.secrets(token))
            expires = datetime.fromtimestamp(token.expires_at, UTC).isoformat(timespec="seconds")
            message = (
                f"Token obtained from {masked_url(account.token_request.url, account.secrets)} "
                f"(expires {expires}, in {max(0, round(token.expires_at - time.time()))} s)."
            )
            steps.append(CheckStep("token request", True, time.monotonic() - started, message))
            if not account.test_endpoint:
                return steps
            step, started = "Test endpoint failed", time.monotonic()
            response = self.get_conn().get(
                account.request_url(account.test_endpoint),
                auth=self.auth.pinned(token),  # the token just fetched, not refreshed: it is what is tested
                timeout=account.api_timeout,
                allow_redirects=False,
                stream=True,  # the body is not needed; of an error, only its excerpt is read
            )
            if response.status_code >= 400:
                failure = redaction.redact_string(f"{step}: {self.describe_failure(response)}", secrets)
                return [*steps, CheckStep("test endpoint", False, time.monotonic() - started, failure)]
            response.close()
            answered = f"GET {account.test_endpoint} answered {response.status_code}."
            return [*steps, CheckStep("test endpoint", True, time.monotonic() - started, answered)]
        except TokenRequestError as exc:
            failure = redaction.redact_string(str(exc), secrets)
        except TokenResponseError as exc:
            failure = redaction.redact_string(f"Token location failed: {exc}", secrets)
        except Exception as exc:
            failure = f"{step}: {redaction.redact_string(f'{type(exc).__name__}: {exc}', secrets)[:400]}"
        name = "token request" if step == "Token request failed" else "test endpoint"
        return [*steps, CheckStep(name, False, time.monotonic() - started, failure)]


@dataclass(frozen=True)
class CheckStep:
    """One step of `CustomTokenHook.check`: its name, outcome, duration (seconds) and message."""

    name: str
    ok: bool
    seconds: float
    message: str


# ---------------------------------------------------------------------------------------------------
# Async: `CustomTokenAsyncHook` (aiohttp), for the triggerer and for your own triggers


def charset(content_type: str | None) -> str:
    """The charset a Content-Type names, if Python knows it; else UTF-8."""
    message = Message()
    message["content-type"] = content_type or "application/octet-stream"
    name = message.get_param("charset")
    name = name if isinstance(name, str) and name else "utf-8"
    try:
        "".encode(name)
    except LookupError:
        return "utf-8"
    return name


@dataclass(frozen=True)
class AsyncResponse:
    """An answer of `CustomTokenAsyncHook.run`, its body read: nothing to await, nothing to close.

    `url` is the URL requested (endpoint and query parameters), without the token or the request
    parameters the connection adds.
    """

    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes = field(repr=False)
    url: str
    method: str

    @property
    def status_code(self) -> int:
        """`status`, under requests' name."""
        return self.status

    @property
    def ok(self) -> bool:
        return self.status < 400

    def text(self) -> str:
        """The body as text, in the charset its Content-Type names (UTF-8 by default)."""
        return self.content.decode(charset(self.headers.get("content-type")), "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json_module.loads(self.text())


class CustomTokenAsyncHook(_CustomTokenBaseHook):
    """`CustomTokenHook` for async code: the triggers use it, and so can your own triggers.

    The token is fetched, cached (process, host and shared caches), injected and refreshed on
    `refresh_on` exactly as the sync hook does, over aiohttp, without blocking the event loop; the
    connection's `request_retries` and transport settings apply. Like Airflow's `HttpAsyncHook`.

    :param custom_token_conn_id: conn id of a `custom_token` connection (a connected account).
    :param integration_parameters: values for `{placeholders}`, over the connection's own.

    ``async with hook.session():`` keeps one aiohttp session for several requests (`run` uses it while it
    is open); without it, each `run` opens and closes its own.
    """

    def __init__(
        self,
        custom_token_conn_id: str = _CustomTokenBaseHook.default_conn_name,
        integration_parameters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(custom_token_conn_id, integration_parameters, **kwargs)
        self._loaded: tuple[Settings, ConnectedAccount] | None = None
        self._source: TokenSource | None = None
        self._client: AsyncCustomTokenClient | None = None

    def __repr__(self) -> str:
        return f"<CustomTokenAsyncHook conn_id={self.custom_token_conn_id!r}>"

    # -- the connected account ----------------------------------------------------------------
    async def get_account(self) -> ConnectedAccount:
        """The validated account (shared by the hooks of this event loop, read again after
        `connections.ACCOUNT_TTL` seconds); raises `ConfigurationError` listing every problem."""
        settings, account = await connections.shared_account(
            self.custom_token_conn_id, self.integration_parameters
        )
        if self._loaded is None or self._loaded[1] is not account:
            await redaction.aregister(*account.secrets)  # the password and secret-named parameters
            self._loaded, self._source = (settings, account), None
        return account

    @property
    def secrets(self) -> tuple[str, ...]:
        """What a message or an event must never show: every secret known to this process, and the
        account's (once loaded)."""
        own = self._loaded[1].secrets if self._loaded is not None else ()
        return (*redaction.known(), *own)

    async def get_token_source(self) -> TokenSource:
        """Where the account's tokens come from (caches, else a token request)."""
        account = await self.get_account()
        if self._source is None:
            assert self._loaded is not None
            self._source = TokenSource(account, self._loaded[0])
        return self._source

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncCustomTokenClient]:
        """One aiohttp session (an `AsyncCustomTokenClient`) for the requests of this block."""
        async with AsyncCustomTokenClient(await self.get_token_source()) as client:
            outer, self._client = self._client, client
            try:
                yield client
            finally:
                self._client = outer

    # -- public API ---------------------------------------------------------------------------
    async def get_token(self) -> str:
        """The current token: from the process, host or shared cache, or a new token request."""
        if self._client is not None:
            return await self._client.get_token()
        async with self.session() as client:
            return await client.get_token()

    async def run(
        self,
        endpoint: str,
        method: str = "GET",
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        extra_options: Mapping[str, Any] | None = None,
    ) -> AsyncResponse:
        """One authenticated request to `host` + `endpoint`, its body read; raises `RequestError` for a
        status >= 400 (unless `extra_options={"check_response": False}`), like `CustomTokenHook.run`.

        Placeholders resolve in the endpoint, headers and query parameters (never in bodies).
        `extra_options`: `check_response`, `timeout`.
        """
        options = dict(extra_options or {})
        if options.keys() - {"check_response"}:  # `check_response` alone is always valid
            self._refuse(request_options.extra_options_problems(options, "async"))
        if self._client is None:
            async with self.session():
                return await self.run(
                    endpoint, method, params=params, headers=headers, data=data, json=json,
                    extra_options=options,
                )  # fmt: skip
        client = self._client
        request = client.prepare(method, endpoint, params=params, headers=headers, data=data, json=json)
        timeout = options.get("timeout")
        answer = await client.send(request, float(timeout) if timeout else None)
        response = AsyncResponse(
            status=answer.status,
            reason=answer.reason,
            headers=CaseInsensitiveDict(answer.headers),
            content=answer.body,
            url=request.url,  # the endpoint and query parameters, without the connection's credentials
            method=request.method,
        )
        if options.get("check_response", True) and response.status >= 400:
            raise RequestError(self.describe_failure(response), status=response.status)
        return response

    def describe_failure(self, response: AsyncResponse) -> str:
        """A secret-free sentence for a failed response: request, status, body excerpt, retry note."""
        secrets = self.secrets
        account = self._loaded[1] if self._loaded is not None else None
        own = account.secrets if account is not None else ()
        url = redaction.redact_string(masked_url(response.url, own), secrets)
        body = excerpt(response.content[:ERROR_BODY_BYTES], tuple(secrets))
        message = f"{response.method} {url} answered {response.status} {response.reason or ''}".rstrip()
        if body:
            message += f"; body: {body}"
        if account is not None and response.status in account.refresh_on:
            message += " (after fetching a new token and retrying once)"
        return message
