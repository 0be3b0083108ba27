"""Connected accounts: one integration, three accounts (DEV, QA, PROD), chosen by a DAG param.

The `acme` connection describes the integration once (token endpoint, where the token goes, request
headers); `acme_dev`, `acme_qa` and `acme_prod` hold only their credentials and
`"integration_conn_id": "acme"`. The task picks the account from the `profile` param and fills the
integration's `{serverName}` placeholder from the `server` param.

    airflow dags test example_custom_token_connected_accounts -c '{"profile": "QA", "server": "eu-2"}'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def who_and_where(response: Any) -> dict[str, Any]:
    """The account the API saw, and the server header the integration sent."""
    body = response.json()
    headers = {name.lower(): value for name, value in body["request_headers"].items()}
    return {"account": body["account"], "server": headers.get("x-server-name")}


with DAG(
    dag_id="example_custom_token_connected_accounts",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
    params={
        "profile": Param("DEV", enum=["DEV", "QA", "PROD"], description="Which connected account"),
        "server": Param("eu-1", type="string", description="Value of the {serverName} placeholder"),
    },
):
    CustomTokenHttpOperator(
        task_id="whoami",
        custom_token_conn_id="acme_{{ params.profile | lower }}",
        endpoint="/api/v1/whoami",
        integration_parameters={"serverName": "{{ params.server }}"},
        response_filter=who_and_where,
    )
