"""A paginated export: follow `next_page` until there is none, keep the items in XCom.

`pagination_function` returns the next request's overrides (here `query_params`, merged with the
task's own), and `response_filter` then receives every page. The same export runs twice: in the
worker, and deferred (each page is one request from the triggerer).

    airflow dags test example_custom_token_paginated_export
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def next_page(response: Any) -> dict[str, Any] | None:
    """The next page's query parameters, or None after the last page."""
    page = response.json().get("next_page")
    return {"query_params": {"page": page}} if page else None


def items(responses: list[Any]) -> list[dict[str, Any]]:
    """Every item of every page."""
    return [item for response in responses for item in response.json()["items"]]


with DAG(
    dag_id="example_custom_token_paginated_export",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    for deferrable in (False, True):
        CustomTokenHttpOperator(
            task_id="export_items_deferred" if deferrable else "export_items",
            custom_token_conn_id="acme_prod",
            endpoint="/api/v1/items",
            query_params={"per_page": 4},
            pagination_function=next_page,
            response_filter=items,
            deferrable=deferrable,
        )
