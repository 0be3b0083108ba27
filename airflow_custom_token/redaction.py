"""Keeping live tokens out of logs, XCom, exceptions and events.

Airflow's secrets masker is told about every token (`register`), in every form (raw, URL-encoded,
form-encoded), but it redacts nothing under `airflow dags test` and never touches XCom, so the provider
also replaces every form of a secret it knows with `***` itself (`redact`). With the first secret, a
logging filter goes on the HTTP clients' loggers (`HTTP_LOGGERS`): urllib3's DEBUG lines quote each URL.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 5  # Airflow's masker ignores shorter values too; masking "abc" everywhere would maim text
_MAX_KNOWN = 4096

_lock = threading.Lock()
_known: dict[str, None] = {}  # insertion-ordered set of secrets seen by this process


def forms(secret: str) -> set[str]:
    """Every form of a secret that can appear in text: raw, percent-encoded, form-encoded."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


def remember(*secrets: str) -> list[str]:
    """Add secrets to this process's registry; returns the ones that were new."""
    new: list[str] = []
    with _lock:
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH and secret not in _known:
                _known[secret] = None
                new.append(secret)
        while len(_known) > _MAX_KNOWN:
            _known.pop(next(iter(_known)))
    if new and not _filter_installed:
        install_log_filter()
    return new


def known() -> list[str]:
    with _lock:
        return list(_known)


def masker_forms(secrets: Iterable[str]) -> list[str]:
    """What Airflow's masker is told for these secrets: each in every form (`forms`), once.

    Its regex matches text as written: a token in a URL appears percent-encoded (`+` as `%2B`).
    """
    return list(dict.fromkeys(form for secret in secrets for form in sorted(forms(secret))))


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
        masked = _mask(message, _patterns(tuple(pool)))
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


def register(*secrets: str) -> None:
    """Remember secrets and tell Airflow's secrets masker (when Airflow is installed)."""
    new = remember(*secrets)
    if not new:
        return
    try:
        from airflow_custom_token import compat
    except ImportError:  # pragma: no cover - used without Airflow
        return
    for form in masker_forms(new):
        compat.mask_secret(form)


async def aregister(*secrets: str) -> None:
    """`register` for async code (the triggerer): never blocks the event loop, never a silent no-op."""
    new = remember(*secrets)
    if not new:
        return
    try:
        from airflow_custom_token import compat
    except ImportError:  # pragma: no cover - used without Airflow
        return
    for form in masker_forms(new):
        await compat.amask_secret(form)


@functools.lru_cache(maxsize=256)
def _patterns(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form of every secret, longest first, computed once per set of secrets."""
    candidates: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_LENGTH:
            candidates |= forms(secret)
    return tuple(sorted(candidates, key=len, reverse=True))


def _mask(text: str, patterns: tuple[str, ...]) -> str:
    for form in patterns:
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact_string(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every known secret (or those given) and its encoded forms with `***`."""
    return _mask(text, _patterns(tuple(known() if secrets is None else secrets)))


def redact(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """`redact_string` applied recursively through strings, bytes, lists, tuples and dicts."""
    pool = tuple(known() if secrets is None else secrets)
    if not pool:
        return value
    return _redact(value, _patterns(pool))


def _redact(value: Any, patterns: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _mask(value, patterns)
    if isinstance(value, bytes):
        return _mask(value.decode("utf-8", "replace"), patterns).encode()
    if isinstance(value, dict):
        return {_redact(k, patterns): _redact(v, patterns) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, patterns) for v in value)
    return value
