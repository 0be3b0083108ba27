"""Airflow names the tests use, wherever the running release keeps them (3.0 to 3.3).

The package takes its own from `airflow_custom_token.compat`; these are the ones only tests need.
"""

from __future__ import annotations

from typing import Any

from airflow_custom_token.compat import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    PokeReturnValue,
    import_first,
)

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "AirflowException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "ExecutorSafeguard",
    "PokeReturnValue",
    "TaskDeferred",
    "deserialize",
    "import_string",
    "redact",
    "serialize",
]

_EXCEPTIONS = ("airflow.sdk.exceptions", "airflow.exceptions")
TaskDeferred: Any = import_first("TaskDeferred", *_EXCEPTIONS)
AirflowRescheduleException: Any = import_first("AirflowRescheduleException", *_EXCEPTIONS)
import_string: Any = import_first(
    "import_string", "airflow.sdk.module_loading", "airflow.utils.module_loading"
)
serialize: Any = import_first("serialize", "airflow.sdk.serde", "airflow.serialization.serde")
deserialize: Any = import_first("deserialize", "airflow.sdk.serde", "airflow.serialization.serde")
#: The secrets masker's redaction (3.0 keeps the masker in `execution_time.secrets_masker`).
redact: Any = import_first("redact", "airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker")
DEFAULT_SENSITIVE_FIELDS: Any = import_first(
    "DEFAULT_SENSITIVE_FIELDS",
    "airflow.sdk._shared.secrets_masker.secrets_masker",
    "airflow.sdk.execution_time.secrets_masker",
)
ExecutorSafeguard: Any = import_first("ExecutorSafeguard", "airflow.sdk.bases.operator")


def __getattr__(name: str) -> Any:
    if name == "DagBag":  # imports the DAG processor: only when a test asks for it
        return import_first("DagBag", "airflow.dag_processing.dagbag", "airflow.models.dagbag")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
