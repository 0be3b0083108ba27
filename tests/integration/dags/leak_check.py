"""A DAG that tries hard to leak: the API echoes every request back, and every task logs its response.

`leak_header` sends the token as `Authorization: Bearer <token>`, `leak_url` as `?sid=<token>`; both
also send a secret integration parameter (`{api_secret}`) as a header and a query parameter, so it comes
back in the echo too. Each call runs in the worker and deferred, succeeds and fails. tests/test_leaks.py
runs it with `airflow dags test` and searches everything Airflow wrote for the secrets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def everything(response: Any) -> dict[str, Any]:
    """All a filter could hand to XCom: body, URL, the request's headers and the response's."""
    request = response.request
    return {
        "echo": response.json(),
        "url": response.url,
        "request_url": request.url if request is not None else None,
        "request_headers": dict(request.headers) if request is not None else {},
        "response_headers": dict(response.headers),
        "history": [r.url for r in response.history],
    }


with DAG(
    dag_id="custom_token_leak_check",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["test"],
):
    for conn_id in ("leak_header", "leak_url"):
        for deferrable in (False, True):
            mode = "deferred" if deferrable else "sync"
            CustomTokenHttpOperator(
                task_id=f"{conn_id}_echo_{mode}",
                custom_token_conn_id=conn_id,
                endpoint="/api/v1/echo",
                method="POST",
                query_params={"report": "daily"},
                headers={"X-Trace": "leak-check"},
                json={"note": "hello"},
                log_response=True,
                deferrable=deferrable,
                warn_on_non_idempotent=False,
            )
            CustomTokenHttpOperator(
                task_id=f"{conn_id}_filtered_{mode}",
                custom_token_conn_id=conn_id,
                endpoint="/api/v1/echo",
                log_response=True,
                response_filter=everything,
                deferrable=deferrable,
            )
            CustomTokenHttpOperator(
                task_id=f"{conn_id}_fails_{mode}",
                custom_token_conn_id=conn_id,
                endpoint="/api/v1/status/500",
                log_response=True,
                deferrable=deferrable,
                retries=0,
            )
