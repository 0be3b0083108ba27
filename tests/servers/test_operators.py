"""CustomTokenHttpOperator against the demo API: sync and deferrable, pagination, checks, redaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import CustomTokenError, RequestError
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.airflow_names import AirflowException, TaskDeferred
from tests.conftest import demo_extra
from tests.triggering import run_trigger

pytestmark = pytest.mark.usefixtures("task_runner_off")


def run_deferred(op: Any, context: dict[str, Any]) -> tuple[Any, int]:
    """Run a deferrable task to completion, resuming it after each trigger; returns (result, deferrals)."""
    deferrals = 0
    try:
        return op.execute(context), deferrals
    except TaskDeferred as deferred:
        current = deferred
    while True:
        deferrals += 1
        event = run_trigger(current.trigger)
        try:
            return getattr(op, current.method_name)(context, **(current.kwargs or {}), event=event), deferrals
        except TaskDeferred as again:
            current = again


def items_next_page(response: Any) -> dict[str, Any] | None:
    page = response.json()["next_page"]
    return {"query_params": {"page": page}} if page else None


def all_items(responses: list[Any]) -> list[int]:
    return [item["id"] for r in responses for item in r.json()["items"]]


@pytest.fixture(params=[False, True], ids=["sync", "deferrable"])
def deferrable(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def execute(op: Any, deferrable: bool) -> Any:
    return run_deferred(op, {})[0] if deferrable else op.execute({})


# -- both modes ------------------------------------------------------------------------------


def test_returns_text_and_authenticates(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="whoami", custom_token_conn_id=acme, endpoint="/api/v1/whoami", deferrable=deferrable
    )
    result = execute(op, deferrable)
    assert json.loads(result)["account"] == "dev"
    assert demo.stats()["authenticated"] == 1
    assert demo.stats()["token_requests"] == 1


def test_request_arguments_reach_the_server(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id=acme,
        endpoint="/api/v1/echo",
        method="POST",
        json={"rows": [1, 2]},
        query_params={"run": "r1"},
        headers={"X-Trace": "t-1"},
        deferrable=deferrable,
        warn_on_non_idempotent=False,
        response_filter=lambda response: response.json(),
    )
    seen = execute(op, deferrable)
    assert seen["method"] == "POST"
    assert seen["query"] == {"run": "r1"}
    assert json.loads(seen["body"]) == {"rows": [1, 2]}
    assert seen["headers"]["X-Trace"] == "t-1"
    assert demo.api_log[-1]["json"] == {"rows": [1, 2]}


def test_xcom_and_log_are_redacted(
    demo: DemoServer, acme: str, deferrable: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The echo endpoint sends back the request headers: the token must come back as ***."""
    op = CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id=acme,
        endpoint="/api/v1/echo",
        log_response=True,
        deferrable=deferrable,
        response_filter=lambda response: {"headers": response.json()["headers"], "raw": response.text},
    )
    result = execute(op, deferrable)
    token = demo.api_log[-1]["headers"]["Authorization"].split()[-1]
    assert result["headers"]["Authorization"] == "***"
    assert token not in json.dumps(result)
    out = capsys.readouterr()
    assert '"Authorization": "***"' in out.out + out.err
    assert token not in out.out + out.err


def test_response_check_false_fails(demo: DemoServer, acme: str, deferrable: bool) -> None:
    def check(response: Any, params: Any) -> bool:  # context keys are passed by name
        assert params == {"expected": "prod"}
        return bool(response.json()["account"] == params["expected"])

    op = CustomTokenHttpOperator(
        task_id="check",
        custom_token_conn_id=acme,
        endpoint="/api/v1/whoami",
        response_check=check,
        deferrable=deferrable,
    )
    with pytest.raises(AirflowException, match="Response check returned False"):
        run_deferred(op, {"params": {"expected": "prod"}}) if deferrable else op.execute(
            {"params": {"expected": "prod"}}
        )


def test_error_status_fails_without_token(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="fail", custom_token_conn_id=acme, endpoint="/api/v1/status/503", deferrable=deferrable
    )
    with pytest.raises(RequestError, match="503") as info:
        execute(op, deferrable)
    token = demo.api_log[-1]["headers"]["Authorization"].split()[-1]
    assert token not in str(info.value)
    assert "/api/v1/status/503" in str(info.value)


def test_check_response_false_returns_error_body(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="lenient",
        custom_token_conn_id=acme,
        endpoint="/api/v1/status/409",
        extra_options={"check_response": False},
        response_filter=lambda response: response.status_code,
        deferrable=deferrable,
    )
    assert execute(op, deferrable) == 409


def test_pagination(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="export",
        custom_token_conn_id=acme,
        endpoint="/api/v1/items",
        query_params={"per_page": 4},
        pagination_function=items_next_page,
        response_filter=all_items,
        deferrable=deferrable,
    )
    if deferrable:
        result, deferrals = run_deferred(op, {})
        assert deferrals == 3  # one per page
    else:
        result = op.execute({})
    assert result == list(range(1, 11))
    assert [entry["query"] for entry in demo.api_log] == [
        {"per_page": "4"},
        {"per_page": "4", "page": "2"},
        {"per_page": "4", "page": "3"},
    ]
    assert demo.stats()["token_requests"] == 1


def test_pagination_default_result_is_list_of_texts(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="export",
        custom_token_conn_id=acme,
        endpoint="/api/v1/items",
        query_params={"per_page": 5},
        pagination_function=items_next_page,
        response_check=lambda responses: len(responses) == 2,
        deferrable=deferrable,
    )
    texts = execute(op, deferrable)
    assert [json.loads(t)["page"] for t in texts] == [1, 2]


def test_refresh_on_revoked_token(demo: DemoServer, acme: str, deferrable: bool) -> None:
    op = CustomTokenHttpOperator(
        task_id="whoami", custom_token_conn_id=acme, endpoint="/api/v1/whoami", deferrable=deferrable
    )
    execute(op, deferrable)
    demo.revoke_all()
    assert json.loads(execute(op, deferrable))["account"] == "dev"
    assert demo.stats()["token_requests"] == 2
    assert demo.stats()["rejected"] == 1


def test_url_injection_keeps_token_out_of_result(
    demo: DemoServer, make_conn: Callable[..., str], deferrable: bool
) -> None:
    extra = demo_extra(
        demo,
        access_endpoint="/auth/v1/session",
        access_verb="GET",
        access_parameters={"username": "{login}", "password": "{password}"},
        access_response_path="data.session.id",
        inject_as="url",
        inject_name="access_token",
        inject_template="{token}",
    )
    conn = make_conn("portal", host=demo.url, login="qa", password="qa-secret", extra=extra)
    op = CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id=conn,
        endpoint="/api/v1/echo",
        query_params={"report": "daily"},
        deferrable=deferrable,
        response_filter=lambda response: {"query": response.json()["query"], "url": response.url},
    )
    result = execute(op, deferrable)
    assert result["query"] == {"report": "daily", "access_token": "***"}
    token = demo.api_log[-1]["query"]["access_token"]
    assert token not in json.dumps(result)


# -- deferrable specifics ------------------------------------------------------------------------


def test_deferral_raises_task_deferred_with_a_token_free_trigger(demo: DemoServer, acme: str) -> None:
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    token = CustomTokenHook(acme).get_token()
    op = CustomTokenHttpOperator(
        task_id="whoami",
        custom_token_conn_id=acme,
        endpoint="/api/v1/whoami",
        integration_parameters={"region": "eu"},
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute({})
    assert info.value.method_name == "execute_complete"
    trigger = info.value.trigger
    assert isinstance(trigger, CustomTokenHttpTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_custom_token.triggers.http.CustomTokenHttpTrigger"
    assert kwargs["custom_token_conn_id"] == "acme"
    assert kwargs["integration_parameters"] == {"region": "eu"}
    assert token not in json.dumps(kwargs)
    assert demo.stats()["api_requests"] == 0  # nothing is sent before the trigger runs


def test_trigger_error_fails_the_task(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    make_conn("broken", host=demo.url, login="dev", password="wrong-secret", extra=demo_extra(demo))
    op = CustomTokenHttpOperator(
        task_id="t", custom_token_conn_id="broken", endpoint="/api/v1/whoami", deferrable=True
    )
    with pytest.raises(CustomTokenError, match="Token request failed") as info:
        run_deferred(op, {})
    assert "wrong-secret" not in str(info.value)


def test_unsupported_extra_options_are_refused_at_parse_time() -> None:
    with pytest.raises(ValueError, match="verify"):
        CustomTokenHttpOperator(task_id="t", endpoint="/x", extra_options={"verify": False}, deferrable=True)
    CustomTokenHttpOperator(task_id="t", endpoint="/x", extra_options={"verify": False}, deferrable=False)


# -- templating ----------------------------------------------------------------------------------


@pytest.fixture
def accounts(demo: DemoServer, make_conn: Callable[..., str]) -> Iterator[None]:
    """One integration (acme), three connected accounts using integration_conn_id."""
    extra = demo_extra(demo, request_parameters={"header": {"X-Server-Name": "{serverName}"}})
    make_conn("acme", host=demo.url, extra=extra)
    for account in ("dev", "qa", "prod"):
        make_conn(
            f"acme_{account}",
            login=account,
            password=f"{account}-secret",
            extra={"integration_conn_id": "acme"},
        )
    yield


def test_template_fields_render_dag_params(demo: DemoServer, accounts: None) -> None:
    op = CustomTokenHttpOperator(
        task_id="whoami",
        custom_token_conn_id="acme_{{ params.profile | lower }}",
        endpoint="/api/v1/{{ params.path }}",
        integration_parameters={"serverName": "{{ params.server }}"},
        query_params={"day": "{{ params.day }}"},
        headers={"X-Run": "{{ params.run }}"},
        response_filter=lambda response: response.json(),
    )
    assert set(op.template_fields) == {
        "custom_token_conn_id",
        "endpoint",
        "data",
        "json",
        "query_params",
        "headers",
        "integration_parameters",
    }
    params = {"profile": "QA", "server": "eu-2", "path": "whoami", "day": "2025-01-02", "run": "r9"}
    context: dict[str, Any] = {"params": params}
    op.render_template_fields(context)
    assert op.custom_token_conn_id == "acme_qa"
    assert op.integration_parameters == {"serverName": "eu-2"}
    seen = op.execute(context)
    assert seen["account"] == "qa"
    assert seen["request_headers"] == {"X-Server-Name": "eu-2", "X-Run": "r9"}
    assert seen["query"] == {"day": "2025-01-02"}
