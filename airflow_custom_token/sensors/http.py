"""`CustomTokenHttpSensor`: Airflow's `HttpSensor`, authenticated with the connection's custom token.

Pokes until `response_check` says yes or, without one, until a 2xx answer. A status in
`response_error_codes_allowlist` (404 by default) means "not yet"; another status >= 400 fails the
task (unless `extra_options={"check_response": False}`). Works in poke, reschedule and deferrable mode.

Deferrable with a `response_check` (a callable cannot travel to the triggerer): the trigger waits for
an answer that is not "not yet", the worker runs the check, and when it says no the sensor defers
again after `poke_interval`, within the sensor's overall `timeout`. (Airflow's `HttpSensor` stops
deferring when given a check; this one keeps deferring.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_custom_token import options as request_options
from airflow_custom_token import redaction
from airflow_custom_token.compat import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    call_with_context,
    config_getboolean,
)
from airflow_custom_token.errors import CustomTokenError, RequestError
from airflow_custom_token.fields import DEFAULT_CONN_ID

if TYPE_CHECKING:
    import requests

    from airflow_custom_token.compat import Context
    from airflow_custom_token.hooks.custom_token import CustomTokenHook


class CustomTokenHttpSensor(BaseSensorOperator):
    """Wait until an API endpoint, called with the connected account's token, says the thing is ready.

    :param custom_token_conn_id: the connected account, a `custom_token` connection. (templated)
    :param endpoint: path on the connection's host, or an absolute URL on an allowed origin. (templated)
    :param method: HTTP method, default GET.
    :param query_params: query string parameters. (templated)
    :param headers: request headers. (templated)
    :param data: form fields (dict) or a raw body (str). (templated)
    :param integration_parameters: values for `{placeholders}`, over the connection's. (templated)
    :param response_check: `check(response, **context)` returning a bool or a `PokeReturnValue`
        (whose `xcom_value` becomes the sensor's return value, redacted).
    :param response_error_codes_allowlist: statuses that mean "not yet" (default ``["404"]``; ``[]``
        makes a 404 fail the task).
    :param extra_options: `requests` options, as for `CustomTokenHttpOperator`; with
        `check_response=False` no status fails the task and the check sees every answer.
    :param deferrable: wait in the triggerer (`poke_interval` and `timeout` apply; exponential backoff
        does not).
    """

    template_fields: Sequence[str] = (
        "custom_token_conn_id",
        "endpoint",
        "query_params",
        "headers",
        "data",
        "integration_parameters",
    )
    template_fields_renderers = {
        "headers": "json",
        "data": "py",
        "query_params": "json",
        "integration_parameters": "json",
    }

    def __init__(
        self,
        *,
        custom_token_conn_id: str = DEFAULT_CONN_ID,
        endpoint: str,
        method: str = "GET",
        query_params: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        data: Any = None,
        integration_parameters: dict[str, Any] | None = None,
        response_check: Callable[..., bool | PokeReturnValue] | None = None,
        response_error_codes_allowlist: Sequence[str | int] | None = None,
        extra_options: dict[str, Any] | None = None,
        deferrable: bool = config_getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.custom_token_conn_id = custom_token_conn_id
        self.endpoint = endpoint
        self.method = method.upper()
        self.query_params = query_params or {}
        self.headers = headers or {}
        self.data = data
        self.integration_parameters = integration_parameters or {}
        self.response_check = response_check
        codes = ("404",) if response_error_codes_allowlist is None else response_error_codes_allowlist
        self.response_error_codes_allowlist = tuple(str(code) for code in codes)
        self.extra_options = extra_options or {}
        self.deferrable = deferrable
        bad = [c for c in self.response_error_codes_allowlist if not c.isdigit()]
        if bad:
            raise ValueError(
                f"{self.task_id}: response_error_codes_allowlist: expected status codes, found {bad}"
            )
        problems = request_options.extra_options_problems(
            self.extra_options, "async" if deferrable else "sync"
        )
        if problems:
            raise ValueError(f"{self.task_id}: {'; '.join(problems)}")

    @cached_property
    def hook(self) -> CustomTokenHook:
        # imported when the task runs, not at each DAG parse: the hook costs ~110 ms (requests, caches)
        from airflow_custom_token.hooks.custom_token import CustomTokenHook

        return CustomTokenHook(self.custom_token_conn_id, self.integration_parameters)

    @property
    def not_yet_codes(self) -> list[int]:
        return [int(code) for code in self.response_error_codes_allowlist]

    # -- deciding -----------------------------------------------------------------------------
    def evaluate(self, response: requests.Response, context: Context) -> PokeReturnValue:
        """Done or not yet, for one answer; raises for an error status (with `check_response`)."""
        status = response.status_code
        if status in self.not_yet_codes:
            self.log.info("%s answered %s: not yet", self.endpoint, status)
            return PokeReturnValue(False)
        if self.extra_options.get("check_response", True) and status >= 400:
            raise RequestError(self.hook.describe_failure(response), status=status)
        if self.response_check is None:
            return PokeReturnValue(200 <= status < 300)
        result = call_with_context(self.response_check, response, context)
        if isinstance(result, PokeReturnValue):
            return PokeReturnValue(bool(result.is_done), redaction.redact(result.xcom_value))
        return PokeReturnValue(bool(result))

    def poke(self, context: Context) -> PokeReturnValue:
        self.log.info("Poking: %s %s", self.method, self.endpoint)
        response = self.hook.run(
            self.endpoint,
            self.method,
            params=self.query_params,
            headers=self.headers,
            data=self.data,
            extra_options={**self.extra_options, "check_response": False},
        )
        return self.evaluate(response, context)

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self._defer(started_at=time.time(), delay=0.0)
        return redaction.redact(super().execute(context))

    # -- deferrable ---------------------------------------------------------------------------
    def _defer(self, started_at: float, delay: float) -> NoReturn:
        # imported when the task defers or resumes, not at each DAG parse: triggers load the hooks (~170 ms)
        from airflow_custom_token.triggers.http import CustomTokenHttpSensorTrigger

        remaining = self.timeout - (time.time() - started_at)
        if remaining <= 0:
            message = f"Sensor has timed out; it has waited longer than its timeout of {self.timeout} s."
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        self.defer(
            trigger=CustomTokenHttpSensorTrigger(
                custom_token_conn_id=self.custom_token_conn_id,
                endpoint=self.endpoint,
                method=self.method,
                query_params=self.query_params,
                headers=self.headers,
                data=self.data,
                integration_parameters=self.integration_parameters,
                extra_options=self.extra_options,
                carry={"started_at": started_at},
                poke_interval=self.poke_interval,
                not_yet_codes=self.not_yet_codes,
                first_poke_delay=min(delay, remaining),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: check the answer; done, or defer again after poke_interval."""
        # imported when the task defers or resumes, not at each DAG parse: triggers load the hooks (~170 ms)
        from airflow_custom_token.triggers.http import response_from_event

        if event.get("status") != "success":
            raise CustomTokenError(str(event.get("message") or "the deferred request failed"))
        result = self.evaluate(response_from_event(event["response"]), context)
        if result:
            self.log.info("Success criteria met. Exiting.")
            return result.xcom_value
        started_at = float((event.get("carry") or {}).get("started_at") or time.time())
        self.log.info("Not done yet; deferring again in %s s", self.poke_interval)
        self._defer(started_at=started_at, delay=self.poke_interval)
