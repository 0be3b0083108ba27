"""Event-driven scheduling: a DAG that runs when the API says the daily report is ready.

`CustomTokenHttpEventTrigger` polls `/api/v1/reports/daily` from the triggerer, with the `acme_prod`
account's token, until `report_is_ready` (below, imported by the triggerer as
`example_asset_watcher.report_is_ready`: the DAG folder is on its path) says yes. Its event updates the
asset `acme_daily_report`, which schedules this DAG; the DAG then fetches the report.

The watcher needs a running scheduler and triggerer (`airflow standalone`). `airflow dags test` runs the
DAG itself, without waiting for the watcher:

    airflow dags test example_custom_token_asset_watcher
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher

from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.triggers.http import CustomTokenHttpEventTrigger


def report_is_ready(response: Any) -> bool:
    """The watcher's check: it receives a `requests.Response` (tokens redacted), sync or async."""
    return bool(response.status_code == 200 and response.json().get("ready"))


daily_report = Asset(
    "acme_daily_report",
    watchers=[
        AssetWatcher(
            name="acme_daily_report_ready",
            trigger=CustomTokenHttpEventTrigger(
                custom_token_conn_id="acme_prod",
                endpoint="/api/v1/reports/daily",
                response_check_path="example_asset_watcher.report_is_ready",
                poll_interval=30,
            ),
        )
    ],
)

with DAG(
    dag_id="example_custom_token_asset_watcher",
    schedule=[daily_report],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    CustomTokenHttpOperator(
        task_id="fetch_report",
        custom_token_conn_id="acme_prod",
        endpoint="/api/v1/reports/daily",
        response_filter=lambda response: response.json(),
    )
