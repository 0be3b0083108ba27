"""Provider metadata that Airflow discovers through the ``apache_airflow_provider`` entry point.

Airflow reads this dict to list the provider, to register the ``custom_token`` connection type, to
render its connection form (``conn-fields`` and ``ui-field-behaviour``: since Airflow 3.2 the React UI
renders only what is declared here) and to document the ``[custom_token]`` configuration section.

The fields, the form's behaviour and the options are declared once, in ``airflow_custom_token.fields``;
this module only assembles them. Both import nothing but the standard library, so that provider
discovery stays cheap.

No extra-field key contains a word that Airflow's secrets masker treats as sensitive (``token``,
``secret``, ``password``, ``authorization``, ...): the masker hides values by key *substring*, and a key
such as ``token_parameter_type`` would register ``header`` as a secret in every log.
"""

from __future__ import annotations

import copy
from typing import Any

from airflow_custom_token.fields import (
    CONFIG_DESCRIPTION,
    CONFIG_SECTION,
    CONN_TYPE,
    EXTRA_FIELDS,
    OPTIONS,
    REDIRECT_URIS,
    conn_field,
    ui_field_behaviour,
)

__all__ = ["REDIRECT_URIS", "get_provider_info"]

PACKAGE_NAME = "airflow-custom-token"
VERSION = "0.2.0"
INTEGRATION = "Custom Token"
HOOK_CLASS = "airflow_custom_token.hooks.custom_token.CustomTokenHook"


def _conn_fields() -> dict[str, dict[str, Any]]:
    return {field.key: conn_field(field) for field in EXTRA_FIELDS}


def _config() -> dict[str, Any]:
    return {
        CONFIG_SECTION: {
            "description": CONFIG_DESCRIPTION,
            "options": {option.name: option.provider_info() for option in OPTIONS},
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
        # the provider-level CLI (`airflow custom-token ...`, Airflow 3.2+; earlier releases ignore it)
        "cli": ["airflow_custom_token.cli.get_provider_cli_commands"],
        "triggers": _modules("airflow_custom_token.triggers.http"),
        "notifications": ["airflow_custom_token.notifications.http.CustomTokenNotifier"],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": INTEGRATION,
                "conn-fields": _conn_fields(),
                "ui-field-behaviour": ui_field_behaviour(),
            }
        ],
        "config": _config(),
    }
    return copy.deepcopy(info)  # callers may mutate it; the module's tables stay intact
