"""The generic checks the field table declares, and those it cannot say (token location, transport,
outputs)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_custom_token import templating
from airflow_custom_token.account.chain import MergedChain
from airflow_custom_token.fields import (
    BUILT_INS,
    EXTRA_FIELDS,
    STANDARD_FIELDS,
    ExtraField,
)


def check_fields(
    merged: MergedChain,
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Every extra field's value, checked against its declaration: required, choices, pattern, range,
    list items, object keys. Returns the value of every field (its default when unset, a choice as the
    table spells it, list items normalized) and the problems.

    `choices` and `defaults` override the table's at run time (the realms that have a redirect URI, the
    timeout from the settings).
    """
    problems: list[str] = []
    for spec in EXTRA_FIELDS:
        if spec.required and merged.fields.get(spec.key) in (None, ""):
            problems.append(
                f"{spec.key}: required field is missing (set it on {merged.conn_id!r} or on its integration)"
            )
    for std in STANDARD_FIELDS:
        if std.required_help and not merged.standard.get(std.name):
            problems.append(f"{std.name}: required field is missing: {std.required_help}")
    checked: dict[str, Any] = {}
    for spec in EXTRA_FIELDS:
        value = merged.fields.get(spec.key)
        if value is None:
            runtime = (defaults or {}).get(spec.key)
            value = spec.fresh_default() if runtime is None else runtime
        allowed = (choices or {}).get(spec.key, spec.choices)
        checked[spec.key] = check_value(spec, value, allowed, problems)
    return checked, problems


def check_value(spec: ExtraField, value: Any, choices: Sequence[str], problems: list[str]) -> Any:
    """One typed value against its field's declaration; returns it normalized."""
    key = spec.key
    if value is None or (spec.required and value == ""):  # missing: reported once, as missing
        return value
    if spec.choices and isinstance(value, str):
        spelled = {c.casefold(): c for c in (*spec.choices, *choices)}  # "eddsa" is EdDSA
        folded = spelled.get(value.casefold(), value)
        if folded not in choices:
            either = " or ".join(choices) if len(spec.choices) == 2 else f"one of {', '.join(choices)}"
            problems.append(f"{key}: expected {either}, found {value!r}")
        value = folded
    if spec.pattern is not None and isinstance(value, str) and not re.search(spec.pattern, value):
        problems.append(f"{key}: expected {spec.pattern_help}, found {value!r}")
    if spec.kind in ("int", "number") and _out_of_range(spec, value):
        problems.append(f"{key}: expected {spec.range_text()}, found {value}")
    if spec.items is not None and isinstance(value, list):
        value = _check_items(spec, value, problems)
    if spec.keys and isinstance(value, Mapping):
        unknown = sorted(set(value) - set(spec.keys))
        if unknown:
            names = " and/or ".join(repr(k) for k in spec.keys)
            problems.append(f"{key}: expected an object with keys {names}, found {unknown}")
    return value


def _out_of_range(spec: ExtraField, value: float) -> bool:
    return (
        (spec.minimum is not None and value < spec.minimum)
        or (spec.exclusive_minimum is not None and value <= spec.exclusive_minimum)
        or (spec.maximum is not None and value > spec.maximum)
    )


def _check_items(spec: ExtraField, values: list[Any], problems: list[str]) -> list[Any]:
    assert spec.items is not None
    item = spec.items
    kept: list[Any] = []
    for value in values:
        if item.kind == "int":
            ok = (
                not isinstance(value, bool)
                and isinstance(value, int | str)
                and str(value).isascii()  # "²" is a digit to isdigit, not to int
                and str(value).isdigit()
                and (item.minimum is None or int(value) >= item.minimum)
                and (item.maximum is None or int(value) <= item.maximum)
            )
            normalized: Any = int(value) if ok else None
        else:
            ok = isinstance(value, str) and bool(value.strip())
            normalized = value.strip() if ok else None
        if ok:
            kept.append(normalized)
        else:
            problems.append(f"{spec.key}: expected {item.expected()}, found {value!r}")
    return kept


PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def check_transport(checked: Mapping[str, Any]) -> list[str]:
    """A client key needs its certificate; each proxy is a URL (never quoted: it may hold credentials)."""
    problems = []
    if checked.get("client_key") and not checked.get("client_cert"):
        problems.append(
            "client_key: expected together with client_cert (the certificate it is the key of), "
            "found client_key alone"
        )
    for name, url in (checked.get("proxies") or {}).items():
        if not isinstance(url, str):
            problems.append(f"proxies.{name}: expected a proxy URL (text), found {type(url).__name__}")
        elif name != "no_proxy":
            parts = urlsplit(url.strip())
            if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
                problems.append(
                    f"proxies.{name}: expected a proxy URL such as http://proxy.example:3128 (scheme "
                    f"{', '.join(PROXY_SCHEMES)}), found a value without "
                    + ("a host" if parts.scheme.lower() in PROXY_SCHEMES else "one of these schemes")
                    + " (not quoted: it may hold credentials)"
                )
    return problems


def proxy_secrets(proxies: Mapping[str, Any] | None) -> list[str]:
    """The passwords in proxy URLs (`http://user:pass@proxy:3128`): redacted and masked like the token."""
    found = []
    for url in (proxies or {}).values():
        if isinstance(url, str):
            password = urlsplit(url.strip()).password
            if password:
                found += [password, unquote(password)]
    return list(dict.fromkeys(found))


def check_token_location(checked: Mapping[str, Any]) -> list[str]:
    """`header:` and `cookie:` need a name after them (the expiry's `header:` too)."""
    problems = []
    path = str(checked["access_response_path"])
    if path.startswith(("header:", "cookie:")) and not path.split(":", 1)[1].strip():
        problems.append(f"access_response_path: expected a name after {path!r}, found none")
    expiry = str(checked.get("access_expiry_path") or "")
    if expiry.startswith("header:") and not expiry.split(":", 1)[1].strip():
        problems.append(f"access_expiry_path: expected a name after {expiry!r}, found none")
    return problems


def check_outputs(
    checked: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """The additional outputs (`access_outputs`) as (name, location) pairs.

    A name is a placeholder name that shadows no other value: not `token`, not a built-in, not an
    integration parameter (nor a task's). A location is written as the token's (`access_response_path`).
    """
    taken = {"token": "the token", **{name: "a built-in" for name in BUILT_INS}}
    taken.update({name: "an integration parameter" for name in values if name not in taken})
    problems: list[str] = []
    return parse_outputs("access_outputs", checked["access_outputs"] or {}, taken, problems), problems


def parse_outputs(
    key: str, raw: Any, taken: Mapping[str, str], problems: list[str]
) -> tuple[tuple[str, str], ...]:
    """Outputs written as `access_outputs` is (`{"name": "location"}`) under `key`, as (name, location)
    pairs: names of letters, digits and underscores that are not in `taken` (name: what it is already),
    locations in the syntax of `access_response_path`."""
    outputs: list[tuple[str, str]] = []
    for raw_name, location in raw.items() if isinstance(raw, Mapping) else ():
        name = str(raw_name)
        if not templating.PLACEHOLDER.fullmatch(f"{{{name}}}"):
            problems.append(
                f"{key}: expected names of letters, digits and underscores (each is used as "
                f"{{name}}), found {name!r}"
            )
            continue
        if name in taken:
            problems.append(
                f"{key}: the output name {name!r} is the name of {taken[name]} ({{{name}}}); "
                "choose another name"
            )
            continue
        if not isinstance(location, str) or not location.strip():
            found = repr(location) if isinstance(location, str) else type(location).__name__
            problems.append(
                f"{key}.{name}: expected a location as in access_response_path (a dotted JSON "
                f"path, header:<Name>, cookie:<name> or text), found {found}"
            )
            continue
        location = location.strip()
        if location.startswith(("header:", "cookie:")) and not location.split(":", 1)[1].strip():
            problems.append(f"{key}.{name}: expected a name after {location!r}, found none")
            continue
        outputs.append((name, location))
    return tuple(outputs)
