"""Triggers for the deferrable operator and sensor: authenticated requests, fully async, in the triggerer.

Both triggers build the connected account from the connections (`spec.adrive_chain`, driven by
`BaseHook.aget_connection`), and send through `aio.AsyncCustomTokenClient`, which fetches, caches and
refreshes the token (`refresh_on`) exactly as the sync hook does. A trigger serializes only the conn id,
the request and the task's parameters, never a token.

Events are stored in the metadata database, so each one passes through `redaction.redact` first:

- ``{"status": "success", "response": {...}, "carry": {...}}``: the API answered (any status; the
  worker applies `check_response`, `response_check` and `response_filter`). The response is
  ``{status, reason, headers, text, url, method}`` with the text and headers redacted, and becomes a
  `requests.Response` again on the worker (`response_from_event`).
- ``{"status": "error", "message": "...", "carry": {...}}``: no answer (configuration, token request,
  network), with a secret-free message.

``carry`` is state the worker needs when it resumes (previous pages, when the sensor started). The
trigger hands it back unchanged in its event rather than relying on the deferral's ``next_kwargs``,
which ``airflow dags test`` replaces with the event.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_custom_token import redaction
from airflow_custom_token.errors import CustomTokenError
from airflow_custom_token.spec import ConnectedAccount, adrive_chain, build_account

if TYPE_CHECKING:
    import requests

    from airflow_custom_token.aio import AsyncCustomTokenClient
    from airflow_custom_token.flow import HttpResponse
    from airflow_custom_token.settings import Settings

# The extra_options a deferred request honours; the others only make sense for `requests`.
DEFERRABLE_EXTRA_OPTIONS = frozenset({"check_response", "timeout"})


async def aconnected_account(
    conn_id: str, integration_parameters: Mapping[str, Any] | None, settings: Settings
) -> ConnectedAccount:
    """The validated connected account, its connections read with `BaseHook.aget_connection`."""
    from airflow_custom_token.compat import alookup_connection

    chain = await adrive_chain(conn_id, alookup_connection)
    return build_account(chain, integration_parameters, redirect_uris=settings.redirect_uris)


# One triggerer loop runs many triggers of the same account; they share one connection lookup (single
# flight) and reuse it for ACCOUNT_TTL seconds, so a changed connection reaches new triggers soon.
ACCOUNT_TTL = 30.0
_accounts: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[tuple[Settings, ConnectedAccount]]]]
] = weakref.WeakKeyDictionary()


async def shared_account(
    conn_id: str, integration_parameters: Mapping[str, Any] | None
) -> tuple[Settings, ConnectedAccount]:
    """`load_settings()` and `aconnected_account(...)`, shared by the triggers of this event loop."""
    from airflow_custom_token.settings import load_settings

    loop = asyncio.get_running_loop()
    key = json.dumps([conn_id, integration_parameters or {}], sort_keys=True, default=str)
    entries = _accounts.setdefault(loop, {})
    entry = entries.get(key)
    if entry is None or time.monotonic() - entry[0] > ACCOUNT_TTL:

        async def load() -> tuple[Settings, ConnectedAccount]:
            settings = load_settings()
            return settings, await aconnected_account(conn_id, integration_parameters, settings)

        entry = (time.monotonic(), asyncio.ensure_future(load()))
        entries[key] = entry
    try:
        return await asyncio.shield(entry[1])
    except Exception:
        entries.pop(key, None)  # a failed lookup is not remembered
        raise


def response_to_event(
    response: HttpResponse, *, method: str, url: str, secrets: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """A response as a JSON-able, redacted dict: status, reason, headers, text, url, method."""
    text = response.body.decode(_charset(response.headers.get("content-type")), "replace")
    data = {
        "status": response.status,
        "reason": response.reason,
        "headers": dict(response.headers),
        "text": text,
        "url": url,
        "method": method,
    }
    redacted: dict[str, Any] = redaction.redact(data, secrets)
    return redacted


def response_from_event(data: Mapping[str, Any]) -> requests.Response:
    """Rebuild the `requests.Response` that `response_to_event` described (on the worker)."""
    import requests
    from requests.structures import CaseInsensitiveDict

    response = requests.Response()
    response.status_code = int(data["status"])
    response.reason = str(data.get("reason") or "")
    response.headers = CaseInsensitiveDict(data.get("headers") or {})
    response.encoding = "utf-8"
    response._content = str(data.get("text") or "").encode("utf-8")
    response.url = str(data.get("url") or "")
    request = requests.PreparedRequest()
    request.method = str(data.get("method") or "GET")
    request.url = response.url
    request.headers = CaseInsensitiveDict()
    response.request = request
    return response


def _charset(content_type: str | None) -> str:
    message = Message()
    message["content-type"] = content_type or "application/octet-stream"
    charset = message.get_param("charset")
    name = charset if isinstance(charset, str) and charset else "utf-8"
    try:
        "".encode(name)
    except LookupError:
        return "utf-8"
    return name


def _message(exc: BaseException) -> str:
    if isinstance(exc, CustomTokenError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


class _RequestTrigger(BaseTrigger):
    """What both triggers share: one authenticated request, described without any token."""

    def __init__(
        self,
        custom_token_conn_id: str,
        endpoint: str | None = None,
        method: str = "GET",
        query_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        integration_parameters: Mapping[str, Any] | None = None,
        extra_options: Mapping[str, Any] | None = None,
        carry: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.custom_token_conn_id = custom_token_conn_id
        self.endpoint = endpoint or ""
        self.method = method.upper()
        self.query_params = dict(query_params or {})
        self.headers = dict(headers or {})
        self.data = data
        self.json = json
        self.integration_parameters = dict(integration_parameters or {})
        self.extra_options = dict(extra_options or {})
        self.carry = dict(carry or {})
        unsupported = sorted(set(self.extra_options) - DEFERRABLE_EXTRA_OPTIONS)
        if unsupported:
            raise ValueError(
                "extra_options: expected keys among "
                f"{', '.join(sorted(DEFERRABLE_EXTRA_OPTIONS))} in deferrable mode; found {unsupported}"
            )

    def _kwargs(self) -> dict[str, Any]:
        return {
            "custom_token_conn_id": self.custom_token_conn_id,
            "endpoint": self.endpoint,
            "method": self.method,
            "query_params": self.query_params,
            "headers": self.headers,
            "data": self.data,
            "json": self.json,
            "integration_parameters": self.integration_parameters,
            "extra_options": self.extra_options,
            "carry": self.carry,
        }

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.method} {self.endpoint!r} conn_id={self.custom_token_conn_id!r}>"
        )

    async def _client(self) -> AsyncCustomTokenClient:
        from airflow_custom_token.aio import AsyncCustomTokenClient
        from airflow_custom_token.source import TokenSource

        settings, account = await shared_account(self.custom_token_conn_id, self.integration_parameters)
        return AsyncCustomTokenClient(TokenSource(account, settings))

    async def _send(self, client: AsyncCustomTokenClient) -> dict[str, Any]:
        """Send the request once (the client refreshes the token once on `refresh_on`)."""
        url, _, params = client.account.render_request(self.endpoint, None, self.query_params)
        timeout = self.extra_options.get("timeout")
        response = await client.request(
            self.method,
            self.endpoint,
            params=self.query_params,
            headers=self.headers,
            data=self.data,
            json=self.json,
            timeout=float(timeout) if timeout else None,
        )
        if params:
            url += ("&" if "?" in url else "?") + urlencode({str(k): str(v) for k, v in params.items()})
        return response_to_event(response, method=self.method, url=url, secrets=self._secrets(client))

    @staticmethod
    def _secrets(client: AsyncCustomTokenClient | None) -> list[str]:
        return [*redaction.known(), *(client.account.secrets if client is not None else ())]

    def _event(self, payload: dict[str, Any], client: AsyncCustomTokenClient | None) -> TriggerEvent:
        event: dict[str, Any] = redaction.redact({**payload, "carry": self.carry}, self._secrets(client))
        return TriggerEvent(event)  # type: ignore[no-untyped-call]


class CustomTokenHttpTrigger(_RequestTrigger):
    """Send one authenticated request and fire with its (redacted) response.

    Pagination is the operator's: it runs `pagination_function` on the worker after each page and
    defers again with the next page's request, so one trigger is one request.

    :param custom_token_conn_id: the connected account (a `custom_token` connection).
    :param endpoint: path on the connection's host (or an absolute URL on an allowed origin).
    :param method: HTTP method.
    :param query_params: query string parameters; `{placeholders}` resolve.
    :param headers: request headers; `{placeholders}` resolve.
    :param data: form fields (dict) or a raw body (str).
    :param json: a JSON body.
    :param integration_parameters: values for `{placeholders}`, over the connection's own.
    :param extra_options: `timeout` and `check_response` (the latter is applied by the worker).
    :param carry: JSON-able state handed back unchanged in the event.
    """

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.{type(self).__name__}", self._kwargs()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client: AsyncCustomTokenClient | None = None
        try:
            client = await self._client()
            async with client:
                payload = {"status": "success", "response": await self._send(client)}
        except Exception as exc:
            payload = {"status": "error", "message": _message(exc)}
        yield self._event(payload, client)


class CustomTokenHttpSensorTrigger(_RequestTrigger):
    """Poll until the API answers something other than "not yet", then fire with that response.

    "Not yet" is a status in `not_yet_codes` (404 by default). Any other answer, an error status
    included, ends the wait: the worker decides (response check, or failing on an error status).

    :param poke_interval: seconds between requests while the answer is "not yet".
    :param not_yet_codes: statuses that mean "not yet".
    :param first_poke_delay: seconds to wait before the first request (the sensor's poke interval
        when it defers again after its response check said no).

    The other parameters are those of `CustomTokenHttpTrigger`.
    """

    def __init__(
        self,
        custom_token_conn_id: str,
        *,
        poke_interval: float = 60.0,
        not_yet_codes: list[int] | tuple[int, ...] = (404,),
        first_poke_delay: float = 0.0,
        **request: Any,
    ) -> None:
        super().__init__(custom_token_conn_id, **request)
        self.poke_interval = float(poke_interval)
        self.not_yet_codes = [int(code) for code in not_yet_codes]
        self.first_poke_delay = float(first_poke_delay)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.{type(self).__name__}", {
            **self._kwargs(),
            "poke_interval": self.poke_interval,
            "not_yet_codes": self.not_yet_codes,
            "first_poke_delay": self.first_poke_delay,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.first_poke_delay > 0:
            await asyncio.sleep(self.first_poke_delay)
        client: AsyncCustomTokenClient | None = None
        try:
            client = await self._client()
            async with client:
                while True:
                    response = await self._send(client)
                    if response["status"] not in self.not_yet_codes:
                        break
                    self.log.info(
                        "%s %s answered %s (not yet); next request in %s s",
                        self.method,
                        self.endpoint,
                        response["status"],
                        self.poke_interval,
                    )
                    await asyncio.sleep(self.poke_interval)
            payload = {"status": "success", "response": response}
        except Exception as exc:
            payload = {"status": "error", "message": _message(exc)}
        yield self._event(payload, client)
