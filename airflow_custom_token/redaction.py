"""Keeping live tokens out of logs, XCom, exceptions and events.

Airflow's secrets masker is told about every token (`register`), in every form (raw, URL-encoded,
form-encoded, JSON-escaped as common encoders write it: `\\/`, `\\uXXXX`, `\\"`, `\\\\`), but it
redacts nothing under `airflow dags test` and never touches XCom, so the provider also replaces every
form of a secret it knows with `***` itself (`redact`), and there any mixture of JSON escapes too (a
server may write `sess\\/AbCd\\u002BGh==`). With the first secret, a logging filter goes on the HTTP
clients' loggers (`HTTP_LOGGERS`): urllib3's DEBUG lines quote each URL.

Airflow's masker skips values under 5 characters (`MIN_LENGTH`). The provider keeps those of 3 or 4
(a short CSRF token) and redacts them itself wherever it writes, as whole tokens only (`"k9Z"`,
`csrf=k9Z&`, never inside `ak9Zb`); one or two characters are not kept (`MIN_SHORT_LENGTH`). Ordinary
words (`ORDINARY_WORDS`: `header`, `POST`, `Bearer`...) are never registered, whatever field holds them.

Airflow's masker compiles one regex of every value it was ever told, again on each new one: told every
token a long-running triggerer refreshes, one registration would cost hundreds of milliseconds after a
few thousand tokens. So a token is registered per *slot* (`register_token`; the token source's cache
key): when a slot gets a new token, the old one is superseded, and only the last `MASKER_OLD_TOKENS`
superseded tokens stay in the masker (`compat.update_masker` removes what the provider itself added,
and compiles the regex once per registration). Live tokens and the secrets given to `register` (the
accounts' passwords, client secrets) are never removed. Async code registers in a worker thread
(`aregister_token`, `aregister`): the compile never runs on the event loop.

Finding the forms of a secret in text, and replacing them, is `secret_forms`'s (free of state).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import ModuleType
from typing import Any

from airflow_custom_token.secret_forms import (
    MIN_LENGTH,
    forms,
    mask,
    patterns,
    redact_with,
    registrable,
)

_MAX_KNOWN = 4096
#: How many superseded tokens (each with its forms and additional outputs) stay registered with
#: Airflow's masker. Its cost per registration grows with what it holds (about 75 us per form, four
#: or so forms per token): 16 keep it near 5 ms, and a token just replaced still masked.
MASKER_OLD_TOKENS = 16
_MAX_SLOTS = 4096  # slots with a live token; past that, the least recently registered one is superseded
_MAX_PERMANENT = 4 * _MAX_KNOWN

_lock = threading.Lock()
_known: dict[str, None] = {}  # insertion-ordered set of secrets seen by this process (short ones too)
_permanent: dict[str, None] = {}  # forms of the secrets given to `register`/`remember`: never retired

_masker_lock = threading.Lock()  # held while deciding and applying a change to Airflow's masker
#: slot -> (its live token, the secrets registered with it, their forms), least recently registered first
_live: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {}
_old: dict[frozenset[str], None] = {}  # the forms of superseded tokens still in the masker, oldest first


def remember(*secrets: str) -> list[str]:
    """Add secrets to this process's registry; returns the ones that were new.

    These are kept for the process's life (an account's password, client secret); tokens go through
    `register_token`.
    """
    return _remember(secrets, permanent=True)


def _remember(secrets: Iterable[str], *, permanent: bool) -> list[str]:
    new: list[str] = []
    with _lock:
        for secret in secrets:
            if not registrable(secret):
                continue
            if permanent and secret not in _permanent:
                for form in forms(secret):
                    _permanent[form] = None
                while len(_permanent) > _MAX_PERMANENT:
                    _permanent.pop(next(iter(_permanent)))
            if secret not in _known:
                _known[secret] = None
                new.append(secret)
        if len(_known) > _MAX_KNOWN:
            _evict()
    if new and not _filter_installed:
        install_log_filter()
    return new


def _evict() -> None:
    """Bring `_known` back under its bound (under `_lock`): superseded tokens go first, oldest first;
    live tokens and permanent secrets stay."""
    pinned = {secret for _, values, _ in list(_live.values()) for secret in values}
    for secret in list(_known):
        if len(_known) <= _MAX_KNOWN - _MAX_KNOWN // 8:  # room for a few hundred more at once
            return
        if secret not in pinned and secret not in _permanent:
            del _known[secret]
    while len(_known) > _MAX_KNOWN:  # only pinned secrets left: the oldest go anyway
        _known.pop(next(iter(_known)))


def known() -> list[str]:
    with _lock:
        return list(_known)


def masker_forms(secrets: Iterable[str]) -> list[str]:
    """What Airflow's masker is told for these secrets: each in every form (`forms`), once.

    Its regex matches text as written: a token in a URL appears percent-encoded (`+` as `%2B`), in a
    JSON answer maybe as `\\/`. Values it would skip (shorter than `MIN_LENGTH`, an ordinary word)
    are not sent: the provider's own redaction covers them.
    """
    return list(
        dict.fromkeys(form for secret in secrets if _for_masker(secret) for form in sorted(forms(secret)))
    )


def _for_masker(secret: str) -> bool:
    return len(secret) >= MIN_LENGTH and registrable(secret)


# -- the HTTP clients' logs ----------------------------------------------------------------------------
#: Loggers whose records may quote a secret: urllib3's DEBUG lines quote each request's URL (a token in
#: its query, the client secret of a GET token request), its retry and redirect lines too.
HTTP_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "urllib3.connection",
    "urllib3.response",
    "aiohttp.client",
    "aiohttp.internal",
)
_filter_installed = False


class SecretsFilter(logging.Filter):
    """Masks every secret this process knows (in every form) in a record's message, before any handler.

    A record without one is left as it is; one with one gets its message formatted and masked (no
    `args` left to format). Costs nothing while its loggers are not enabled at the record's level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        pool = known()
        if not pool:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when it is emitted
            return True
        masked = mask(message, patterns(tuple(pool)))
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = SecretsFilter()


def install_log_filter() -> None:
    """Put `SecretsFilter` on the HTTP clients' loggers (`HTTP_LOGGERS`): done with the first secret."""
    global _filter_installed
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    _filter_installed = True


def _compat() -> ModuleType | None:
    try:
        from airflow_custom_token import compat
    except ImportError:  # pragma: no cover - used without Airflow
        return None
    return compat


#: What a registration leaves to the caller: Airflow's compat module (None without Airflow), and the
#: forms to send to the supervisor (`mask_secret` / `amask_secret`: new to this process, so to it).
_Outcome = tuple[ModuleType | None, list[str]]


def register(*secrets: str) -> None:
    """Remember secrets for the process's life and tell Airflow's secrets masker (when Airflow is
    installed): this process's masker once for all of them, the supervisor each new form."""
    compat, new = _register_locally(secrets)
    if compat is not None:
        for form in new:
            compat.mask_secret(form)


async def aregister(*secrets: str) -> None:
    """`register` for async code (the triggerer): never blocks the event loop, never a silent no-op.

    This process's masker is updated in a worker thread (its regex compiled there); the supervisor is
    told each new form from the loop (`compat.amask_secret`: the triggerer's comms are the loop's).
    """
    if all(s in _known and s in _permanent for s in secrets if registrable(s)):
        return
    await _once(("account", *secrets), functools.partial(_aregister, secrets))


async def _aregister(secrets: tuple[str, ...]) -> None:
    compat, new = await asyncio.to_thread(_register_locally, secrets)
    if compat is not None:
        for form in new:
            await compat.amask_secret(form)


def _register_locally(secrets: Iterable[str]) -> _Outcome:
    """`register`'s blocking part: remember, update this process's masker (one compile)."""
    new = remember(*secrets)
    compat = _compat() if new else None  # its first import too, in the worker thread
    if compat is None:
        return None, []
    told = masker_forms(new)
    with _masker_lock:
        compat.update_masker(told)
    return compat, told


def register_token(slot: str, token: str, secrets: Iterable[str]) -> None:
    """Remember the secrets of the live token of `slot` (the token, its additional outputs, their
    injected forms, and the account's secrets) and tell Airflow's secrets masker.

    The token `slot` held before, if another, is superseded: the masker keeps the last
    `MASKER_OLD_TOKENS` superseded tokens (their forms this provider added), no more. Registering
    the live token again costs a few dictionary lookups.
    """
    secrets = tuple(secrets)
    if _settled(slot, token, secrets):
        return
    compat, new = _register_token_locally(slot, token, secrets)
    if compat is not None:
        for form in new:
            compat.mask_secret(form)


async def aregister_token(slot: str, token: str, secrets: Iterable[str]) -> None:
    """`register_token` for async code: the masker's update (one regex compile) in a worker thread,
    never on the event loop; the supervisor told each new form from the loop.

    Triggers that got the same token at once (one per trigger, a thousand in a triggerer) share one
    registration instead of queueing a thousand worker threads.
    """
    secrets = tuple(secrets)
    if _settled(slot, token, secrets):
        return
    await _once(("token", slot, token, *secrets), functools.partial(_aregister_token, slot, token, secrets))


_registering: dict[tuple[str, ...], asyncio.Task[None]] = {}


async def _once(key: tuple[str, ...], work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `work` once for every caller of this loop that asks for the same `key` meanwhile."""
    loop = asyncio.get_running_loop()
    task = _registering.get(key)
    if task is None or task.done() or task.get_loop() is not loop:
        task = loop.create_task(work())
        _registering[key] = task
        task.add_done_callback(functools.partial(_registered, key))
    await asyncio.shield(task)


def _registered(key: tuple[str, ...], task: asyncio.Task[None]) -> None:
    if _registering.get(key) is task:
        del _registering[key]


async def _aregister_token(slot: str, token: str, secrets: tuple[str, ...]) -> None:
    compat, new = await asyncio.to_thread(_register_token_locally, slot, token, secrets)
    if compat is not None:
        for form in new:
            await compat.amask_secret(form)


def _settled(slot: str, token: str, secrets: tuple[str, ...]) -> bool:
    """Is `token` already the live token of `slot`, registered with all of `secrets`?"""
    live = _live.get(slot)
    if live is None or live[0] != token:
        return False
    return all(s in _known and (s in live[1] or not _for_masker(s)) for s in secrets if registrable(s))


def _register_token_locally(slot: str, token: str, secrets: tuple[str, ...]) -> _Outcome:
    """`register_token`'s blocking part: remember, update this process's masker (adding the live
    token's forms, retiring superseded ones: one compile)."""
    new = _remember(secrets, permanent=False)
    compat = _compat()  # its first import too, in the worker thread
    with _masker_lock:  # decisions applied in the order they are made
        live, retired = _supersede(slot, token, secrets)
        if compat is not None:
            compat.update_masker(live, retired)
    return compat, masker_forms(new)


def _supersede(slot: str, token: str, secrets: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Make `token` the live token of `slot` (under `_masker_lock`): the forms to have in the masker
    (all of the live token's: what went missing comes back), and those of superseded tokens to retire."""
    values = frozenset(s for s in secrets if _for_masker(s))
    told = frozenset(masker_forms(values))
    previous = _live.pop(slot, None)
    if previous is not None and previous[0] == token:  # the same token, maybe with other forms
        values, told = previous[1] | values, previous[2] | told
    elif previous is not None:
        _old.pop(previous[2], None)
        _old[previous[2]] = None
    _live[slot] = (token, values, told)
    _old.pop(told, None)
    while len(_live) > _MAX_SLOTS:
        stale = _live.pop(next(iter(_live)))
        _old[stale[2]] = None
    retired: set[str] = set()
    while len(_old) > MASKER_OLD_TOKENS:
        oldest = next(iter(_old))
        del _old[oldest]
        retired |= oldest
    if retired:  # never a form that a live token, a kept one or a permanent secret has too
        retired -= _permanent.keys()
        for _, _, kept in _live.values():
            retired -= kept
        for kept in _old:
            retired -= kept
    return sorted(told), sorted(retired)


def reset() -> None:
    """Forget every secret this process registered, as in a fresh worker process (for tests, like the
    caches' `clear`): the registries, the live and superseded tokens, and what the provider added to
    this process's Airflow masker (what Airflow masks for its own reasons stays). The log filter
    stays installed; with nothing known it changes nothing."""
    with _masker_lock:
        with _lock:
            _known.clear()
            _permanent.clear()
        _live.clear()
        _old.clear()
        _registering.clear()
        patterns.cache_clear()
        compat = _compat()
        if compat is not None:
            compat.forget_masks()


def masker_state() -> dict[str, int]:
    """How many slots have a live token, and how many superseded tokens the masker keeps."""
    return {"live_tokens": len(_live), "superseded_kept": len(_old)}


def redact_string(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every known secret (or those given) and its encoded forms with `***`."""
    return mask(text, patterns(tuple(known() if secrets is None else secrets)))


def redact(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """`redact_string` applied recursively through strings, bytes, lists, tuples and dicts."""
    pool = tuple(known() if secrets is None else secrets)
    if not pool:
        return value
    return redact_with(value, patterns(pool))
