"""Start a job, wait for it with a deferrable sensor, keep its result.

`start_job` POSTs to `/api/v1/jobs` and returns the job id. `wait_for_job` polls
`/api/v1/jobs/<id>` from the triggerer; its `response_check` runs on the worker after each answer,
and while the job is still running the sensor defers again (every `poke_interval`, within its
`timeout`). The check returns a `PokeReturnValue` whose value, the job's result, becomes the sensor's
XCom.

    airflow dags test example_custom_token_job_sensor -c '{"seconds": 2}'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, PokeReturnValue

from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.sensors.http import CustomTokenHttpSensor


def job_id(response: Any) -> str:
    return str(response.json()["id"])


def job_done(response: Any) -> PokeReturnValue:
    body = response.json()
    return PokeReturnValue(is_done=body["status"] == "done", xcom_value=body.get("result"))


with DAG(
    dag_id="example_custom_token_job_sensor",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
    params={"seconds": Param(2, type="number", minimum=0, description="How long the job runs")},
):
    start_job = CustomTokenHttpOperator(
        task_id="start_job",
        custom_token_conn_id="acme_prod",
        endpoint="/api/v1/jobs",
        method="POST",
        json={"seconds": "{{ params.seconds }}"},
        response_filter=job_id,
    )
    wait_for_job = CustomTokenHttpSensor(
        task_id="wait_for_job",
        custom_token_conn_id="acme_prod",
        endpoint="/api/v1/jobs/{{ ti.xcom_pull(task_ids='start_job') }}",
        response_check=job_done,
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )
    start_job >> wait_for_job
