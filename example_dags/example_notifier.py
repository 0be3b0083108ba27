"""Tell an API how a task ended: `CustomTokenNotifier` as `on_success_callback` and `on_failure_callback`.

`export_items` reads a page of items; when it ends, a notifier POSTs to `/api/v1/echo` with the
`acme_prod` account's token, its JSON body templated from the callback's context (DAG, task, run,
state). `send_custom_token_notification` is the same class, under the name Airflow's notifiers use.

    airflow dags test example_custom_token_notifier
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.notifications.http import CustomTokenNotifier, send_custom_token_notification
from airflow_custom_token.operators.http import CustomTokenHttpOperator


def notification(state: str) -> dict[str, Any]:
    return {
        "dag_id": "{{ dag.dag_id }}",
        "task_id": "{{ ti.task_id }}",
        "run_id": "{{ run_id }}",
        "state": state,
    }


with DAG(
    dag_id="example_custom_token_notifier",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    CustomTokenHttpOperator(
        task_id="export_items",
        custom_token_conn_id="acme_prod",
        endpoint="/api/v1/items",
        query_params={"per_page": 5},
        response_filter=lambda response: [item["id"] for item in response.json()["items"]],
        on_success_callback=CustomTokenNotifier(
            "acme_prod", "/api/v1/echo", json=notification("success"), headers={"X-Run": "{{ run_id }}"}
        ),
        on_failure_callback=send_custom_token_notification(
            custom_token_conn_id="acme_prod", endpoint="/api/v1/echo", json=notification("failed")
        ),
    )
