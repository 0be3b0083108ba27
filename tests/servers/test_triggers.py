"""The triggers, run as the triggerer runs them (async, first event) against the demo API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_custom_token.demo import DemoServer
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.triggers.http import (
    CustomTokenHttpSensorTrigger,
    CustomTokenHttpTrigger,
    response_from_event,
)
from tests.conftest import demo_extra
from tests.triggering import first_event, roundtrip


def test_serialize_round_trips_without_token(demo: DemoServer, acme: str) -> None:
    token = CustomTokenHook(acme).get_token()
    trigger = CustomTokenHttpTrigger(
        custom_token_conn_id=acme,
        endpoint="/api/v1/echo",
        method="post",
        query_params={"a": "1"},
        headers={"X-Run": "r1"},
        data={"field": "v"},
        integration_parameters={"serverName": "eu"},
        extra_options={"timeout": 5},
        carry={"pages": []},
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_custom_token.triggers.http.CustomTokenHttpTrigger"
    assert roundtrip(trigger).serialize() == (classpath, kwargs)
    assert kwargs["method"] == "POST"
    assert token not in json.dumps(kwargs)

    sensor = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme, endpoint="/api/v1/reports/x", poke_interval=2, not_yet_codes=[404, 409]
    )
    assert roundtrip(sensor).serialize() == sensor.serialize()
    assert sensor.serialize()[1]["not_yet_codes"] == [404, 409]
    assert token not in json.dumps(sensor.serialize())


def test_event_carries_a_redacted_response(demo: DemoServer, acme: str) -> None:
    trigger = CustomTokenHttpTrigger(
        custom_token_conn_id=acme,
        endpoint="/api/v1/echo",
        query_params={"run": "r1"},
        headers={"X-Trace": "t1"},
        carry={"pages": ["kept"]},
    )
    event = first_event(roundtrip(trigger))
    assert event["status"] == "success"
    assert event["carry"] == {"pages": ["kept"]}
    response = event["response"]
    assert set(response) == {"status", "reason", "headers", "text", "url", "method"}
    assert response["status"] == 200
    assert response["url"] == f"{demo.url}/api/v1/echo?run=r1"
    token = demo.api_log[-1]["headers"]["Authorization"].split()[-1]
    assert token not in json.dumps(event)
    echoed = json.loads(response["text"])
    assert echoed["headers"]["Authorization"] == "***"
    assert echoed["headers"]["X-Trace"] == "t1"
    assert echoed["query"] == {"run": "r1"}

    rebuilt = response_from_event(response)  # what response_check / response_filter receive
    assert rebuilt.status_code == 200
    assert rebuilt.json()["query"] == {"run": "r1"}
    assert rebuilt.headers["content-type"] == "application/json"
    assert rebuilt.request is not None and rebuilt.request.method == "GET"
    assert rebuilt.ok


def test_refresh_on_in_the_trigger(demo: DemoServer, acme: str) -> None:
    CustomTokenHook(acme).get_token()  # a cached token the server then revokes
    demo.revoke_all()
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
    assert event["response"]["status"] == 200
    stats = demo.stats()
    assert (stats["token_requests"], stats["rejected"], stats["authenticated"]) == (2, 1, 1)


def test_refresh_once_only(demo: DemoServer, acme: str) -> None:
    demo.set_reject_all(True)
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id=acme, endpoint="/api/v1/whoami"))
    assert event["status"] == "success"  # the worker decides what a 401 means
    assert event["response"]["status"] == 401
    assert (demo.stats()["token_requests"], demo.stats()["rejected"]) == (2, 2)


def test_integration_chain_and_placeholders(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    extra = demo_extra(demo, request_parameters={"header": {"X-Server-Name": "{serverName}"}})
    make_conn("acme", host=demo.url, extra={**extra, "integration_parameters": {"serverName": "default"}})
    make_conn("acme_prod", login="prod", password="prod-secret", extra={"integration_conn_id": "acme"})
    trigger = CustomTokenHttpTrigger(
        custom_token_conn_id="acme_prod",
        endpoint="/api/v1/whoami",
        query_params={"server": "{serverName}"},
        integration_parameters={"serverName": "eu-3"},
    )
    body = json.loads(first_event(trigger)["response"]["text"])
    assert body["account"] == "prod"
    assert body["request_headers"] == {"X-Server-Name": "eu-3"}
    assert body["query"] == {"server": "eu-3"}


def test_url_injection_event_has_no_token(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    extra = demo_extra(
        demo,
        access_endpoint="/auth/v1/session",
        access_verb="GET",
        access_parameters={"username": "{login}", "password": "{password}"},
        access_response_path="data.session.id",
        access_expiry_path="data.session.ttl",
        inject_as="url",
        inject_name="access_token",
        inject_template="{token}",
    )
    make_conn("portal", host=demo.url, login="qa", password="qa-secret", extra=extra)
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id="portal", endpoint="/api/v1/echo"))
    token = demo.api_log[-1]["query"]["access_token"]
    assert token not in json.dumps(event)
    assert "qa-secret" not in json.dumps(event)
    assert json.loads(event["response"]["text"])["query"] == {"access_token": "***"}


def test_missing_connection_is_an_error_event(demo: DemoServer) -> None:
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id="nowhere", endpoint="/api/v1/whoami"))
    assert event["status"] == "error"
    assert "'nowhere' is not defined" in event["message"]


def test_configuration_problems_are_an_error_event(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    make_conn("half", host=demo.url, extra={"integration_key": "half"})
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id="half", endpoint="/x"))
    assert event["status"] == "error"
    assert "access_endpoint: required field is missing" in event["message"]


def test_unreachable_api_is_an_error_event_without_secrets(
    demo: DemoServer, acme: str, make_conn: Callable[..., str]
) -> None:
    token = CustomTokenHook(acme).get_token()
    with DemoServer() as other:
        dead = other.url
    make_conn("gone", host=dead, login="dev", password="dev-secret", extra=demo_extra(demo))
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id="gone", endpoint="/api/v1/whoami"))
    assert event["status"] == "error"
    assert "could not connect" in event["message"]
    assert token not in json.dumps(event) and "dev-secret" not in json.dumps(event)


# -- the sensor trigger --------------------------------------------------------------------------


def test_sensor_trigger_waits_out_not_yet(demo: DemoServer, acme: str) -> None:
    CustomTokenHook(acme).get_token()  # the trigger finds it in the process cache
    demo.reset()  # the report exists 1.5 s from now
    trigger = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme,
        endpoint="/api/v1/reports/daily",
        query_params={"ready_after": 1.5},
        poke_interval=0.1,
        carry={"started_at": 1.5},
    )
    event = first_event(roundtrip(trigger))
    assert event["status"] == "success"
    assert event["response"]["status"] == 200
    assert event["carry"] == {"started_at": 1.5}
    assert demo.stats()["api_requests"] >= 2
    assert demo.stats()["token_requests"] == 0


def test_sensor_trigger_first_poke_delay(demo: DemoServer, acme: str) -> None:
    trigger = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme, endpoint="/api/v1/whoami", first_poke_delay=0.4
    )
    started = time.monotonic()
    assert first_event(trigger)["response"]["status"] == 200
    assert time.monotonic() - started >= 0.4
    assert demo.stats()["api_requests"] == 1


def test_sensor_trigger_other_status_ends_the_wait(demo: DemoServer, acme: str) -> None:
    trigger = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme, endpoint="/api/v1/status/503", poke_interval=0.1, not_yet_codes=[404]
    )
    assert first_event(trigger)["response"]["status"] == 503
    assert demo.stats()["api_requests"] == 1


def test_sensor_trigger_custom_not_yet_codes(demo: DemoServer, acme: str) -> None:
    trigger = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme, endpoint="/api/v1/status/409", poke_interval=0.05, not_yet_codes=[409]
    )

    async def first() -> Any:
        async for event in trigger.run():
            return event

    async def keeps_waiting() -> None:
        task = asyncio.create_task(first())
        deadline = time.monotonic() + 20
        while demo.stats()["api_requests"] < 3 and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        assert not task.done(), "409 is 'not yet' here: the trigger must keep polling"
        task.cancel()

    asyncio.run(keeps_waiting())
    assert demo.stats()["api_requests"] >= 3


def test_trigger_refuses_requests_only_options() -> None:
    with pytest.raises(ValueError, match="stream"):
        CustomTokenHttpTrigger(custom_token_conn_id="x", extra_options={"stream": True})


def test_sensor_trigger_logs_not_yet_at_info_once_a_minute(
    demo: DemoServer, acme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1000 triggers poking every 5 s must not write 200 INFO lines a second: the first "not yet" of a
    trigger at INFO, then one a minute; the others at DEBUG."""
    lines: list[tuple[int, str]] = []

    class Recorder:
        def log(self, level: int, message: str, *args: Any) -> None:
            lines.append((level, message % args))

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    monkeypatch.setattr(CustomTokenHttpSensorTrigger, "log", property(lambda self: Recorder()))
    CustomTokenHook(acme).get_token()
    demo.reset()  # the report exists 1 s from now
    trigger = CustomTokenHttpSensorTrigger(
        custom_token_conn_id=acme,
        endpoint="/api/v1/reports/daily",
        query_params={"ready_after": 1.0},
        poke_interval=0.1,
    )
    assert first_event(trigger)["status"] == "success"

    not_yet = [(level, text) for level, text in lines if "(not yet" in text]
    assert len(not_yet) >= 3, lines
    assert not_yet[0][0] == logging.INFO and "answered 404 (not yet, 1 so far)" in not_yet[0][1]
    assert {level for level, _ in not_yet[1:]} == {logging.DEBUG}
