"""Triggers for the deferrable operator and sensor, and for an `AssetWatcher`: authenticated requests,
fully async, in the triggerer.

Every trigger sends through `hooks.custom_token.CustomTokenAsyncHook`: the triggers of one event loop
share its connection lookup (`connections.shared_account`), and it fetches, caches and refreshes the token
(`refresh_on`) and retries (`request_retries`) exactly as the sync hook does. A trigger serializes only
the conn id, the request and the task's parameters, never a token.

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
import inspect
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from airflow_custom_token import options as request_options
from airflow_custom_token import redaction
from airflow_custom_token.aimport import aimport
from airflow_custom_token.compat import BaseTrigger, TriggerEvent
from airflow_custom_token.errors import ConfigurationError, CustomTokenError

if TYPE_CHECKING:
    import requests

    from airflow_custom_token.hooks.custom_token import AsyncResponse, CustomTokenAsyncHook

__all__ = [
    "CustomTokenHttpEventTrigger",
    "CustomTokenHttpSensorTrigger",
    "CustomTokenHttpTrigger",
    "response_from_event",
    "response_to_event",
]

#: Seconds between two INFO lines of one sensor trigger's "not yet" answers (the others are DEBUG).
NOT_YET_LOG_EVERY = 60.0

#: The hooks and the transport: the first trigger to run imports them (`aimport`). The triggerer imports
#: this module, and makes its triggers, in its event loop: importing them there (0.1 to 0.3 s) would stall
#: every trigger of the loop, so this module imports only what a trigger's description needs.
HOOKS_MODULE = "airflow_custom_token.hooks.custom_token"


def response_to_event(response: AsyncResponse, *, secrets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A response as a JSON-able, redacted dict: status, reason, headers, text, url, method."""
    data = {
        "status": response.status,
        "reason": response.reason,
        "headers": dict(response.headers),
        "text": response.text(),
        "url": response.url,
        "method": response.method,
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
        problems = request_options.extra_options_problems(self.extra_options, "async")
        if problems:
            raise ValueError("; ".join(problems))

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

    async def _hook(self) -> CustomTokenAsyncHook:
        """The async hook of the account: the triggers of one event loop share its account lookup."""
        hooks = await aimport(HOOKS_MODULE)
        hook: CustomTokenAsyncHook = hooks.CustomTokenAsyncHook(
            self.custom_token_conn_id, self.integration_parameters
        )
        return hook

    async def _send(self, hook: CustomTokenAsyncHook) -> dict[str, Any]:
        """Send the request once (the hook refreshes the token once on `refresh_on`, and retries as the
        connection's `request_retries` says); the answer as an event's `response`, whatever its status."""
        return response_to_event(await self._answer(hook), secrets=hook.secrets)

    async def _answer(self, hook: CustomTokenAsyncHook) -> AsyncResponse:
        """`_send`'s answer, before it becomes an event's `response`."""
        options: dict[str, Any] = {"check_response": False}
        if self.extra_options.get("timeout"):
            options["timeout"] = self.extra_options["timeout"]
        return await hook.run(
            self.endpoint,
            self.method,
            params=self.query_params,
            headers=self.headers,
            data=self.data,
            json=self.json,
            extra_options=options,
        )

    def _event(self, payload: dict[str, Any], hook: CustomTokenAsyncHook) -> TriggerEvent:
        event: dict[str, Any] = redaction.redact({**payload, "carry": self.carry}, hook.secrets)
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
        hook = await self._hook()
        try:
            async with hook.session():
                payload = {"status": "success", "response": await self._send(hook)}
        except Exception as exc:
            payload = {"status": "error", "message": _message(exc)}
        yield self._event(payload, hook)


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
        hook = await self._hook()
        try:
            async with hook.session():
                pokes, logged = 0, -math.inf
                while True:
                    answer = await self._answer(hook)
                    if answer.status not in self.not_yet_codes:
                        break  # only this answer becomes the event: the "not yet" ones are never redacted
                    status = answer.status
                    del answer  # not held while waiting: a thousand triggers' answers would outlive two GCs
                    pokes += 1
                    # the first "not yet", then one line a minute at INFO (1000 triggers poking every 5 s
                    # would write 200 lines a second, and the logging cost as much as the pokes)
                    level, now = logging.DEBUG, time.monotonic()
                    if now - logged >= NOT_YET_LOG_EVERY:
                        level, logged = logging.INFO, now
                    self.log.log(
                        level,
                        "%s %s answered %s (not yet, %d so far); next request in %s s",
                        self.method,
                        self.endpoint,
                        status,
                        pokes,
                        self.poke_interval,
                    )
                    await asyncio.sleep(self.poke_interval)
            payload = {"status": "success", "response": response_to_event(answer, secrets=hook.secrets)}
        except Exception as exc:
            payload = {"status": "error", "message": _message(exc)}
        yield self._event(payload, hook)


# ---------------------------------------------------------------------------------------------------
# Event-driven scheduling: an `AssetWatcher`'s trigger

if TYPE_CHECKING:
    from airflow_custom_token.compat import BaseEventTrigger
else:
    try:
        from airflow_custom_token.compat import BaseEventTrigger
    except ImportError:  # every Airflow 3 release has it (3.0 included): say so rather than break the module

        class BaseEventTrigger(BaseTrigger):
            def __init__(self, **kwargs: Any) -> None:
                raise ImportError(
                    "CustomTokenHttpEventTrigger needs airflow.triggers.base.BaseEventTrigger (Airflow 3.0 "
                    "or later), which this Airflow lacks: no AssetWatcher can use it here"
                )


ResponseCheck = Callable[[Any], Any]


class CustomTokenHttpEventTrigger(_RequestTrigger, BaseEventTrigger):
    """Poll an API with the account's token until a check says yes, then fire once: a trigger for an
    `AssetWatcher` (event-driven scheduling), like Airflow's `HttpEventTrigger`.

    :param custom_token_conn_id: the connected account (a `custom_token` connection).
    :param endpoint: path on the connection's host (or an absolute URL on an allowed origin).
    :param method: HTTP method (GET by default; each poll sends it again: keep it idempotent).
    :param query_params: query string parameters; `{placeholders}` resolve.
    :param headers: request headers; `{placeholders}` resolve.
    :param data: form fields (dict) or a raw body (str).
    :param integration_parameters: values for `{placeholders}`, over the connection's own.
    :param response_check_path: dotted import path of `check(response) -> bool` (sync or async), which
        the triggerer imports; it receives a `requests.Response` (the answer, tokens redacted), as the
        sensor's `response_check` does. None: the first 2xx answer passes.
    :param poll_interval: seconds between requests.

    The event is ``{"status": "success", "response": {status, reason, headers, text, url, method}}``,
    redacted, as the other triggers' events. An error while polling (no answer, a failed token request,
    a connection being fixed, a check that raised) is logged and polling goes on; only a
    `response_check_path` that cannot be imported ends the trigger, with an error. It serializes its
    arguments only, never a token.
    """

    def __init__(
        self,
        custom_token_conn_id: str,
        endpoint: str,
        method: str = "GET",
        query_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        data: Any = None,
        integration_parameters: Mapping[str, Any] | None = None,
        response_check_path: str | None = None,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__(
            custom_token_conn_id,
            endpoint=endpoint,
            method=method,
            query_params=query_params,
            headers=headers,
            data=data,
            integration_parameters=integration_parameters,
        )
        path = (response_check_path or "").strip() or None
        if path is not None and not _DOTTED.fullmatch(path):
            raise ValueError(
                "response_check_path: expected the dotted import path of a function, e.g. "
                f"'my_package.checks.report_is_ready'; found {path!r}"
            )
        if float(poll_interval) <= 0:
            raise ValueError(f"poll_interval: expected a positive number of seconds, found {poll_interval}")
        self.response_check_path = path
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.{type(self).__name__}", {
            "custom_token_conn_id": self.custom_token_conn_id,
            "endpoint": self.endpoint,
            "method": self.method,
            "query_params": self.query_params,
            "headers": self.headers,
            "data": self.data,
            "integration_parameters": self.integration_parameters,
            "response_check_path": self.response_check_path,
            "poll_interval": self.poll_interval,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        check = await self._import_check()
        hook = await self._hook()
        while True:
            try:
                async with hook.session():
                    while (response := await self._poll(hook, check)) is None:
                        await asyncio.sleep(self.poll_interval)
            except Exception as exc:
                level = logging.ERROR if isinstance(exc, ConfigurationError) else logging.WARNING
                message = redaction.redact_string(_message(exc), hook.secrets)
                self.log.log(
                    level, "Polling %s failed: %s; next request in %s s", self, message, self.poll_interval
                )
                await asyncio.sleep(self.poll_interval)
                continue
            payload = redaction.redact({"status": "success", "response": response}, hook.secrets)
            yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
            return

    async def _poll(self, hook: CustomTokenAsyncHook, check: ResponseCheck | None) -> dict[str, Any] | None:
        """One request: its (redacted) answer when the check passes, else None."""
        response = await self._send(hook)
        if check is None:
            passed = 200 <= int(response["status"]) < 300
        else:
            rebuilt = response_from_event(response)
            if inspect.iscoroutinefunction(check):
                result = await check(rebuilt)
            else:  # a plain function may block (it is the user's): never on the event loop
                result = await asyncio.to_thread(check, rebuilt)
                if inspect.isawaitable(result):
                    result = await result
            passed = bool(result)
        if passed:
            return response
        self.log.info(
            "%s %s answered %s: not yet; next request in %s s",
            self.method,
            self.endpoint,
            response["status"],
            self.poll_interval,
        )
        return None

    async def _import_check(self) -> ResponseCheck | None:
        """The function at `response_check_path` (imported in a worker thread: importing blocks)."""
        path = self.response_check_path
        if path is None:
            return None
        module_name, _, name = path.rpartition(".")
        try:
            check = getattr(await aimport(module_name), name)
        except (ImportError, AttributeError) as exc:
            raise ImportError(
                f"response_check_path: cannot import {path!r} in the triggerer ({type(exc).__name__}: "
                f"{exc}); expected the dotted path of a function in a module the triggerer can import"
            ) from None
        if not callable(check):
            raise TypeError(f"response_check_path: {path!r} is a {type(check).__name__}, not a function")
        return cast(ResponseCheck, check)


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
