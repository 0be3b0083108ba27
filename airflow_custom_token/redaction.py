"""Keeping live tokens out of logs, XCom, exceptions and events.

Airflow's secrets masker is told about every token (`register`), but it redacts nothing under
`airflow dags test` and never touches XCom, so the provider also replaces every form of a secret it
knows (raw, URL-encoded, form-encoded) with `***` itself (`redact`).
"""

from __future__ import annotations

import functools
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
    return new


def known() -> list[str]:
    with _lock:
        return list(_known)


def register(*secrets: str) -> None:
    """Remember secrets and tell Airflow's secrets masker (when Airflow's SDK is importable)."""
    for secret in remember(*secrets):
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - used without Airflow
            return
        mask_secret(secret)


async def aregister(*secrets: str) -> None:
    """`register` for async code (the triggerer): uses the masker's async form."""
    for secret in remember(*secrets):
        try:
            from airflow.sdk.log import amask_secret
        except ImportError:  # pragma: no cover
            return
        await amask_secret(secret)


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
