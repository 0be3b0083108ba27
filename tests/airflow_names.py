"""Airflow names the tests use, wherever the running release keeps them (3.0 to 3.3).

The package takes its own from `airflow_custom_token.compat`; these are the ones only tests need.
"""

from __future__ import annotations

import sqlite3
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
    "xcom_return_values",
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


def xcom_return_values(db: sqlite3.Connection, dag_id: str, run_id: str | None = None) -> list[Any]:
    """(task_id, JSON value) of a DAG's `return_value` XComs (one run's, when given) in a SQLite metadata
    database: 3.4 keeps them in `xcom_v2`, keyed by the task attempt (`task_instance.id`); 3.0-3.3 in
    `xcom`, keyed by dag, task and run."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "xcom_v2" in tables:
        sql = (
            "SELECT ti.task_id, x.value FROM xcom_v2 AS x JOIN task_instance AS ti"
            " ON ti.id = x.task_instance_id WHERE ti.dag_id = ? AND x.key = 'return_value'"
        )
        run_column = "ti.run_id"
    else:
        sql = "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'"
        run_column = "run_id"
    if run_id is None:
        return db.execute(sql, (dag_id,)).fetchall()
    return db.execute(f"{sql} AND {run_column} = ?", (dag_id, run_id)).fetchall()


def __getattr__(name: str) -> Any:
    if name == "DagBag":  # imports the DAG processor: only when a test asks for it
        return import_first("DagBag", "airflow.dag_processing.dagbag", "airflow.models.dagbag")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
