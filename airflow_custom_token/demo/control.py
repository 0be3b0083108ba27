"""``/_control/``: the in-process controls of `DemoState` over HTTP (stats, logs, config, faults)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_custom_token.demo.httpd import json_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_custom_token.demo.httpd import Request, Response
    from airflow_custom_token.demo.state import DemoState


def control_endpoint(state: DemoState, req: Request) -> Response:
    """GET ``stats``, ``config``, ``token_log``, ``api_log``; POST ``reset``, ``revoke``, ``config``,
    ``consent``, ``faults``."""
    name, body = req.path.removeprefix("/_control/"), req.json
    views: dict[str, Callable[[], Any]] = {
        "stats": state.stats,
        "config": state.config,
        "token_log": lambda: state.token_log,
        "api_log": lambda: state.api_log,
    }
    if req.method == "GET" and name in views:
        return json_response(200, views[name]())
    if req.method != "POST":
        return json_response(404, {"error": "not_found"})
    if name == "reset":
        state.reset(config=isinstance(body, dict) and bool(body.get("config")))
    elif name == "revoke":
        state.revoke_all()
    elif name == "config":
        if not isinstance(body, dict):
            return json_response(400, {"error": "bad_request", "error_description": "need an object"})
        if "lifetime" in body:
            state.set_lifetime(body["lifetime"])
        if "expiry_style" in body:
            state.set_expiry_style(body["expiry_style"])
        if "reject_all" in body:
            state.set_reject_all(body["reject_all"])
        if "token_delay" in body:
            state.set_token_delay(body["token_delay"])
        if "single_active" in body:
            state.set_single_active(body["single_active"])
        return json_response(200, state.config())
    elif name == "consent":  # a one-time consent: the first refresh token of a rotation
        if not isinstance(body, dict) or body.get("account") not in state.accounts:
            return json_response(400, {"error": "bad_request", "error_description": "need a known account"})
        return json_response(200, {"refresh_token": state.consent(str(body["account"]))})
    elif name == "faults":
        faults = [dict(fault) for fault in (body if isinstance(body, list) else [body])]
        state.push_faults(faults)
        return json_response(200, {"queued": len(faults)})
    else:
        return json_response(404, {"error": "not_found"})
    return json_response(200, {"ok": True})
