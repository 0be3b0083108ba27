"""The token-protected API under ``/api/``: who may call it, and what each of its paths answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from airflow_custom_token.demo.httpd import Response, json_response
from airflow_custom_token.demo.session import SESSION_API, session_route

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request
    from airflow_custom_token.demo.state import DemoState

ITEMS = [{"id": i, "name": f"item-{i}"} for i in range(1, 11)]
OPEN_REDIRECT = "/api/v1/redirect"  # no token wanted: a 302 to ?to=<url>


def api_endpoint(state: DemoState, req: Request) -> Response:
    """Authenticate (any header, cookie or query value; the session API: its cookie and CSRF token)."""
    candidates, is_open = req.token_candidates(), req.path == OPEN_REDIRECT
    in_session = req.path.startswith(SESSION_API)
    if in_session:  # the session cookie only, and then its CSRF token
        candidates = [req.cookie("session") or ""]
    account, token, stale = state.authenticate_api(req, candidates, in_session=in_session, is_open=is_open)
    if is_open:
        target = req.query.get("to", "")
        if not urlsplit(target).scheme:
            return json_response(400, {"error": "bad_request", "error_description": "need ?to=<url>"})
        return json_response(302, {"location": target}, ("Location", target))
    if stale:
        return json_response(
            403, {"error": "csrf_mismatch", "error_description": "X-CSRF-Token is not the session's"}
        )
    if account is None or token is None:
        return json_response(401, {"error": "invalid_token"}, ("WWW-Authenticate", "Bearer"))
    return api_route(state, req, account, token)


def api_route(state: DemoState, req: Request, account: str, token: str) -> Response:
    """An authenticated API request: whoami, the session API, echo, items, jobs, reports, status."""
    path, query = req.path, req.query
    if path == "/api/v1/whoami":
        x_headers = {k: v for k, v in req.headers.items() if k.lower().startswith("x-")}
        seen = {
            part: {k: "<token>" if token in v else v for k, v in values.items()}
            for part, values in (("request_headers", x_headers), ("query", query))
        }
        return json_response(200, {"account": account, "host": req.message.get("Host"), **seen})
    if path.startswith(SESSION_API):
        return session_route(state, req, account)
    if path == "/api/v1/echo":
        body = req.body.decode("utf-8", "replace")
        echo = {"method": req.method, "path": path, "headers": req.headers, "query": query}
        return json_response(200, {**echo, "query_string": req.query_string, "body": body})
    if path == "/api/v1/items":
        return _items(int(query.get("page", 1)), int(query.get("per_page", 3)))
    if path == "/api/v1/jobs" and req.method == "POST":
        seconds = float(req.json.get("seconds", 3) if isinstance(req.json, dict) else 3)
        return json_response(201, {"id": state.add_job(seconds), "status": "running"})
    if path.startswith("/api/v1/jobs/"):
        return _job(state, path.removeprefix("/api/v1/jobs/"))
    if path.startswith("/api/v1/reports/"):
        name = path.removeprefix("/api/v1/reports/")
        if state.since_reset() < float(query.get("ready_after", 2)):
            return json_response(404, {"error": "not_found", "name": name, "ready": False})
        return json_response(200, {"name": name, "ready": True})
    if path.startswith("/api/v1/status/"):
        code = int(path.removeprefix("/api/v1/status/"))
        if not 200 <= code <= 599:
            return json_response(400, {"error": "bad_request", "error_description": "status 200-599"})
        return Response(code) if code in (204, 304) else json_response(code, {"status": code})
    return json_response(404, {"error": "not_found"})


def _items(page: int, per_page: int) -> Response:
    """A page of `ITEMS`, with the next page's number (None on the last)."""
    if page < 1 or per_page < 1:
        return json_response(400, {"error": "bad_request", "error_description": "page >= 1"})
    start = (page - 1) * per_page
    more = start + per_page < len(ITEMS)
    items = ITEMS[start : start + per_page]
    return json_response(200, {"items": items, "page": page, "next_page": page + 1 if more else None})


def _job(state: DemoState, job_id: str) -> Response:
    """A job's status: running until its seconds have passed, then done with a result."""
    job = state.job(job_id)
    if job is None:
        return json_response(404, {"error": "not_found"})
    if time.monotonic() - job[0] < job[1]:
        return json_response(200, {"id": job_id, "status": "running"})
    return json_response(200, {"id": job_id, "status": "done", "result": {"rows": 42}})
