"""What the provider reads of a connection: the raw fields, typed by the field table."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token.fields import (
    FIELDS,
    LEGACY_PREFIX,
    ExtraField,
)

# Integration parameters whose name says they are secret: masked and redacted like the token.
SECRET_NAME = re.compile(r"secret|password|passwd|pwd|token|key|credential|auth|private|sign", re.IGNORECASE)


# ... unless the name says it is about the secret rather than the secret (`token_type: bearer` must not
# make Airflow's masker hide the word "bearer" everywhere).
NOT_SECRET_NAME = re.compile(r"(type|kind|scheme|method|name|url|uri|endpoint|path|id)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Does a parameter's name mark its value as secret?"""
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


@dataclass(frozen=True)
class RawConnection:
    """What the provider reads of an Airflow connection, with `extra` already parsed to a dict."""

    conn_id: str
    conn_type: str | None
    host: str | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    port: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    extra_error: str | None = None  # why `extra` could not be parsed, if it could not

    @classmethod
    def from_airflow(cls, conn: Any) -> RawConnection:
        """Build from an `airflow.sdk.Connection` (or anything with its attributes)."""
        extra: Mapping[str, Any] = {}
        error = None
        raw = getattr(conn, "extra", None)
        if isinstance(raw, Mapping):
            extra = raw
        elif raw:
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                error = (
                    "extra: expected a JSON object, found text that is not valid JSON "
                    f"({exc.msg} at char {exc.pos})"
                )
            else:
                if isinstance(parsed, dict):
                    extra = parsed
                else:
                    error = f"extra: expected a JSON object, found {type(parsed).__name__}"
        return cls(
            conn_id=conn.conn_id,
            conn_type=conn.conn_type,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            schema=getattr(conn, "schema", None),
            port=getattr(conn, "port", None),
            extra=extra,
            extra_error=error,
        )


def normalize_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the form's unprefixed keys and older UIs' `extra__custom_token__<key>`; unprefixed wins."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key.startswith(LEGACY_PREFIX):
            out.setdefault(key[len(LEGACY_PREFIX) :], value)
    for key, value in extra.items():
        if not key.startswith(LEGACY_PREFIX):
            out[key] = value
    # Empty means "not set" (inherited): the form saves every field, unset objects as {} or null.
    return {k: v for k, v in out.items() if v not in (None, "", {}) and (v != [] or _keeps_empty(k))}


def _keeps_empty(key: str) -> bool:
    spec = FIELDS.get(key)
    return spec is not None and spec.keep_empty


def coerce(spec: ExtraField, value: Any, problems: list[str]) -> Any:
    """A stored value turned into the field's kind; on failure, a problem naming the key, and None."""
    key, kind = spec.key, spec.kind
    found = type(value).__name__
    if kind == "str":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{key}: expected text, found {found}")
        return None
    if kind in ("object", "list"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                problems.append(
                    f"{key}: expected JSON, found text that is not valid JSON ({exc.msg} at {exc.pos})"
                )
                return None
        want = dict if kind == "object" else list
        if kind == "list" and isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, want):
            label = "a JSON object" if kind == "object" else "a JSON list"
            problems.append(f"{key}: expected {label}, found {type(value).__name__}")
            return None
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        problems.append(f"{key}: expected true or false, found {found}")
        return None
    # int / number
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except OverflowError:  # an integer too large for a float: JSON allows 10**400
        number = math.inf
    except (TypeError, ValueError):
        problems.append(f"{key}: expected a number, found {found}")
        return None
    unit = f" of {spec.unit}" if spec.unit else ""
    if not math.isfinite(number):  # "Infinity", "NaN", "1e400": no range check can hold them
        problems.append(f"{key}: expected a finite number{unit}, found {_non_finite(value, number)}")
        return None
    if kind == "int":
        if number != int(number):
            problems.append(f"{key}: expected a whole number{unit}, found {number}")
            return None
        return int(number)
    return number


def _non_finite(value: Any, number: float) -> str:
    """How an error names a value that is not a finite number (never hundreds of digits)."""
    if isinstance(value, str) and len(value.strip()) <= 24:
        return repr(value.strip())
    if math.isnan(number):
        return "NaN"
    if isinstance(value, float):
        return "Infinity" if number > 0 else "-Infinity"
    return "a number too large to use"


def read_extra(extra: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One connection's extra fields, typed by the table (keys the table does not know are ignored)."""
    problems: list[str] = []
    typed: dict[str, Any] = {}
    for key, value in normalize_extra(extra).items():
        spec = FIELDS.get(key)
        if spec is None:
            continue
        coerced = coerce(spec, value, problems)
        if coerced is not None:
            typed[key] = coerced
    return typed, problems
