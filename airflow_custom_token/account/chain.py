"""The inheritance chain: an account and the integrations it inherits from (`integration_conn_id`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token.account.raw import RawConnection, normalize_extra, read_extra
from airflow_custom_token.errors import (
    ConfigurationError,
)
from airflow_custom_token.fields import (
    CONN_TYPE,
    EXTRA_FIELDS,
    FIELDS,
    STANDARD_FIELDS,
)

ChainLoader = Generator[str, "RawConnection | None", list[RawConnection]]


def load_chain(conn_id: str) -> ChainLoader:
    """Yield the conn ids to fetch (account first, then its integrations); return the chain.

    Drive it with `drive_chain` (sync) or send connections yourself (async). A cycle or a missing
    connection raises `ConfigurationError`.
    """
    chain: list[RawConnection] = []
    seen: list[str] = []
    current: str | None = conn_id
    while current:
        if current in seen:
            path = " -> ".join([*seen, current])
            raise ConfigurationError(conn_id, [f"integration_conn_id: inheritance cycle {path}"])
        seen.append(current)
        raw = yield current
        if raw is None:
            if not chain:
                raise ConfigurationError(conn_id, [f"connection {current!r} is not defined"])
            raise ConfigurationError(
                conn_id,
                [
                    f"integration_conn_id: expected the conn id of a custom_token connection; "
                    f"found {current!r}, which is not defined"
                ],
            )
        if chain and raw.conn_type and raw.conn_type != CONN_TYPE:
            raise ConfigurationError(
                conn_id,
                [
                    f"integration_conn_id: expected a custom_token connection; {current!r} has conn_type "
                    f"{raw.conn_type!r}"
                ],
            )
        chain.append(raw)
        parent = normalize_extra(raw.extra).get("integration_conn_id")
        current = str(parent) if parent else None
    return chain


def drive_chain(conn_id: str, lookup: Callable[[str], RawConnection | None]) -> list[RawConnection]:
    """Run `load_chain` with a synchronous lookup."""
    gen = load_chain(conn_id)
    try:
        wanted = next(gen)
        while True:
            wanted = gen.send(lookup(wanted))
    except StopIteration as stop:
        return list(stop.value)


async def adrive_chain(
    conn_id: str, lookup: Callable[[str], Awaitable[RawConnection | None]]
) -> list[RawConnection]:
    """Run `load_chain` with an asynchronous lookup (the triggerer)."""
    gen = load_chain(conn_id)
    try:
        wanted = next(gen)
        while True:
            wanted = gen.send(await lookup(wanted))
    except StopIteration as stop:
        return list(stop.value)


_STANDARD = tuple(f.name for f in STANDARD_FIELDS if not f.hidden)  # host, login, password


@dataclass(frozen=True)
class MergedChain:
    """The chain merged into one connection: what the fields say before any check."""

    conn_id: str  # the account's
    fields: Mapping[str, Any]  # extra fields set along the chain, typed (objects merged by key: always set)
    standard: Mapping[str, str | None] = field(repr=False)  # host, login, password: last non-empty wins

    @property
    def host(self) -> str | None:
        return self.standard.get("host")


def merge_chain(chain: Sequence[RawConnection]) -> tuple[MergedChain, list[str]]:
    """Merge the chain, integration first, account last.

    A value set further down overrides, except a value equal to the form's default (a form-saved account
    always holds it, chosen or not); objects marked `merge_by_key` (integration_parameters) merge key by
    key; empty standard fields inherit.
    """
    problems: list[str] = []
    merged: dict[str, Any] = {}
    by_key: dict[str, dict[str, Any]] = {f.key: {} for f in EXTRA_FIELDS if f.merge_by_key}
    standard: dict[str, str | None] = dict.fromkeys(_STANDARD)
    for raw in reversed(chain):
        if raw.extra_error:
            problems.append(raw.extra_error if raw is chain[0] else f"{raw.extra_error} (in {raw.conn_id!r})")
        typed, found = read_extra(raw.extra)
        problems += found
        for key, value in typed.items():
            spec = FIELDS[key]
            if spec.merge_by_key:
                by_key[key].update(value)
            elif not (key in merged and spec.form_default is not None and value == spec.form_default):
                merged[key] = value
        for name in standard:
            value = getattr(raw, name)
            if value not in (None, ""):
                standard[name] = value
    merged.update(by_key)
    return MergedChain(chain[0].conn_id, merged, standard), problems
