"""The token endpoint: what every token route shares (`serve`, `issue_for`) and the plain token routes.

A token route is a `TokenRoute`: a function of the state and the request that returns the answer.
`serve` runs it after the steps every token request takes (counted, logged, the queued fault and the
configured delay applied); `issue_for` is the usual body of one (method, client credentials, a token).
The routes are listed, by path, in `routes.TOKEN_ROUTES`.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from airflow_custom_token.demo.faults import fault_response
from airflow_custom_token.demo.httpd import Request, Response, json_response
from airflow_custom_token.demo.state import DemoState, Issued

if TYPE_CHECKING:
    from collections.abc import Collection

TokenRoute: TypeAlias = Callable[[DemoState, Request], Response]


def serve(state: DemoState, req: Request, route: TokenRoute) -> Response:
    """Count and log the token request, wait the configured delay, apply a queued fault, then ``route``."""
    fault, delay = state.record_token_request(req)
    if delay:
        time.sleep(delay)
    if fault is not None and (faulted := fault_response(fault)) is not None:
        return faulted
    return route(state, req)


def issue_for(
    state: DemoState,
    req: Request,
    creds: tuple[str, str] | None,
    methods: Collection[str] = ("GET", "POST"),
) -> tuple[str, Issued] | Response:
    """``(account, token issued)`` for a request by ``methods`` with good ``creds``; else a 405 or 401."""
    if req.method not in methods:
        return json_response(405, {"error": "method_not_allowed"})
    account = state.client_account(creds)
    if account is None:
        reason = "unknown client or wrong secret" if creds else "no client credentials found"
        return json_response(401, {"error": "invalid_client", "error_description": reason})
    return account, state.issue(account)


def expiry_value(issued: Issued) -> int | str:
    """The token's lifetime as its expiry style says (``seconds``, ``string``, ``epoch``, ``iso``)."""
    if issued.style == "string":
        return str(issued.lifetime)
    if issued.style == "epoch":
        return int(issued.expiry)
    if issued.style == "iso":
        return datetime.datetime.fromtimestamp(issued.expiry, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return issued.lifetime


def reports_expiry(issued: Issued) -> bool:
    """Whether the answer states the lifetime (expiry styles ``none`` and ``jwt`` do not)."""
    return issued.style not in ("none", "jwt")


def oauth2(state: DemoState, req: Request) -> Response:
    """``/oauth2/v1/token``: an OAuth2-style JSON answer, ``expires_in`` in the expiry style."""
    answer = issue_for(state, req, req.client_credentials())
    if isinstance(answer, Response):
        return answer
    issued = answer[1]
    payload: dict[str, Any] = {"access_token": issued.token, "token_type": "Bearer"}
    if reports_expiry(issued):
        payload["expires_in"] = expiry_value(issued)
    return json_response(200, payload)


def nested_session(state: DemoState, req: Request) -> Response:
    """``/auth/v1/session``: the token nested in JSON (``data.session.id``, ``ttl``)."""
    answer = issue_for(state, req, req.client_credentials())
    if isinstance(answer, Response):
        return answer
    issued = answer[1]
    return json_response(200, {"data": {"session": {"id": issued.token, "ttl": issued.lifetime}}})


def header(state: DemoState, req: Request) -> Response:
    """``/auth/v1/header``: the token in an ``X-Session-Token`` header."""
    answer = issue_for(state, req, req.client_credentials())
    if isinstance(answer, Response):
        return answer
    return json_response(200, {"ok": True}, ("X-Session-Token", answer[1].token))


def cookie(state: DemoState, req: Request) -> Response:
    """``/auth/v1/cookie``: the token in a ``sid`` cookie."""
    answer = issue_for(state, req, req.client_credentials())
    if isinstance(answer, Response):
        return answer
    return json_response(200, {"ok": True}, ("Set-Cookie", f"sid={answer[1].token}; Path=/; HttpOnly"))


def text(state: DemoState, req: Request) -> Response:
    """``/auth/v1/text``: the token as a plain text body."""
    answer = issue_for(state, req, req.client_credentials())
    if isinstance(answer, Response):
        return answer
    return Response(200, answer[1].token.encode(), "text/plain; charset=utf-8")
