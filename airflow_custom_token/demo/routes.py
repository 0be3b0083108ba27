"""Where each request goes: the token routes by path, then ``/login/v1/``, ``/api/``, ``/_control/``.

A new token-endpoint behaviour is a module of its own with a `tokens.TokenRoute` (a function of the
state and the request that returns the answer) and one entry in `TOKEN_ROUTES` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_custom_token.demo import assertions, login, rotation, session, tokens
from airflow_custom_token.demo.api import api_endpoint
from airflow_custom_token.demo.control import control_endpoint
from airflow_custom_token.demo.httpd import json_response

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request, Response
    from airflow_custom_token.demo.state import DemoState

TOKEN_ROUTES: dict[str, tokens.TokenRoute] = {
    "/oauth2/v1/token": tokens.oauth2,
    "/auth/v1/session": tokens.nested_session,
    "/auth/v1/header": tokens.header,
    "/auth/v1/cookie": tokens.cookie,
    "/auth/v1/text": tokens.text,
    session.SESSION_LOGIN: session.login,
    rotation.ROTATING: rotation.rotating,
    assertions.JWT_BEARER: assertions.jwt_bearer,
    login.TOKEN: login.session_token,
}
TOKEN_PATHS = frozenset(TOKEN_ROUTES)


def respond(state: DemoState, req: Request) -> Response:
    """The answer to ``req``; a 400 for bad numbers or shapes in it, a 404 for a path nobody serves."""
    try:
        if (route := TOKEN_ROUTES.get(req.path)) is not None:
            return tokens.serve(state, req, route)
        if req.path.startswith(login.LOGIN):
            return login.login_endpoint(state, req)
        if req.path.startswith("/api/"):
            return api_endpoint(state, req)
        if req.path.startswith("/_control/"):
            return control_endpoint(state, req)
    except (TypeError, ValueError) as exc:  # bad numbers or shapes in the request
        return json_response(400, {"error": "bad_request", "error_description": str(exc)})
    return json_response(404, {"error": "not_found"})
