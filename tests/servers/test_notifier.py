"""`CustomTokenNotifier` (issue 13): templated from the callback's context, sent with the token, sync
(`notify`, as a task callback runs it) and async (`async_notify`, as the triggerer awaits it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import RequestError
from airflow_custom_token.get_provider_info import get_provider_info
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.notifications.http import CustomTokenNotifier, send_custom_token_notification

pytestmark = pytest.mark.timeout(60)


def context() -> dict[str, Any]:
    from airflow.sdk import DAG

    return {"dag": DAG("nightly_export", schedule=None), "run_id": "manual__r1", "ds": "2025-01-02"}


def notifier(acme: str, endpoint: str = "/api/v1/echo") -> CustomTokenNotifier:
    return CustomTokenNotifier(
        acme,
        endpoint,
        json={"dag": "{{ dag.dag_id }}", "run": "{{ run_id }}", "state": "failed"},
        headers={"X-Run": "{{ run_id }}"},
        query_params={"day": "{{ ds }}", "server": "{serverName}"},
        integration_parameters={"serverName": "eu-{{ ds[-1] }}"},
    )


def assert_posted_with_the_token(demo: DemoServer, acme: str) -> None:
    [sent] = [e for e in demo.api_log if e["path"] == "/api/v1/echo"]
    assert sent["method"] == "POST"
    assert sent["json"] == {"dag": "nightly_export", "run": "manual__r1", "state": "failed"}
    assert sent["headers"]["X-Run"] == "manual__r1"
    assert sent["query"] == {"day": "2025-01-02", "server": "eu-2"}  # placeholders too, from the template
    assert sent["account"] == "dev"
    assert sent["headers"]["Authorization"] == f"Bearer {CustomTokenHook(acme).get_token()}"


def test_notify_posts_with_the_token_templated_from_the_context(demo: DemoServer, acme: str) -> None:
    notifier(acme)(context())  # what a task's on_failure_callback does

    assert_posted_with_the_token(demo, acme)


def test_async_notify_posts_with_the_token_templated_from_the_context(demo: DemoServer, acme: str) -> None:
    sender = notifier(acme)

    async def send() -> None:
        if hasattr(type(sender), "__await__"):  # Airflow 3.1+: how the triggerer runs it, `await notifier`
            sender.context = context()
            await sender
        else:  # 3.0's BaseNotifier is sync only: the same steps by hand
            sender.render_template_fields(context())
            await sender.async_notify(context())

    asyncio.run(send())

    assert_posted_with_the_token(demo, acme)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_error_status_fails_the_notification_without_the_token(
    demo: DemoServer, acme: str, mode: str
) -> None:
    sender = notifier(acme, "/api/v1/status/500")

    with pytest.raises(RequestError, match=r"^POST http://127\.0\.0\.1:\d+/api/v1/status/500\?day=") as error:
        if mode == "sync":
            sender.notify(context())
        else:
            asyncio.run(sender.async_notify(context()))

    assert error.value.status == 500
    assert CustomTokenHook(acme).get_token() not in str(error.value)


def test_the_notifier_is_the_http_providers_notifier_by_another_name() -> None:
    assert send_custom_token_notification is CustomTokenNotifier
    assert tuple(CustomTokenNotifier.template_fields) == (
        "custom_token_conn_id",
        "endpoint",
        "json",
        "data",
        "headers",
        "query_params",
        "integration_parameters",
    )
    assert get_provider_info()["notifications"] == [
        "airflow_custom_token.notifications.http.CustomTokenNotifier"
    ]
    sender = CustomTokenNotifier("acme", "/alerts", method="put", data={"a": "1"})
    assert (sender.method, sender.data, sender.json) == ("PUT", {"a": "1"}, None)
    assert json.dumps(sender.template_fields)  # plain names, serializable with the DAG
