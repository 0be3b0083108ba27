"""`CustomTokenHttpOperator`: Airflow's `HttpOperator`, authenticated with the connection's custom token.

A DAG author switches from `HttpOperator` by changing the class name and `http_conn_id` to
`custom_token_conn_id`; the query string is `query_params` (`params` belongs to BaseOperator), and the
method defaults to GET.

Sync mode sends through `CustomTokenHook`; deferrable mode sends each request from the triggerer
(`CustomTokenHttpTrigger`). `pagination_function` runs on the worker after each page, which then
defers again for the next page. In both modes `response_check` and `response_filter` receive a
`requests.Response` (in deferrable mode, rebuilt from the trigger's event, with the token redacted),
and the return value is redacted before it becomes an XCom.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_custom_token import options as request_options
from airflow_custom_token import redaction
from airflow_custom_token.compat import AirflowException, BaseOperator, call_with_context, config_getboolean
from airflow_custom_token.errors import CustomTokenError, RequestError
from airflow_custom_token.fields import DEFAULT_CONN_ID
from airflow_custom_token.options import IDEMPOTENT_METHODS

if TYPE_CHECKING:
    import requests

    from airflow_custom_token.compat import Context
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

PAGE_KEYS = frozenset({"endpoint", "data", "json", "query_params", "headers", "extra_options"})


def merge(base: Any, override: Any) -> Any:
    """`override` over `base`: dicts merge key by key (recursively), anything else replaces."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(out.get(key), value) if key in out else value
        return out
    return base if override is None else override


class CustomTokenHttpOperator(BaseOperator):
    """Call an API endpoint with the connected account's token; return the response text.

    :param custom_token_conn_id: the connected account, a `custom_token` connection. (templated)
    :param endpoint: path on the connection's host, or an absolute URL on an allowed origin. (templated)
    :param method: HTTP method, default GET.
    :param data: form fields (dict) or a raw body (str). (templated)
    :param json: a JSON body. (templated)
    :param query_params: query string parameters. (templated)
    :param headers: request headers. (templated)
    :param integration_parameters: values for `{placeholders}`, over the connection's. (templated)
    :param response_check: `check(response, **context) -> bool`; False fails the task.
    :param response_filter: `filter(response, **context)`; its result is the return value.
    :param pagination_function: `next(response)` returns the next request's overrides (any of
        `endpoint`, `data`, `json`, `query_params`, `headers`, `extra_options`; dicts merge with the
        operator's own) or None to stop. With it, the check and the filter receive the list of
        responses, and the default return value is the list of texts.
    :param log_response: log the (redacted) response text.
    :param extra_options: `requests` options: `check_response` (default True: a status >= 400 fails
        the task), `timeout`, `verify`, `allow_redirects`, `stream`, `proxies`, `cert`. Deferrable mode
        supports `check_response` and `timeout`.
    :param deferrable: send the requests from the triggerer.
    :param warn_on_non_idempotent: warn when a deferrable request is not idempotent (a triggerer
        restart may send it twice).
    :param request_kwargs: more arguments for requests (sync mode): `files` (a multipart upload),
        `cookies`, as `HttpOperator`'s.
    :param retry_args: `tenacity.Retrying` arguments (sync mode): each request is retried as they say
        (`CustomTokenHook.run_with_advanced_retry`), as `HttpOperator`'s. The connection's
        `request_retries` works in both modes.
    """

    conn_id_field = "custom_token_conn_id"
    template_fields: Sequence[str] = (
        "custom_token_conn_id",
        "endpoint",
        "data",
        "json",
        "query_params",
        "headers",
        "integration_parameters",
    )
    template_fields_renderers = {
        "headers": "json",
        "data": "py",
        "json": "json",
        "query_params": "json",
        "integration_parameters": "json",
    }
    template_ext: Sequence[str] = ()
    ui_color = "#f4a460"

    def __init__(
        self,
        *,
        custom_token_conn_id: str = DEFAULT_CONN_ID,
        endpoint: str | None = None,
        method: str = "GET",
        data: Any = None,
        json: Any = None,
        query_params: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        integration_parameters: dict[str, Any] | None = None,
        response_check: Callable[..., bool] | None = None,
        response_filter: Callable[..., Any] | None = None,
        pagination_function: Callable[..., Any] | None = None,
        log_response: bool = False,
        extra_options: dict[str, Any] | None = None,
        deferrable: bool = config_getboolean("operators", "default_deferrable", fallback=False),
        warn_on_non_idempotent: bool = True,
        request_kwargs: dict[str, Any] | None = None,
        retry_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.custom_token_conn_id = custom_token_conn_id
        self.endpoint = endpoint
        self.method = method.upper()
        self.data = data
        self.json = json
        self.query_params = query_params or {}
        self.headers = headers or {}
        self.integration_parameters = integration_parameters or {}
        self.response_check = response_check
        self.response_filter = response_filter
        self.pagination_function = pagination_function
        self.log_response = log_response
        self.extra_options = extra_options or {}
        self.deferrable = deferrable
        self.warn_on_non_idempotent = warn_on_non_idempotent
        self.request_kwargs = request_kwargs or {}
        self.retry_args = retry_args or {}
        problems = request_options.request_kwargs_problems(self.request_kwargs)
        if problems:
            raise ValueError(f"{self.task_id}: {'; '.join(problems)}")
        if deferrable and (self.request_kwargs or self.retry_args):
            given = " and ".join(name for name in ("request_kwargs", "retry_args") if getattr(self, name))
            raise ValueError(
                f"{self.task_id}: {given} work in sync mode only, not with deferrable=True (the triggerer "
                "sends the request with aiohttp; for retries there, set the connection's request_retries)"
            )
        problems = request_options.extra_options_problems(
            self.extra_options, "async" if deferrable else "sync"
        )
        if problems:
            hint = (
                " (with deferrable=True the triggerer follows redirects, verifies TLS as the connection's "
                "`verify` says and reads the whole body)"
                if deferrable
                else ""
            )
            raise ValueError(f"{self.task_id}: {'; '.join(problems)}{hint}")

    @cached_property
    def hook(self) -> CustomTokenHook:
        # imported when the task runs, not at each DAG parse: the hook costs ~110 ms (requests, caches)
        from airflow_custom_token.hooks.custom_token import CustomTokenHook

        return CustomTokenHook(self.custom_token_conn_id, self.integration_parameters)

    # -- the request --------------------------------------------------------------------------
    def request_args(self, page: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The request: the operator's arguments, with a page's overrides merged in."""
        args: dict[str, Any] = {
            "endpoint": self.endpoint or "",
            "method": self.method,
            "query_params": self.query_params,
            "headers": self.headers,
            "data": self.data,
            "json": self.json,
            "extra_options": self.extra_options,
        }
        if page:
            unknown = sorted(set(page) - PAGE_KEYS)
            if unknown:
                raise ValueError(
                    "pagination_function: expected a dict with keys among "
                    f"{', '.join(sorted(PAGE_KEYS))}; found {unknown}"
                )
            for key, value in page.items():
                args[key] = value if key == "endpoint" else merge(args[key], value)
            args["endpoint"] = args["endpoint"] or self.endpoint or ""
        return args

    def _run(self, args: Mapping[str, Any]) -> requests.Response:
        request = {
            "params": args["query_params"],
            "headers": args["headers"],
            "data": args["data"],
            "json": args["json"],
            "extra_options": args["extra_options"],
            **self.request_kwargs,
        }
        if self.retry_args:
            return self.hook.run_with_advanced_retry(
                self.retry_args, args["endpoint"], args["method"], **request
            )
        return self.hook.run(args["endpoint"], args["method"], **request)

    # -- sync ---------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self._warn_if_not_idempotent()
            self._defer(self.request_args(), pages=[])
        self.log.info("Calling %s %s", self.method, self.endpoint or "/")
        response = self._run(self.request_args())
        if not self.pagination_function:
            return self.process_response(context, response)
        responses = [response]
        while page := self.pagination_function(response):
            response = self._run(self.request_args(page))
            responses.append(response)
        return self.process_response(context, responses)

    # -- deferrable ---------------------------------------------------------------------------
    def _warn_if_not_idempotent(self) -> None:
        if self.warn_on_non_idempotent and self.method not in IDEMPOTENT_METHODS:
            self.log.warning(
                "%s with deferrable=True and method=%s may send the request twice if the triggerer "
                "restarts; use an idempotent method, or set warn_on_non_idempotent=False.",
                type(self).__name__,
                self.method,
            )

    def _defer(self, args: Mapping[str, Any], pages: list[dict[str, Any]]) -> NoReturn:
        # imported when the task defers or resumes, not at each DAG parse: triggers load the hooks (~170 ms)
        from airflow_custom_token.triggers.http import CustomTokenHttpTrigger

        options = dict(args["extra_options"] or {})
        self.defer(
            trigger=CustomTokenHttpTrigger(
                custom_token_conn_id=self.custom_token_conn_id,
                endpoint=args["endpoint"],
                method=args["method"],
                query_params=args["query_params"],
                headers=args["headers"],
                data=args["data"],
                json=args["json"],
                integration_parameters=self.integration_parameters,
                extra_options=options,
                carry={"pages": pages, "check_response": bool(options.get("check_response", True))},
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: check the page, then defer for the next one or finish."""
        # imported when the task defers or resumes, not at each DAG parse: triggers load the hooks (~170 ms)
        from airflow_custom_token.triggers.http import response_from_event

        if event.get("status") != "success":
            raise CustomTokenError(str(event.get("message") or "the deferred request failed"))
        carry = event.get("carry") or {}
        response = response_from_event(event["response"])
        if carry.get("check_response", True) and response.status_code >= 400:
            raise RequestError(self.hook.describe_failure(response), status=response.status_code)
        if not self.pagination_function:
            return self.process_response(context, response)
        pages = [*carry.get("pages", []), event["response"]]
        page = self.pagination_function(response)
        if page:
            self._defer(self.request_args(page), pages=pages)
        return self.process_response(context, [response_from_event(p) for p in pages])

    # -- the result ---------------------------------------------------------------------------
    def process_response(
        self, context: Context, response: requests.Response | list[requests.Response]
    ) -> Any:
        """Log, check and filter the response(s); the result is redacted before it becomes an XCom."""
        texts: Any = [r.text for r in response] if isinstance(response, list) else response.text
        if self.log_response:
            self.log.info("Response: %s", redaction.redact(texts))
        if self.response_check and not call_with_context(self.response_check, response, context):
            raise AirflowException("Response check returned False.")
        value = call_with_context(self.response_filter, response, context) if self.response_filter else texts
        return redaction.redact(value)
