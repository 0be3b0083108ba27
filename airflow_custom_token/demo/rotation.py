"""``/oauth2/v1/rotating``: an OAuth token endpoint that rotates single-use refresh tokens.

``grant_type=client_credentials`` (client credentials as for ``/oauth2/v1/token``) answers an access token
and a refresh token; ``grant_type=refresh_token`` with ``refresh_token`` answers a new pair and spends the
one sent: sent again, it is refused (``400 invalid_grant``) and its whole family is revoked (reuse
detection), so a client that ever uses one twice must start again from a consent. A first refresh token
without client credentials comes from ``POST /_control/consent`` (the one-time consent of APIs like Xero).
Client credentials sent with a refresh request must be the account's (401 otherwise); a public client
sends none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_custom_token.demo.httpd import json_response
from airflow_custom_token.demo.tokens import expiry_value, reports_expiry

if TYPE_CHECKING:
    from airflow_custom_token.demo.httpd import Request, Response
    from airflow_custom_token.demo.state import DemoState

ROTATING = "/oauth2/v1/rotating"
REFRESH_LIFETIME = 86_400  # what the answer states as refresh_expires_in


def rotating(state: DemoState, req: Request) -> Response:
    """The token or refresh grant; 400 ``invalid_grant`` for a refresh token unknown or used before."""
    if req.method != "POST":
        return json_response(405, {"error": "method_not_allowed"})
    fields = req.json if isinstance(req.json, dict) else (req.form or {})
    grant = str(fields.get("grant_type") or "")
    if grant == "refresh_token":
        creds = req.client_credentials()
        if creds is not None and state.client_account(creds) is None:
            return json_response(401, {"error": "invalid_client"})
        account, family, why = state.redeem(str(fields.get("refresh_token") or ""))
        if account is None:
            return json_response(400, {"error": "invalid_grant", "error_description": why})
        return _pair(state, account, family)
    if grant != "client_credentials":
        return json_response(400, {"error": "unsupported_grant_type"})
    creds = req.client_credentials()
    account = state.client_account(creds)
    if account is None:
        return json_response(401, {"error": "invalid_client"})
    return _pair(state, account, None)


def _pair(state: DemoState, account: str, family: str | None) -> Response:
    issued = state.issue(account)
    payload: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "refresh_token": state.consent(account, family),
        "refresh_expires_in": REFRESH_LIFETIME,
    }
    if reports_expiry(issued):
        payload["expires_in"] = expiry_value(issued)
    return json_response(200, payload)
