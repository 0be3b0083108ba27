"""A token sent as a URL parameter, obtained with a GET.

`acme_portal` gets a session from `GET /auth/v1/session?username=..&password=..`, reads the token at
`data.session.id` (its lifetime at `data.session.ttl`) and adds it to every request as
`?access_token=<token>`. The API echoes the request back; the task's log (`log_response`) and its
XCom show `***` where the token was.

    airflow dags test example_custom_token_url_parameter
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def query_seen(response: Any) -> dict[str, Any]:
    """The query string the API received."""
    return dict(response.json()["query"])


with DAG(
    dag_id="example_custom_token_url_parameter",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id="acme_portal",
        endpoint="/api/v1/echo",
        query_params={"report": "daily"},
        log_response=True,
        response_filter=query_seen,
    )
