"""The session API: a login (Basic auth) answering with a session cookie and a CSRF token, and the
routes under ``/api/session/`` that want both (``notes``, ``echo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_custom_token.demo.httpd import Response, json_response
from airflow_custom_token.demo.tokens import expiry_value, issue_for, reports_expiry

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request
    from airflow_custom_token.demo.state import DemoState

SESSION_LOGIN = "/session/v1/login"  # Basic client auth; a session cookie plus an X-CSRF-Token header
SESSION_API = "/api/session/"  # wants the session cookie and that session's X-CSRF-Token


def login(state: DemoState, req: Request) -> Response:
    """A token route (POST only, Basic auth): a new session, its cookie, CSRF token and lifetime."""
    answer = issue_for(state, req, req.basic_credentials(), methods=("POST",))
    if isinstance(answer, Response):
        return answer
    account, issued = answer
    csrf = state.open_session(issued.token)
    headers = [("Set-Cookie", f"session={issued.token}; Path=/; HttpOnly"), ("X-CSRF-Token", csrf)]
    if reports_expiry(issued):
        headers.append(("X-Session-Expires", str(expiry_value(issued))))
    return json_response(200, {"user": account}, *headers)


def session_route(state: DemoState, req: Request, account: str) -> Response:
    """The session API (session cookie + CSRF token checked): ``notes`` (GET, POST) and ``echo``."""
    path = req.path.removeprefix(SESSION_API)
    if path == "v1/notes" and req.method == "POST":
        text = req.json.get("text") if isinstance(req.json, dict) else None
        if not isinstance(text, str):
            return json_response(400, {"error": "bad_request", "error_description": 'need {"text": "..."}'})
        return json_response(201, state.add_note(account, text))
    if path == "v1/notes":
        return json_response(200, {"account": account, "notes": state.notes(account)})
    if path == "v1/echo":  # the session's headers (Cookie, X-*); ?status=500: as an error answer
        headers = {k: v for k, v in req.headers.items() if k.lower() == "cookie" or k[:2].lower() == "x-"}
        echo = {"method": req.method, "path": req.path, "headers": headers, "query": req.query}
        status = int(req.query.get("status", 200))
        return json_response(status, {**echo, "body": req.body.decode("utf-8", "replace")})
    return json_response(404, {"error": "not_found"})
