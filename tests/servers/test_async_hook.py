"""`CustomTokenAsyncHook` and `CustomTokenHttpEventTrigger` (issue 13) against the demo API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import ConfigurationError, RequestError
from airflow_custom_token.hooks.custom_token import AsyncResponse, CustomTokenAsyncHook, CustomTokenHook
from airflow_custom_token.triggers.http import CustomTokenHttpEventTrigger
from tests.airflow_names import serialize
from tests.conftest import demo_extra
from tests.triggering import first_event, roundtrip

pytestmark = pytest.mark.timeout(60)
HERE = __name__


def issued_tokens(demo: DemoServer) -> set[str]:
    """The tokens the demo API received."""
    return {e["headers"].get("Authorization", "").rpartition(" ")[2] for e in demo.api_log} - {""}


# -- the async hook ----------------------------------------------------------------------------------------


def test_get_token_shares_the_caches_of_the_sync_hook(demo: DemoServer, acme: str) -> None:
    token = asyncio.run(CustomTokenAsyncHook(acme).get_token())

    assert token == CustomTokenHook(acme).get_token()
    assert demo.stats()["token_requests"] == 1
    assert token.startswith("tok_")


def test_run_returns_a_read_response(demo: DemoServer, acme: str) -> None:
    async def go() -> AsyncResponse:
        hook = CustomTokenAsyncHook(acme, integration_parameters={"run": "r7"})
        return await hook.run(
            "/api/v1/echo", "post", params={"run": "{run}"}, headers={"X-Trace": "t-1"}, json={"rows": [1]}
        )

    response = asyncio.run(go())

    assert (response.status, response.status_code, response.ok, response.method) == (200, 200, True, "POST")
    assert response.headers["Content-Type"] == response.headers["content-type"] == "application/json"
    assert response.url == f"{demo.url}/api/v1/echo?run=r7"  # what was asked, without the credentials
    echo = response.json()
    assert echo["query"] == {"run": "r7"} and echo["headers"]["X-Trace"] == "t-1"
    assert json.loads(echo["body"]) == {"rows": [1]}
    assert json.loads(response.text()) == echo
    assert echo["headers"]["Authorization"] == f"Bearer {CustomTokenHook(acme).get_token()}"


def test_one_session_for_several_requests(demo: DemoServer, acme: str) -> None:
    async def go() -> list[int]:
        hook = CustomTokenAsyncHook(acme)
        async with hook.session():
            return [
                (await hook.run("/api/v1/items", params={"page": page})).json()["page"] for page in (1, 2)
            ]

    assert asyncio.run(go()) == [1, 2]
    assert (demo.stats()["token_requests"], demo.stats()["authenticated"]) == (1, 2)


def test_an_error_status_raises_request_error_without_the_token(demo: DemoServer, acme: str) -> None:
    hook = CustomTokenAsyncHook(acme)

    with pytest.raises(
        RequestError, match=r"^GET http://127\.0\.0\.1:\d+/api/v1/status/503 answered 503"
    ) as e:
        asyncio.run(hook.run("/api/v1/status/503"))

    assert e.value.status == 503
    unchecked = asyncio.run(hook.run("/api/v1/status/404", extra_options={"check_response": False}))
    assert unchecked.status == 404 and unchecked.json() == {"status": 404}
    assert not any(token in str(e.value) for token in issued_tokens(demo))


def test_a_rejected_token_is_refreshed_once_and_says_so(demo: DemoServer, acme: str) -> None:
    demo.set_reject_all(True)

    with pytest.raises(
        RequestError, match=r"answered 401 .*\(after fetching a new token and retrying once\)"
    ):
        asyncio.run(CustomTokenAsyncHook(acme).run("/api/v1/whoami"))

    assert (demo.stats()["token_requests"], demo.stats()["rejected"]) == (2, 2)


def test_requests_only_options_and_bad_connections_are_configuration_errors(demo: DemoServer) -> None:
    with pytest.raises(
        ConfigurationError, match=r"extra_options: expected keys among check_response, timeout"
    ):
        asyncio.run(CustomTokenAsyncHook("any").run("/x", extra_options={"stream": True}))
    with pytest.raises(ConfigurationError, match=r"connection 'nowhere' is not defined"):
        asyncio.run(CustomTokenAsyncHook("nowhere").get_token())
    assert demo.stats()["api_requests"] == 0


def test_url_injection_stays_out_of_the_response_url(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    extra = demo_extra(demo, inject_as="url", inject_name="access_token", inject_template="{token}")
    make_conn("portal", host=demo.url, login="qa", password="qa-secret", extra=extra)

    response = asyncio.run(CustomTokenAsyncHook("portal").run("/api/v1/echo", params={"a": "1"}))

    token = demo.api_log[-1]["query"]["access_token"]
    assert response.url == f"{demo.url}/api/v1/echo?a=1" and token not in repr(response)


# -- the event trigger -------------------------------------------------------------------------------------


def report_is_ready(response: Any) -> bool:
    """A sync check, as a DAG author writes it: it gets a `requests.Response`."""
    return bool(response.status_code == 200 and response.json()["ready"])


async def areport_is_ready(response: Any) -> bool:
    await asyncio.sleep(0)
    return report_is_ready(response)


def named(response: Any) -> bool:
    return bool(response.json().get("name") == "weekly")


def watcher(acme: str, **kwargs: Any) -> CustomTokenHttpEventTrigger:
    arguments: dict[str, Any] = {
        "custom_token_conn_id": acme,
        "endpoint": "/api/v1/reports/daily",
        "query_params": {"ready_after": 1.5},
        "poll_interval": 0.1,
        **kwargs,
    }
    return CustomTokenHttpEventTrigger(**arguments)


@pytest.mark.parametrize("check", ["report_is_ready", "areport_is_ready", None])
def test_the_event_fires_once_the_check_passes(demo: DemoServer, acme: str, check: str | None) -> None:
    CustomTokenHook(acme).get_token()  # in the process cache: the first poll goes out at once
    trigger = watcher(acme, response_check_path=f"{HERE}.{check}" if check else None)
    demo.reset()  # the report is ready 1.5 s from now: 404 until then

    event = first_event(roundtrip(trigger))

    assert set(event) == {"status", "response"} and event["status"] == "success"
    response = event["response"]
    assert set(response) == {"status", "reason", "headers", "text", "url", "method"}
    assert response["status"] == 200 and json.loads(response["text"]) == {"name": "daily", "ready": True}
    assert response["url"] == f"{demo.url}/api/v1/reports/daily?ready_after=1.5"
    polls = [e for e in demo.api_log if e["path"] == "/api/v1/reports/daily"]
    assert len(polls) >= 2 and demo.stats()["token_requests"] == 0  # 404, ..., 200: the cached token


def test_a_check_that_says_no_keeps_it_polling(demo: DemoServer, acme: str) -> None:
    trigger = watcher(acme, endpoint="/api/v1/reports/daily", response_check_path=f"{HERE}.named")

    async def polls_on() -> bool:
        task = asyncio.create_task(first_event_async(trigger))
        for _ in range(200):
            if demo.stats()["api_requests"] >= 4 or task.done():
                break
            await asyncio.sleep(0.02)
        done = task.done()
        task.cancel()
        return done

    assert asyncio.run(polls_on()) is False
    assert demo.stats()["api_requests"] >= 4


async def first_event_async(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    return None


def test_no_token_in_the_event_nor_in_the_serialization(demo: DemoServer, acme: str) -> None:
    token = CustomTokenHook(acme).get_token()
    trigger = watcher(acme, endpoint="/api/v1/echo", query_params={"run": "r1"}, headers={"X-Run": "r1"})

    classpath, kwargs = trigger.serialize()
    event = first_event(roundtrip(trigger))

    assert classpath == "airflow_custom_token.triggers.http.CustomTokenHttpEventTrigger"
    assert kwargs == {
        "custom_token_conn_id": acme,
        "endpoint": "/api/v1/echo",
        "method": "GET",
        "query_params": {"run": "r1"},
        "headers": {"X-Run": "r1"},
        "data": None,
        "integration_parameters": {},
        "response_check_path": None,
        "poll_interval": 0.1,
    }
    assert token not in json.dumps(serialize(kwargs)) and "dev-secret" not in json.dumps(serialize(kwargs))
    assert json.loads(event["response"]["text"])["headers"]["Authorization"] == "***"
    assert token not in json.dumps(event) and "dev-secret" not in json.dumps(event)
    assert issued_tokens(demo) == {token}  # the API did get the token


def test_transient_errors_are_logged_and_polling_goes_on(
    demo: DemoServer, acme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(4):  # a token request and its 3 retries fail: the first poll gets no token
        demo.push_fault({"status": 503})

    event = first_event(watcher(acme, endpoint="/api/v1/whoami"))

    assert event["status"] == "success" and json.loads(event["response"]["text"])["account"] == "dev"
    failed = [
        line
        for line in capsys.readouterr().out.splitlines()
        if "Polling <CustomTokenHttpEventTrigger" in line
    ]
    assert len(failed) == 1 and "warning" in failed[0].lower()
    assert "failed: Token request failed: POST http://127.0.0.1:" in failed[0] and "answered 503" in failed[0]
    assert "next request in 0.1 s" in failed[0]
    assert demo.stats()["token_requests"] == 5


def test_a_check_that_cannot_be_imported_ends_the_trigger(demo: DemoServer, acme: str) -> None:
    trigger = watcher(acme, response_check_path=f"{HERE}.no_such_check")

    with pytest.raises(
        ImportError, match=rf"response_check_path: cannot import '{HERE}\.no_such_check' in the triggerer"
    ):
        first_event(trigger)

    assert demo.stats()["api_requests"] == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"response_check_path": "not a path"},
            "response_check_path: expected the dotted import path of a function",
        ),
        ({"response_check_path": "nodots"}, "found 'nodots'"),
        ({"poll_interval": 0}, "poll_interval: expected a positive number of seconds, found 0"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CustomTokenHttpEventTrigger("acme", "/x", **arguments)


def test_an_asset_watcher_dag_with_it_parses_and_serializes() -> None:
    from airflow.sdk import DAG, Asset, AssetWatcher

    from airflow_custom_token.operators.http import CustomTokenHttpOperator

    trigger = CustomTokenHttpEventTrigger(
        "acme_prod", "/api/v1/reports/daily", response_check_path=f"{HERE}.report_is_ready"
    )
    report = Asset("acme_daily_report", watchers=[AssetWatcher(name="report_ready", trigger=trigger)])
    with DAG("watched", schedule=[report], start_date=datetime(2025, 1, 1)) as dag:
        CustomTokenHttpOperator(
            task_id="fetch", custom_token_conn_id="acme_prod", endpoint="/api/v1/reports/daily"
        )

    import airflow.serialization.serialized_objects as serialized_objects

    # DagSerialization from 3.2, SerializedDAG before
    serialization = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
    serialized = json.dumps(serialization.to_dict(dag))
    assert "airflow_custom_token.triggers.http.CustomTokenHttpEventTrigger" in serialized
    assert f"{HERE}.report_is_ready" in serialized
