"""Signed JWT assertions instead of a client secret: the JWT bearer grant (RFC 7523).

`acme_jwt` has no password. Each token request carries `{assertion}`, a JWT made anew for that request
(a fresh `jti`, `iat` now, `exp` 300 s later, `aud` the token endpoint's URL, `iss` and `sub` the
connection's Login) and signed with `assertion_private_key` (here the demo's published Ed25519 key,
`assertion_algorithm: EdDSA`). The demo's `/oauth2/v1/jwt-bearer` verifies it with the public key and
refuses an expired one, another audience or a `jti` it has seen.

    airflow dags test example_custom_token_jwt_assertion
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def account(response: Any) -> str:
    return str(response.json()["account"])


with DAG(
    dag_id="example_custom_token_jwt_assertion",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    whoami = CustomTokenHttpOperator(
        task_id="whoami",
        custom_token_conn_id="acme_jwt",
        endpoint="/api/v1/whoami",
        response_filter=account,
    )
    whoami_deferred = CustomTokenHttpOperator(
        task_id="whoami_deferred",
        custom_token_conn_id="acme_jwt",
        endpoint="/api/v1/whoami",
        response_filter=account,
        deferrable=True,
    )
    whoami >> whoami_deferred
