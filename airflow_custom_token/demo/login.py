"""A login in two steps, then a token for the session it opened (the demo of `access_steps`).

1. ``GET /login/v1/page``: a login page; it sets a ``login_page`` cookie and answers ``{"nonce": ...}``.
2. ``POST /login/v1/sign-in`` (form ``username``, ``password``, ``nonce``), with that cookie: the
   nonce must be the page's (single use) and the credentials an account's. It answers ``303 See Other``
   to ``/login/v1/welcome`` (as form logins do; that page answers 410: a client must not follow) with
   a ``session`` cookie; wrong ones answer 401.
3. ``POST /login/v1/token`` with that ``session`` cookie (single use): a token answer, as
   ``/oauth2/v1/token``'s; it is the token request (counted and logged as one).

The login page and the sign-in are counted as ``login_pages`` and ``logins`` (``logins_refused``), not
as token requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_custom_token.demo.httpd import Response, json_response
from airflow_custom_token.demo.tokens import expiry_value, reports_expiry

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request
    from airflow_custom_token.demo.state import DemoState

LOGIN = "/login/v1/"
PAGE, SIGN_IN, WELCOME, TOKEN = (f"{LOGIN}{p}" for p in ("page", "sign-in", "welcome", "token"))


def login_endpoint(state: DemoState, req: Request) -> Response:
    """The login page and the sign-in (``/login/v1/...``, not token requests)."""
    if req.path == PAGE and req.method == "GET":
        cookie, nonce = state.login_page()
        return json_response(
            200, {"nonce": nonce}, ("Set-Cookie", f"login_page={cookie}; Path=/login; HttpOnly")
        )
    if req.path == SIGN_IN and req.method == "POST":
        form = req.form or {}
        creds = (str(form.get("username") or ""), str(form.get("password") or ""))
        session, why = state.sign_in(req.cookie("login_page"), str(form.get("nonce") or ""), creds)
        if session is None:
            return json_response(401, {"error": "login_failed", "error_description": why})
        set_cookie = ("Set-Cookie", f"session={session}; Path=/; HttpOnly")
        return Response(303, b"", "text/plain", (("Location", WELCOME), set_cookie))
    if req.path == WELCOME:
        return json_response(
            410, {"error": "redirect_followed", "error_description": "a login step followed"}
        )
    return json_response(404, {"error": "not_found"})


def session_token(state: DemoState, req: Request) -> Response:
    """``POST /login/v1/token`` (a token route): a token for a signed-in session cookie."""
    if req.method != "POST":
        return json_response(405, {"error": "method_not_allowed"})
    account = state.signed_in(req.cookie("session"))
    if account is None:
        return json_response(401, {"error": "invalid_session", "error_description": "sign in first"})
    issued = state.issue(account)
    payload: dict[str, object] = {"access_token": issued.token, "token_type": "Bearer"}
    if reports_expiry(issued):
        payload["expires_in"] = expiry_value(issued)
    return json_response(200, payload)
