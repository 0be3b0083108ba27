"""The admin command: `airflow custom-token ...` (Airflow 3.2+, the provider-level CLI) and
`python -m airflow_custom_token ...` (every release), with three verbs:

- `status [CONN_ID ...]`: per account, which tiers hold a token (this host's cache, Redis), its remaining
  lifetime, whether a lease is held, whether a refresh token is stored; never a value. Without a conn
  id: every `custom_token` connection of the environment (`AIRFLOW_CONN_*`) and, where this process
  reaches it, of the metadata database.
- `invalidate CONN_ID [--refresh-token]`: drop the token (and with `--refresh-token` the refresh token)
  from this host's cache and from Redis; every worker's processes fetch anew within
  `[custom_token] cache_recheck`.
- `check CONN_ID`: the Test button's steps, each with its duration; the failing one named.

Exit status: 0, or 1 when a check fails or a connection cannot be read (the message says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from airflow_custom_token import compat
from airflow_custom_token.errors import CustomTokenError
from airflow_custom_token.fields import CONN_TYPE

PROG = "python -m airflow_custom_token"
ABOUT = "Custom token connections: status, invalidate, check."


def duration(seconds: float) -> str:
    """`3d 4h`, `52m 10s`, `9s`: a remaining lifetime as people read it."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _describe_token(token: Any, now: float) -> str:
    if token is None:
        return "no token"
    left = token.expires_at - now
    text = f"a token, expires in {duration(left)}" if left > 0 else "an expired token"
    refresh = token.refresh_usable(now) if token.refresh is not None else None
    if refresh is not None:
        until = token.refresh_expires_at
        text += "; refresh token stored" + (f" (expires in {duration(until - now)})" if until else "")
    return text


def _hook(conn_id: str) -> Any:
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    return CustomTokenHook(conn_id)


def status_lines(conn_id: str) -> list[str]:
    """What `status` says of one connection (raises `CustomTokenError` for a bad one)."""
    from airflow_custom_token.cache.redis_client import Unavailable

    source = _hook(conn_id).source
    account, key, now = source.account, source.key, time.time()
    lines = [f"{conn_id}: {account.integration_name} (integration key {account.integration_key})"]
    lines.append(
        f"  process: each worker process holds its token in memory and looks again within "
        f"cache_recheck ({source.settings.cache_recheck:g} s)"
    )
    store = source.store
    if store is None:
        lines.append("  host:    off ([custom_token] host_cache)")
    else:
        lines.append(f"  host:    {_describe_token(store.read(key), now)} ({store.directory})")
    shared = source.shared()
    if shared is None:
        lines.append("  shared:  off ([custom_token] shared_cache_conn_id is empty)")
    else:
        try:
            token, leased = shared.inspect(key)
        except Unavailable as exc:
            lines.append(f"  shared:  Redis unreachable ({exc})")
        else:
            lease = "lease held (a token request is under way)" if leased else "no lease"
            lines.append(f"  shared:  {_describe_token(token, now)}; {lease}")
    return lines


def _connection_ids() -> list[str]:
    """Every `custom_token` connection of the environment and, where reachable, of the database."""
    found = []
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        try:
            body = json.loads(value)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("conn_type") == CONN_TYPE:
            found.append(name.removeprefix("AIRFLOW_CONN_").lower())
    found += compat.conn_ids_in_database(CONN_TYPE)
    return sorted(dict.fromkeys(found))


def status(conn_ids: Sequence[str]) -> int:
    conn_ids = list(conn_ids) or _connection_ids()
    if not conn_ids:
        print("No custom_token connection found (AIRFLOW_CONN_* or the metadata database).")
        return 0
    failed = 0
    for conn_id in conn_ids:
        try:
            print("\n".join(status_lines(conn_id)))
        except CustomTokenError as exc:
            print(f"{conn_id}: {exc}")
            failed = 1
    return failed


def invalidate(conn_id: str, refresh_token: bool) -> int:
    source = _hook(conn_id).source
    shared = source.shared()
    source.cache.discard(source.key, None, source.store, shared, keep_refresh=not refresh_token)
    what = "token and refresh token" if refresh_token else "token (its refresh token kept)"
    where = ["this process"]
    where += ["this host's cache"] if source.store is not None else []
    where += ["Redis"] if shared is not None else []
    print(f"{conn_id}: {what} dropped from {', '.join(where)}.")
    if shared is not None:
        recheck = source.settings.cache_recheck
        print(f"Every worker's processes fetch a new one within cache_recheck ({recheck:g} s).")
    else:
        print("Without the shared cache, other hosts keep theirs: run this on each host.")
    return 0


def check(conn_id: str) -> int:
    steps = _hook(conn_id).check()
    for step in steps:
        mark = "ok" if step.ok else "FAILED"
        print(f"{step.name:<14} {mark:<6} {step.seconds * 1000:8.0f} ms  {step.message}".rstrip())
    return 0 if all(step.ok for step in steps) else 1


def _run(args: argparse.Namespace) -> int:
    try:
        if args.verb == "status":
            return status(args.conn_id)
        if args.verb == "invalidate":
            return invalidate(args.conn_id, args.refresh_token)
        return check(args.conn_id)
    except CustomTokenError as exc:
        print(f"{getattr(args, 'conn_id', '')}: {exc}", file=sys.stderr)
        return 1


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=prog, description="Custom token connections: status, invalidate, check."
    )
    verbs = top.add_subparsers(dest="verb", required=True)
    for name, helptext, args in _VERBS:
        sub = verbs.add_parser(name, help=helptext, description=helptext)
        for flags, options in args:
            sub.add_argument(*flags, **options)
    return top


_VERBS: list[tuple[str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = [
    (
        "status",
        "Which tiers hold each account's token, its remaining lifetime, a lease, a refresh token "
        "(never a value).",
        [(("conn_id",), {"nargs": "*", "help": "connection ids (default: every custom_token connection)"})],
    ),
    (
        "invalidate",
        "Drop an account's token from this host's cache and from Redis: every worker fetches a new one.",
        [
            (("conn_id",), {"help": "the connection id"}),
            (("--refresh-token",), {"action": "store_true", "help": "drop the refresh token too"}),
        ],
    ),
    (
        "check",
        "The Test button's steps, with their durations.",
        [(("conn_id",), {"help": "the connection id"})],
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m airflow_custom_token`."""
    return _run(parser().parse_args(argv))


def airflow_command(args: argparse.Namespace) -> None:
    """What `airflow custom-token <verb>` runs."""
    code = _run(args)
    if code:
        raise SystemExit(code)


def get_provider_cli_commands() -> list[Any]:
    """The provider-level CLI (Airflow 3.2+, `cli` in the provider info): `airflow custom-token ...`."""
    ActionCommand, Arg, GroupCommand = compat.cli_command_types()
    commands = [
        ActionCommand(
            name=name,
            help=helptext,
            func=lambda args, verb=name: airflow_command(argparse.Namespace(**{**vars(args), "verb": verb})),
            args=[Arg(flags, **options) for flags, options in args],
        )
        for name, helptext, args in _VERBS
    ]
    return [
        GroupCommand(
            name="custom-token",
            help="Custom token connections: status, invalidate, check.",
            subcommands=commands,
        )
    ]
