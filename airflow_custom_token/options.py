"""Request options, declared once: which exist, which kind of call accepts which, and what they mean.

The hook (`CustomTokenHook.run`, `CustomTokenAsyncHook.run`), the operator, the sensor, the triggers
and the notifier all check their `extra_options` and `request_kwargs` here, so a sync and an async call
can never disagree on what an option is or on its default. The API timeout's default is not here: it is
resolved once on the account (`ConnectedAccount.api_timeout`: the connection's `timeout`, else
`[custom_token] api_request_timeout`, declared in `airflow_custom_token.fields`).

Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["sync", "async"]

#: Methods that may be sent twice with the same effect (RFC 9110, 9.2.2): API retries retry only these,
#: and the operator warns about a retried task whose method is not one.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class RequestOption:
    """One key of `extra_options`."""

    name: str
    modes: frozenset[Mode]
    help: str


_BOTH: frozenset[Mode] = frozenset({"sync", "async"})
_SYNC: frozenset[Mode] = frozenset({"sync"})

EXTRA_OPTIONS: tuple[RequestOption, ...] = (
    RequestOption("check_response", _BOTH, "True (default): an answer >= 400 raises RequestError"),
    RequestOption(
        "timeout",
        _BOTH,
        "seconds for the whole request (default: the connection's timeout, else "
        "[custom_token] api_request_timeout)",
    ),
    RequestOption("verify", _SYNC, "False, or a CA bundle path, as requests takes it"),
    RequestOption("allow_redirects", _SYNC, "False: a redirect is the answer (default True)"),
    RequestOption("stream", _SYNC, "True: the body is not read before the answer is returned"),
    RequestOption("proxies", _SYNC, "requests' proxies, over the connection's"),
    RequestOption("cert", _SYNC, "a client certificate, as requests takes it"),
)

#: What `CustomTokenHook.run(**request_kwargs)` (and the operator's `request_kwargs`) hands to requests
#: besides the named arguments. Not `auth` (the connection's token is the auth) nor `hooks` (they would
#: see an answer before the request rules, a 401 that the rules then retry).
REQUEST_KWARGS = frozenset({"files", "cookies"})


def accepted(mode: Mode) -> frozenset[str]:
    """The `extra_options` keys a call of this kind accepts."""
    return frozenset(o.name for o in EXTRA_OPTIONS if mode in o.modes)


def extra_options_problems(options: Mapping[str, Any] | None, mode: Mode) -> list[str]:
    """What is wrong with `extra_options` for a call of this kind: one sentence per problem."""
    allowed = accepted(mode)
    refused = sorted(set(options or {}) - allowed)
    problems = []
    if refused:
        where = " in async and deferrable requests" if mode == "async" else ""
        problems.append(
            f"extra_options: expected keys among {', '.join(sorted(allowed))}{where}; found {refused}"
        )
    timeout = (options or {}).get("timeout")
    if timeout is not None and not isinstance(timeout, tuple) and not _positive_number(timeout):
        problems.append(f"extra_options: timeout: expected a number of seconds > 0, found {timeout!r}")
    return problems


def request_kwargs_problems(kwargs: Iterable[str]) -> list[str]:
    """What is wrong with `request_kwargs` (sync calls only)."""
    refused = sorted(set(kwargs) - REQUEST_KWARGS)
    if not refused:
        return []
    return [
        f"request_kwargs: expected keys among {', '.join(sorted(REQUEST_KWARGS))}; found {refused} (the "
        "connection's token is the auth; timeout, verify, proxies, cert, stream and allow_redirects go in "
        "extra_options)"
    ]


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")
