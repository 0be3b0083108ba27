"""CustomTokenHttpSensor against the demo API: poke, reschedule and deferrable mode."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.sensors.http import CustomTokenHttpSensor
from airflow_custom_token.triggers.http import CustomTokenHttpSensorTrigger
from tests.airflow_names import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    PokeReturnValue,
    TaskDeferred,
)
from tests.triggering import run_trigger

pytestmark = pytest.mark.usefixtures("task_runner_off")


def start_job(seconds: float) -> str:
    job = CustomTokenHook("acme").run("/api/v1/jobs", "POST", json={"seconds": seconds}).json()
    return str(job["id"])


def job_done(response: Any) -> PokeReturnValue:
    body = response.json()
    return PokeReturnValue(body["status"] == "done", xcom_value=body.get("result"))


READY_AFTER = 1.5  # seconds after `ready()` until the demo report exists


def ready(demo: DemoServer) -> None:
    """Warm the token (so the first poke is quick), then restart the report clock and the counters."""
    CustomTokenHook("acme").get_token()
    demo.reset()


def report_sensor(**kwargs: Any) -> CustomTokenHttpSensor:
    return CustomTokenHttpSensor(
        task_id="report",
        custom_token_conn_id="acme",
        endpoint="/api/v1/reports/daily",
        **{"query_params": {"ready_after": READY_AFTER}, "poke_interval": 0.2, "timeout": 10, **kwargs},
    )


# -- poke and reschedule mode ------------------------------------------------------------------


def test_poke_until_404_turns_200(demo: DemoServer, acme: str) -> None:
    ready(demo)
    started = time.monotonic()
    assert report_sensor().execute({}) is None
    assert time.monotonic() - started >= READY_AFTER
    assert len(demo.api_log) >= 2  # 404, ..., 200
    assert demo.stats()["token_requests"] == 0  # the cached token served every poke


def test_poke_response_check_with_xcom_value(demo: DemoServer, acme: str) -> None:
    job = start_job(0.5)
    sensor = CustomTokenHttpSensor(
        task_id="job",
        custom_token_conn_id=acme,
        endpoint=f"/api/v1/jobs/{job}",
        response_check=job_done,
        poke_interval=0.2,
        timeout=10,
    )
    assert sensor.execute({}) == {"rows": 42}


def test_poke_error_status_fails(demo: DemoServer, acme: str) -> None:
    sensor = CustomTokenHttpSensor(
        task_id="s", custom_token_conn_id=acme, endpoint="/api/v1/status/500", poke_interval=0.1, timeout=5
    )
    with pytest.raises(RequestError, match="500") as info:
        sensor.execute({})
    token = demo.api_log[-1]["headers"]["Authorization"].split()[-1]
    assert token not in str(info.value)


def test_empty_allowlist_makes_404_fail(demo: DemoServer, acme: str) -> None:
    sensor = report_sensor(response_error_codes_allowlist=[], query_params={"ready_after": 600})
    with pytest.raises(RequestError, match="404"):
        sensor.execute({})


def test_check_response_false_keeps_poking_on_errors(demo: DemoServer, acme: str) -> None:
    CustomTokenHook(acme).get_token()
    sensor = CustomTokenHttpSensor(
        task_id="s",
        custom_token_conn_id=acme,
        endpoint="/api/v1/status/503",
        extra_options={"check_response": False},
        poke_interval=0.1,
        timeout=2,
    )
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
    assert demo.stats()["api_requests"] >= 2


class _RescheduleTI:
    """What reschedule mode asks of the task instance."""

    def __init__(self) -> None:
        self.first: Any = None

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first


def test_reschedule_mode(demo: DemoServer, acme: str) -> None:
    ready(demo)
    sensor = report_sensor(mode="reschedule")
    ti = _RescheduleTI()
    with pytest.raises(AirflowRescheduleException):
        sensor.execute({"ti": ti})
    time.sleep(READY_AFTER)
    assert sensor.execute({"ti": ti}) is None
    assert demo.stats()["api_requests"] == 2


# -- deferrable mode -------------------------------------------------------------------------


def test_deferrable_defers_and_completes(demo: DemoServer, acme: str) -> None:
    ready(demo)
    sensor = report_sensor(deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, CustomTokenHttpSensorTrigger)
    assert trigger.first_poke_delay == 0
    assert trigger.not_yet_codes == [404]
    assert 5 < info.value.timeout.total_seconds() <= 10
    assert demo.stats()["api_requests"] == 0
    event = run_trigger(trigger)
    assert event["status"] == "success"
    assert event["response"]["status"] == 200
    assert demo.stats()["api_requests"] >= 2  # the 404s were waited out in the trigger
    assert sensor.execute_complete({}, event=event) is None


def test_deferrable_response_check_defers_again(demo: DemoServer, acme: str) -> None:
    """The check runs on the worker; when it says no, the sensor defers again after poke_interval."""
    job = start_job(3)
    sensor = CustomTokenHttpSensor(
        task_id="job",
        custom_token_conn_id=acme,
        endpoint=f"/api/v1/jobs/{job}",
        response_check=job_done,
        poke_interval=0.2,
        timeout=30,
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    deferred, rounds = info.value, 0
    while True:
        rounds += 1
        event = run_trigger(deferred.trigger)
        try:
            result = sensor.execute_complete({}, **(deferred.kwargs or {}), event=event)
            break
        except TaskDeferred as again:
            assert again.trigger.first_poke_delay == 0.2
            assert again.timeout.total_seconds() < deferred.timeout.total_seconds()
            assert again.trigger.carry == deferred.trigger.carry  # the start time travels on
            deferred = again
    assert result == {"rows": 42}
    assert rounds >= 2


def test_deferrable_timeout_is_overall(demo: DemoServer, acme: str) -> None:
    sensor = report_sensor(deferrable=True, response_check=lambda response: False)
    event = {
        "status": "success",
        "response": {"status": 200, "headers": {}, "text": "{}", "url": "", "method": "GET"},
        "carry": {"started_at": time.time() - 11},
    }
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, event=event)
    soft = report_sensor(deferrable=True, response_check=lambda response: False, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.resume_execution("execute_complete", {"event": event}, {})


def test_deferrable_error_status_fails_on_worker(demo: DemoServer, acme: str) -> None:
    sensor = CustomTokenHttpSensor(
        task_id="s", custom_token_conn_id=acme, endpoint="/api/v1/status/500", deferrable=True
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    event = run_trigger(info.value.trigger)
    assert event["response"]["status"] == 500
    with pytest.raises(RequestError, match="500"):
        sensor.execute_complete({}, event=event)


def test_sensor_template_fields(demo: DemoServer, acme: str) -> None:
    sensor = CustomTokenHttpSensor(
        task_id="s",
        custom_token_conn_id="{{ params.conn }}",
        endpoint="/api/v1/reports/{{ params.name }}",
        query_params={"ready_after": "{{ params.after }}"},
        integration_parameters={"serverName": "{{ params.server }}"},
    )
    sensor.render_template_fields(
        {"params": {"conn": "acme", "name": "weekly", "after": "0", "server": "s1"}}
    )
    assert sensor.custom_token_conn_id == "acme"
    assert sensor.endpoint == "/api/v1/reports/weekly"
    assert sensor.integration_parameters == {"serverName": "s1"}
    assert sensor.poke({})
    assert json.loads(json.dumps(demo.api_log[-1]["query"])) == {"ready_after": "0"}
