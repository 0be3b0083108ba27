"""Keeping live tokens out of logs, XCom, exceptions and events.

Airflow's secrets masker is told about every token (`register`), but it redacts nothing under
`airflow dags test` and never touches XCom, so the provider also replaces every form of a secret it
knows (raw, URL-encoded, form-encoded) with `***` itself (`redact`).
"""

from __future__ import annotations

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


def redact_string(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every known secret (or those given) and its encoded forms with `***`."""
    candidates = set()
    for secret in known() if secrets is None else secrets:
        if secret and len(secret) >= MIN_LENGTH:
            candidates |= forms(secret)
    for form in sorted(candidates, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    return text


def redact(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """`redact_string` applied recursively through strings, bytes, lists, tuples and dicts."""
    pool = known() if secrets is None else list(secrets)
    if not pool:
        return value
    if isinstance(value, str):
        return redact_string(value, pool)
    if isinstance(value, bytes):
        return redact_string(value.decode("utf-8", "replace"), pool).encode()
    if isinstance(value, dict):
        return {redact(k, pool): redact(v, pool) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, pool) for v in value)
    return value
