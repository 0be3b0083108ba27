"""`CustomTokenNotifier`: Airflow's `HttpNotifier`, authenticated with the connection's custom token.

For `on_failure_callback`, `on_success_callback` and the other callbacks of tasks and DAGs (sync:
`notify`, through `CustomTokenHook`), and for notifiers run in the triggerer (async: `async_notify`,
through `CustomTokenAsyncHook`, e.g. deadline alerts). Its fields are templated with the callback's
context before it sends; a status >= 400 raises `RequestError` (Airflow logs a callback's failure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_custom_token.compat import BaseNotifier

if TYPE_CHECKING:
    from airflow_custom_token.compat import Context

__all__ = ["CustomTokenNotifier", "send_custom_token_notification"]


class CustomTokenNotifier(BaseNotifier):
    """Send one authenticated request when a callback fires (POST by default).

    :param custom_token_conn_id: the connected account, a `custom_token` connection. (templated)
    :param endpoint: path on the connection's host, or an absolute URL on an allowed origin. (templated)
    :param method: HTTP method, default POST.
    :param json: a JSON body. (templated)
    :param data: form fields (dict) or a raw body (str). (templated)
    :param headers: request headers. (templated)
    :param query_params: query string parameters. (templated)
    :param integration_parameters: values for `{placeholders}`, over the connection's. (templated)

    For example ``on_failure_callback=CustomTokenNotifier("acme_prod", "/api/v1/alerts",
    json={"dag": "{{ dag.dag_id }}", "run": "{{ run_id }}"})``.
    """

    template_fields: Sequence[str] = (
        "custom_token_conn_id",
        "endpoint",
        "json",
        "data",
        "headers",
        "query_params",
        "integration_parameters",
    )

    def __init__(
        self,
        custom_token_conn_id: str,
        endpoint: str,
        method: str = "POST",
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, Any] | None = None,
        query_params: Mapping[str, Any] | None = None,
        integration_parameters: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.custom_token_conn_id = custom_token_conn_id
        self.endpoint = endpoint
        self.method = method.upper()
        self.json = json
        self.data = data
        self.headers = dict(headers or {})
        self.query_params = dict(query_params or {})
        self.integration_parameters = dict(integration_parameters or {})

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.method} {self.endpoint!r} conn_id={self.custom_token_conn_id!r}>"
        )

    def _request(self) -> dict[str, Any]:
        """The request's parts, as both hooks' `run` takes them."""
        return {"params": self.query_params, "headers": self.headers, "data": self.data, "json": self.json}

    def notify(self, context: Context) -> None:
        """Send the request (sync, with requests); raise `RequestError` for a status >= 400."""
        # imported when the task runs, not at each DAG parse: the hook costs ~110 ms (requests, caches)
        from airflow_custom_token.hooks.custom_token import CustomTokenHook

        hook = CustomTokenHook(self.custom_token_conn_id, self.integration_parameters)
        response = hook.run(self.endpoint, self.method, **self._request())
        self.log.info(
            "Notification sent: %s %s answered %s", self.method, self.endpoint, response.status_code
        )

    async def async_notify(self, context: Context) -> None:
        """Send the request (async, with aiohttp: the triggerer); raise `RequestError` for >= 400."""
        # imported when the task runs, not at each DAG parse: the hook costs ~110 ms (requests, caches)
        from airflow_custom_token.hooks.custom_token import CustomTokenAsyncHook

        hook = CustomTokenAsyncHook(self.custom_token_conn_id, self.integration_parameters)
        response = await hook.run(self.endpoint, self.method, **self._request())
        self.log.info("Notification sent: %s %s answered %s", self.method, self.endpoint, response.status)


send_custom_token_notification = CustomTokenNotifier
