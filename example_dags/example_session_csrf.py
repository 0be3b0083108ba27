"""A session API: a session cookie and a CSRF token, from a login with HTTP Basic client authentication.

`acme_notes` logs in with `POST /session/v1/login`, its client id and secret sent as
`Authorization: Basic ...` (`access_auth: basic`). The answer sets the `session` cookie (the token,
`access_response_path: cookie:session`), carries the session's CSRF token in its `X-CSRF-Token` header
(an additional output, `access_outputs: {"csrf": "header:X-CSRF-Token"}`) and its lifetime in its
`X-Session-Expires` header (`access_expiry_path: header:X-Session-Expires`).

Every API request then carries `Cookie: session=<session>` (the token's injection) and
`X-CSRF-Token: <csrf>` (`request_parameters`); the API refuses a request whose CSRF token is not the
session's. One login serves every task until the session expires; then the session and its CSRF token
are replaced together. `echo_session` shows what XCom keeps of the two: `***`.

    airflow dags test example_custom_token_session_csrf
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG

from airflow_custom_token.operators.http import CustomTokenHttpOperator


def created(response: Any) -> dict[str, Any]:
    """The note the API created: its id and text."""
    return dict(response.json())


def notes(response: Any) -> dict[str, Any]:
    body = response.json()
    return {"account": body["account"], "notes": [note["text"] for note in body["notes"]]}


def session_headers(response: Any) -> dict[str, Any]:
    """The two session headers the API received (redacted before they become an XCom)."""
    headers = response.json()["headers"]
    return {name: headers.get(name) for name in ("Cookie", "X-CSRF-Token")}


with DAG(
    dag_id="example_custom_token_session_csrf",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["example", "custom_token"],
):
    add_note = CustomTokenHttpOperator(
        task_id="add_note",
        custom_token_conn_id="acme_notes",
        endpoint="/api/session/v1/notes",
        method="POST",
        json={"text": "exported {{ ds }}"},
        response_filter=created,
    )
    list_notes = CustomTokenHttpOperator(
        task_id="list_notes",
        custom_token_conn_id="acme_notes",
        endpoint="/api/session/v1/notes",
        response_filter=notes,
    )
    list_notes_deferred = CustomTokenHttpOperator(
        task_id="list_notes_deferred",
        custom_token_conn_id="acme_notes",
        endpoint="/api/session/v1/notes",
        response_filter=notes,
        deferrable=True,
    )
    echo_session = CustomTokenHttpOperator(
        task_id="echo_session",
        custom_token_conn_id="acme_notes",
        endpoint="/api/session/v1/echo",
        log_response=True,
        response_filter=session_headers,
    )
    add_note >> [list_notes, list_notes_deferred] >> echo_session
