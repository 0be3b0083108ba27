"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point.

Airflow reads this dict to list the provider, to register the ``custom_token`` connection type, to
render its connection form (``conn-fields`` and ``ui-field-behaviour``: since Airflow 3.2 the React UI
renders only what is declared here) and to document the ``[custom_token]`` configuration section.

The module imports nothing but the standard library, so that provider discovery stays cheap.

No extra-field key contains a word that Airflow's secrets masker treats as sensitive (``token``,
``secret``, ``password``, ``authorization``, ...): the masker hides values by key *substring*, and a key
such as ``token_parameter_type`` would register ``header`` as a secret in every log.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["REDIRECT_URIS", "get_provider_info"]

PACKAGE_NAME = "airflow-custom-token"
VERSION = "0.1.0"
INTEGRATION = "Custom Token"
CONN_TYPE = "custom_token"
HOOK_CLASS = "airflow_custom_token.hooks.custom_token.CustomTokenHook"

#: Redirect URI of each realm; ``{redirectUri}`` in any input. Overridable in ``[custom_token]``.
REDIRECT_URIS: dict[str, str] = {
    realm: f"https://{realm}.api.prod.airkit.com/internal/sessions/v1/auth/callback"
    for realm in ("us", "eu", "ap")
}

Schema = dict[str, Any]


# --- JSON-schema idioms of the Airflow 3.3 connection form -----------------------------------------
# A type without "null" renders as a required field; enums render as selects, objects as JSON editors,
# arrays of strings as a one-item-per-line text box, arrays of other items as a JSON editor.


def _text(*, required: bool = False, default: str | None = None, **extra: Any) -> Schema:
    return _typed("string", required, default, extra)


def _choice(*values: str, default: str, required: bool = False) -> Schema:
    return _typed("string", required, default, {"enum": list(values)})


def _integer(*, default: int | None = None, **extra: Any) -> Schema:
    return _typed("integer", False, default, extra)


def _number(**extra: Any) -> Schema:
    return _typed("number", False, None, extra)


def _flag(*, default: bool) -> Schema:
    return _typed("boolean", False, default, {})


def _object(**extra: Any) -> Schema:
    return _typed("object", False, None, extra)


def _array(items: Schema, *, default: list[Any] | None = None) -> Schema:
    return _typed("array", False, default, {"items": items})


def _typed(type_: str, required: bool, default: Any, extra: dict[str, Any]) -> Schema:
    schema: Schema = {"type": type_ if required else [type_, "null"], **extra}
    if default is not None:
        schema["default"] = default
    return schema


_REALMS_HELP = "; ".join(f"{realm}: {uri}" for realm, uri in REDIRECT_URIS.items())

# key, label, schema, one-line description. The order is the order of the form.
_EXTRA_FIELDS: tuple[tuple[str, str, Schema, str], ...] = (
    ("integration_name", "Integration Name", _text(),
     "Display name of the integration; defaults to the connection id."),
    ("integration_key", "Key", _text(pattern="^[A-Za-z0-9]+$"),
     "Unique identifier of the integration: letters and digits only. Required, unless inherited "
     "through Integration."),
    ("integration_parameters", "Integration Parameters", _object(),
     "Values for {parameterName} placeholders in any input, for this connected account."),
    ("integration_conn_id", "Integration", _text(),
     "Connection id of another Custom Token connection whose integration definition this one inherits "
     "(a connected account of a shared integration)."),
    ("access_endpoint", "Access Token Endpoint", _text(),
     "URL that returns the access token. Required, unless inherited through Integration."),
    ("access_verb", "Access Token Verb", _choice("GET", "POST", default="POST", required=True),
     "HTTP verb of the token request."),
    ("access_parameters", "Access Token Parameters", _object(),
     "Parameters of the token request: the query string for GET, the body for POST."),
    ("access_body", "Access Token Body Format", _choice("form", "json", default="form"),
     "Encoding of the POST body: form (application/x-www-form-urlencoded) or json."),
    ("access_headers", "Access Token Headers", _object(),
     "Headers of the token request."),
    ("access_response_path", "Token Location", _text(default="access_token"),
     "Where the answer carries the token: a dotted JSON path, header:<Name>, cookie:<name>, "
     "or text (the whole body)."),
    ("access_expiry_path", "Expiry Location", _text(default="expires_in"),
     "Dotted JSON path of the token's lifetime in seconds, or of its absolute expiry time "
     "(epoch seconds or ISO 8601)."),
    ("access_lifetime", "Default Lifetime (s)", _integer(default=3600, minimum=1),
     "Lifetime in seconds assumed when the token answer states none."),
    ("inject_as", "Token Parameter Type", _choice("header", "url", default="header", required=True),
     "Where API requests carry the token: an HTTP header or a URL query parameter."),
    ("inject_name", "Token Parameter Name", _text(required=True, default="Authorization"),
     "Name of the header or query parameter that carries the token."),
    ("inject_template", "Token Parameter Value Template",
     _text(required=True, default="Bearer {token}", pattern=r".*\{token\}.*"),
     "Value of that header or parameter; must contain {token}, e.g. Bearer {token}."),
    ("request_parameters", "Request Parameters", _object(),
     'Added to every API request: {"header": {"Name": "value"}, "url": {"name": "value"}}.'),
    ("realm", "Realm", _choice("us", "eu", "ap", default="us"),
     f"Selects the redirect URI, usable as {{redirectUri}} in any input. {_REALMS_HELP}."),
    ("refresh_on", "Refresh On Status", _array({"type": "integer", "minimum": 100, "maximum": 599},
                                               default=[401]),
     "HTTP statuses that discard the token, fetch a new one and retry the request once."),
    ("test_endpoint", "Test Endpoint", _text(),
     "Endpoint (a path under the Base URL, or a URL) that the Test button GETs with the token."),
    ("timeout", "Timeout (s)", _number(exclusiveMinimum=0),
     "Timeout in seconds of each request."),
    ("verify", "Verify TLS", _flag(default=True),
     "Verify the servers' TLS certificates."),
    ("allowed_hosts", "Allowed Hosts", _array({"type": "string"}),
     "Origins besides the Base URL's that may receive the token, one a line (https://host[:port])."),
)  # fmt: skip

_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "Base URL", "login": "Login", "password": "Password"},
    "placeholders": {
        "host": "https://{serverName}.example.com/api",
        "login": "Client id or user name; usable as {login} in any input",
        "password": "Client secret or password; usable as {password} in any input",
    },
}

# name, type, default, example, description
_CONFIG_OPTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    *(
        (f"redirect_uri_{realm}", "string", uri, uri,
         f"Redirect URI of the {realm} realm: {{redirectUri}} in the inputs of a connection whose Realm "
         f"is {realm}.")
        for realm, uri in REDIRECT_URIS.items()
    ),
    ("host_cache", "boolean", "True", "False",
     "Keep tokens in a persistent per-host cache, shared by the processes of this host, so that tasks "
     "reuse a token until it expires. False keeps tokens in process memory only."),
    ("cache_dir", "string", "", "/var/cache/airflow/custom_token",
     "Directory of the per-host token cache. Empty means $AIRFLOW_HOME/custom_token_cache."),
    ("refresh_margin", "float", "60", "120",
     "Seconds before expiry at which a token is refreshed; at most half of the token's lifetime."),
    ("token_request_retries", "integer", "3", "5",
     "Retries of a token request after a connection error, a timeout, a 429 or a 5xx answer."),
    ("retry_wait_max", "float", "30", "10",
     "Cap in seconds of one exponential backoff wait between token request retries."),
    ("retry_after_max", "float", "60", "120",
     "Cap in seconds on an honoured Retry-After header of a token answer."),
    ("token_request_timeout", "float", "30", "10",
     "Timeout in seconds of a token request when the connection sets none."),
)  # fmt: skip


def _conn_fields() -> dict[str, dict[str, Any]]:
    return {
        key: {"label": label, "description": description, "schema": schema}
        for key, label, schema, description in _EXTRA_FIELDS
    }


def _config() -> dict[str, Any]:
    options = {
        name: {
            "description": description,
            "version_added": VERSION,
            "type": type_,
            "example": example,
            "default": default,
        }
        for name, type_, default, example, description in _CONFIG_OPTIONS
    }
    return {
        "custom_token": {
            "description": "Token caching, refreshing and retrying of the Custom Token provider.",
            "options": options,
        }
    }


def _modules(*modules: str) -> list[dict[str, Any]]:
    return [{"integration-name": INTEGRATION, "python-modules": list(modules)}]


def get_provider_info() -> dict[str, Any]:
    """Return the provider info dict (validates against ``airflow/provider_info.schema.json``)."""
    info: dict[str, Any] = {
        "package-name": PACKAGE_NAME,
        "name": INTEGRATION,
        "description": (
            "Calls APIs that authenticate with a custom token: fetches the token from a token endpoint, "
            "caches and refreshes it, and injects it into every request as a header or URL parameter."
        ),
        "versions": [VERSION],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["protocol", "software"]}],
        "hooks": _modules("airflow_custom_token.hooks.custom_token"),
        "operators": _modules("airflow_custom_token.operators.http"),
        "sensors": _modules("airflow_custom_token.sensors.http"),
        "triggers": _modules("airflow_custom_token.triggers.http"),
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": INTEGRATION,
                "conn-fields": _conn_fields(),
                "ui-field-behaviour": _UI_FIELD_BEHAVIOUR,
            }
        ],
        "config": _config(),
    }
    return copy.deepcopy(info)  # callers may mutate it; the module's tables stay intact
