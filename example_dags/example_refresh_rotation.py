"""Refresh tokens that rotate: the token is renewed with a refresh request, never with the client secret.

`acme_rotating` gets its first token with client credentials from `/oauth2/v1/rotating`, whose answer
carries a single-use refresh token (`refresh_path: refresh_token`). When the access token expires, the
next call renews it with a refresh request (`grant_type=refresh_token`) that sends the stored refresh
token; the answer's new refresh token replaces it (rotation), in the process cache, the host cache and,
with the shared cache on, Redis. The demo API refuses a refresh token sent twice.

`long_step` stands for a step that outlasts the access token (`pause` seconds; the demo's tokens live
an hour unless its lifetime is set lower, as the test of this DAG does). The calls after it, sync and
deferrable, renew the token once between them.

    airflow dags test example_custom_token_refresh_rotation -c '{"pause": 3}'
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def account(response: Any) -> str:
    return str(response.json()["account"])


with DAG(
    dag_id="example_custom_token_refresh_rotation",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    params={"pause": 0},
    tags=["example", "custom_token"],
):
    first_call = CustomTokenHttpOperator(
        task_id="first_call",
        custom_token_conn_id="acme_rotating",
        endpoint="/api/v1/whoami",
        response_filter=account,
    )

    @task
    def long_step(params: dict[str, Any] | None = None) -> None:
        time.sleep(float((params or {}).get("pause", 0)))

    after_deferred = CustomTokenHttpOperator(
        task_id="after_deferred",
        custom_token_conn_id="acme_rotating",
        endpoint="/api/v1/whoami",
        response_filter=account,
        deferrable=True,
    )
    after_sync = CustomTokenHttpOperator(
        task_id="after_sync",
        custom_token_conn_id="acme_rotating",
        endpoint="/api/v1/whoami",
        response_filter=account,
    )
    first_call >> long_step() >> after_deferred >> after_sync
