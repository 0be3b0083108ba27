"""A login in two steps before the token request (`access_steps`).

`acme_login` reaches its token through a login form, as many internal and vendor APIs do:

1. `GET /login/v1/page` answers a nonce (read as the output `{nonce}`) and sets a `login_page` cookie;
2. `POST /login/v1/sign-in` sends `{login}`, `{password}` and `{nonce}` (and that cookie, on the same
   host) and answers `303 See Other` with a `session` cookie (not followed);
3. the token request, `POST /login/v1/token`, carries the cookies of the steps and answers the token.

Every new token logs in again from a fresh start; until then the token is cached, so the three calls
below, sync and deferrable, log in once.

    airflow dags test example_custom_token_login_steps
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def account(response: Any) -> str:
    return str(response.json()["account"])


with DAG(
    dag_id="example_custom_token_login_steps",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    whoami = CustomTokenHttpOperator(
        task_id="whoami",
        custom_token_conn_id="acme_login",
        endpoint="/api/v1/whoami",
        response_filter=account,
    )
    whoami_deferred = CustomTokenHttpOperator(
        task_id="whoami_deferred",
        custom_token_conn_id="acme_login",
        endpoint="/api/v1/whoami",
        response_filter=account,
        deferrable=True,
    )
    items = CustomTokenHttpOperator(
        task_id="items",
        custom_token_conn_id="acme_login",
        endpoint="/api/v1/items",
        response_filter=lambda response: f"{len(response.json()['items'])} items",
    )
    whoami >> whoami_deferred >> items
