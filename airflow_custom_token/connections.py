"""Connected accounts from Airflow's connections: read, validated and registered once, for every surface.

The sync hook, the async hook (and so the triggers), `CustomTokenAuth.from_airflow` and the Test button
all build their account here: the inheritance chain read with Airflow's connection lookup
(`compat.get_airflow_connection`, or its async twin in the triggerer), `build_account` run on it with
`[custom_token]`'s settings, and the account's secrets registered with the masker.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_custom_token import compat, redaction
from airflow_custom_token.account import (
    ConnectedAccount,
    RawConnection,
    adrive_chain,
    build_account,
    drive_chain,
)
from airflow_custom_token.settings import Settings, load_settings


def lookup_connection(conn_id: str) -> RawConnection | None:
    """An Airflow connection as `RawConnection`, or None when it is not defined."""
    conn = compat.get_airflow_connection(conn_id)
    return None if conn is None else RawConnection.from_airflow(conn)


async def alookup_connection(conn_id: str) -> RawConnection | None:
    """`lookup_connection` for the event loop (the triggerer)."""
    conn = await compat.aget_airflow_connection(conn_id)
    return None if conn is None else RawConnection.from_airflow(conn)


def build(
    chain: Sequence[RawConnection], integration_parameters: Mapping[str, Any] | None, settings: Settings
) -> ConnectedAccount:
    """`build_account` with `[custom_token]`'s settings (no secret registered: see `account`)."""
    return build_account(
        list(chain),
        integration_parameters,
        redirect_uris=settings.redirect_uris,
        api_timeout=settings.api_request_timeout,
        max_lifetime=settings.max_token_lifetime,
    )


def account(
    conn_id: str, integration_parameters: Mapping[str, Any] | None = None, settings: Settings | None = None
) -> ConnectedAccount:
    """The validated account of `conn_id`, its password and secret parameters registered with the masker;
    raises `ConfigurationError` listing every problem."""
    chain = drive_chain(conn_id, lookup_connection)
    built = build(chain, integration_parameters, settings or load_settings())
    redaction.register(*built.secrets)
    return built


async def aaccount(
    conn_id: str, integration_parameters: Mapping[str, Any] | None, settings: Settings
) -> ConnectedAccount:
    """`account` for the event loop (secrets registered by the caller, with `redaction.aregister`)."""
    chain = await adrive_chain(conn_id, alookup_connection)
    return build(chain, integration_parameters, settings)


# One triggerer loop runs many triggers of the same account; they share one connection lookup (single
# flight) and reuse it for ACCOUNT_TTL seconds, so a changed connection reaches new triggers soon.
ACCOUNT_TTL = 30.0
_accounts: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[tuple[Settings, ConnectedAccount]]]]
] = weakref.WeakKeyDictionary()


async def shared_account(
    conn_id: str, integration_parameters: Mapping[str, Any] | None
) -> tuple[Settings, ConnectedAccount]:
    """`load_settings()` and `aaccount(...)`, shared by the hooks (and triggers) of this event loop."""
    loop = asyncio.get_running_loop()
    key = json.dumps([conn_id, integration_parameters or {}], sort_keys=True, default=str)
    entries = _accounts.setdefault(loop, {})
    entry = entries.get(key)
    if entry is None or time.monotonic() - entry[0] > ACCOUNT_TTL:

        async def load() -> tuple[Settings, ConnectedAccount]:
            settings = load_settings()
            return settings, await aaccount(conn_id, integration_parameters, settings)

        entry = (time.monotonic(), asyncio.ensure_future(load()))
        entries[key] = entry
    try:
        return await asyncio.shield(entry[1])
    except Exception:
        entries.pop(key, None)  # a failed lookup is not remembered
        raise
