"""Example DAGs, runnable unchanged with `airflow dags test` against the bundled demo API.

The DAG files contain no URLs: they name connections, and `demo_connections` describes those
connections for a running demo API (`scripts/demo` exports them as `AIRFLOW_CONN_*` variables):

- `acme`: the integration (client-credentials token in a JSON answer, sent as `Authorization:
  Bearer`), with `acme_dev`, `acme_qa` and `acme_prod`: its connected accounts, each holding only its
  own credentials and `integration_conn_id: acme`;
- `acme_portal`: a session token read from `data.session.id` and sent as a URL parameter;
- `acme_notes`: a session API: a login with HTTP Basic client authentication answers a session cookie
  and a CSRF token (an additional output, from a header), sent together on every request;
- `acme_rotating`: a client-credentials token renewed with single-use refresh tokens that rotate;
- `acme_jwt`: the JWT bearer grant: each token request carries a JWT signed with the demo's published
  Ed25519 key (`{assertion}`), no client secret;
- `acme_login`: a login in two steps (a login page's nonce and cookie, then a sign-in that answers a
  session cookie), then a token for that session (`access_steps`).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_custom_token.demo.assertions import DEMO_PRIVATE_KEY, GRANT_TYPE

ACCOUNTS = {"dev": "dev-secret", "qa": "qa-secret", "prod": "prod-secret"}
NOTES_ACCOUNT = ("demo", "demo-secret")  # the client of `acme_notes`


def demo_connections(api_url: str) -> dict[str, dict[str, Any]]:
    """The example connections by conn id (`AIRFLOW_CONN_<ID>` JSON bodies) for the demo API at `api_url`.

    Over 60 lines: data, one connection per block.
    """
    connections: dict[str, dict[str, Any]] = {
        "acme": {
            "conn_type": "custom_token",
            "description": "Acme API (integration): client-credentials token, Bearer header",
            "host": api_url,
            "extra": {
                "integration_name": "Acme API",
                "integration_key": "acme",
                "access_endpoint": "/oauth2/v1/token",
                "access_verb": "POST",
                "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
                "inject_as": "header",
                "inject_name": "Authorization",
                "inject_template": "Bearer {token}",
                "integration_parameters": {"serverName": "default"},
                "request_parameters": {"header": {"X-Server-Name": "{serverName}"}},
                "test_endpoint": "/api/v1/whoami",
            },
        },
        "acme_portal": {
            "conn_type": "custom_token",
            "description": "Acme portal: session token from a GET, sent as a URL parameter",
            "host": api_url,
            "login": "qa",
            "password": ACCOUNTS["qa"],
            "extra": {
                "integration_name": "Acme portal",
                "integration_key": "acmeportal",
                "access_endpoint": "/auth/v1/session",
                "access_verb": "GET",
                "access_parameters": {"username": "{login}", "password": "{password}"},
                "access_response_path": "data.session.id",
                "access_expiry_path": "data.session.ttl",
                "inject_as": "url",
                "inject_name": "access_token",
                "inject_template": "{token}",
            },
        },
    }
    connections["acme_notes"] = {
        "conn_type": "custom_token",
        "description": "Acme notes: a session cookie and a CSRF token from a login with Basic client auth",
        "host": api_url,
        "login": NOTES_ACCOUNT[0],
        "password": NOTES_ACCOUNT[1],
        "extra": {
            "integration_name": "Acme notes",
            "integration_key": "acmenotes",
            "access_endpoint": "/session/v1/login",
            "access_verb": "POST",
            "access_auth": "basic",
            "access_response_path": "cookie:session",
            "access_outputs": {"csrf": "header:X-CSRF-Token"},
            "access_expiry_path": "header:X-Session-Expires",
            "inject_as": "header",
            "inject_name": "Cookie",
            "inject_template": "session={token}",
            "request_parameters": {"header": {"X-CSRF-Token": "{csrf}"}},
            "test_endpoint": "/api/session/v1/notes",
        },
    }
    connections["acme_rotating"] = {
        "conn_type": "custom_token",
        "description": "Acme with refresh tokens: a client-credentials token, renewed with single-use, "
        "rotating refresh tokens",
        "host": api_url,
        "login": "dev",
        "password": ACCOUNTS["dev"],
        "extra": {
            "integration_name": "Acme rotating",
            "integration_key": "acmerotating",
            "access_endpoint": "/oauth2/v1/rotating",
            "access_verb": "POST",
            "access_parameters": {
                "grant_type": "client_credentials", "client_id": "{login}", "client_secret": "{password}"
            },
            "refresh_path": "refresh_token",
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
            "test_endpoint": "/api/v1/whoami",
        },
    }  # fmt: skip
    connections["acme_jwt"] = {
        "conn_type": "custom_token",
        "description": "Acme with signed JWT assertions: the JWT bearer grant, signed with the demo key",
        "host": api_url,
        "login": "prod",
        "extra": {
            "integration_name": "Acme JWT",
            "integration_key": "acmejwt",
            "access_endpoint": "/oauth2/v1/jwt-bearer",
            "access_verb": "POST",
            "access_parameters": {"grant_type": GRANT_TYPE, "assertion": "{assertion}"},
            "assertion_private_key": DEMO_PRIVATE_KEY,
            "assertion_algorithm": "EdDSA",
            "assertion_claims": {"scope": "read"},
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
            "test_endpoint": "/api/v1/whoami",
        },
    }
    connections["acme_login"] = {
        "conn_type": "custom_token",
        "description": "Acme behind a login form: a login page (nonce and cookie), a sign-in (session "
        "cookie), then a token for that session",
        "host": api_url,
        "login": "qa",
        "password": ACCOUNTS["qa"],
        "extra": {
            "integration_name": "Acme login",
            "integration_key": "acmelogin",
            "access_steps": [
                {"endpoint": "/login/v1/page", "verb": "GET", "outputs": {"nonce": "nonce"}},
                {
                    "endpoint": "/login/v1/sign-in", "verb": "POST",
                    "parameters": {"username": "{login}", "password": "{password}", "nonce": "{nonce}"},
                },
            ],
            "access_endpoint": "/login/v1/token",
            "access_verb": "POST",
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
            "test_endpoint": "/api/v1/whoami",
        },
    }  # fmt: skip
    for account, secret in ACCOUNTS.items():
        connections[f"acme_{account}"] = {
            "conn_type": "custom_token",
            "description": f"Acme API, connected account {account.upper()}",
            "login": account,
            "password": secret,
            "extra": {"integration_conn_id": "acme"},
        }
    return connections


def environment(api_url: str) -> dict[str, str]:
    """`AIRFLOW_CONN_<ID>` variables for `demo_connections`."""
    connections = demo_connections(api_url)
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(body) for conn_id, body in connections.items()}
