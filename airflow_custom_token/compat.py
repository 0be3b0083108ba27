"""The one Airflow-facing module: connection lookup (sync and async), configuration, Fernet, masking,
and every difference between Airflow releases.

The core (fields, spec, templating, flow, rules, cache, source, auth, aio) never imports Airflow's
version-specific paths; it imports what it needs from here, lazily where Airflow may be absent.
The surfaces (hooks, operators, sensors, triggers, notifications) import from here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_custom_token.spec import RawConnection


def get_airflow_connection(conn_id: str) -> Any | None:
    """Airflow's connection object for `conn_id`, or None when it is not defined."""
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


async def aget_airflow_connection(conn_id: str) -> Any | None:
    """`get_airflow_connection` for the event loop (the triggerer)."""
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        return None


def lookup_connection(conn_id: str) -> RawConnection | None:
    """An Airflow connection as `RawConnection`, or None when it is not defined."""
    from airflow_custom_token.spec import RawConnection

    conn = get_airflow_connection(conn_id)
    return None if conn is None else RawConnection.from_airflow(conn)


async def alookup_connection(conn_id: str) -> RawConnection | None:
    """`lookup_connection` for the event loop (the triggerer)."""
    from airflow_custom_token.spec import RawConnection

    conn = await aget_airflow_connection(conn_id)
    return None if conn is None else RawConnection.from_airflow(conn)


def config_get(section: str, option: str, fallback: str | None) -> str | None:
    """A configuration value (env `AIRFLOW__SECTION__OPTION` included), or `fallback`."""
    from airflow.sdk.configuration import conf

    value = conf.get(section, option, fallback=fallback)
    return fallback if value is None else str(value)


def get_fernet() -> Any:
    """Airflow's Fernet (`[core] fernet_key`)."""
    from airflow.sdk.crypto import get_fernet as airflow_get_fernet

    return airflow_get_fernet()
