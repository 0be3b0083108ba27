"""`{placeholder}` resolution, free of I/O.

A placeholder is `{name}` where name is letters, digits and underscores; every other brace is literal
text, so JSON in a field is left alone. Where a value lands decides how it is treated:

- in plain text (parameters sent through an HTTP client, templates): as is;
- in a header (name or value): as is, but only Latin-1 text, which is what HTTP clients can send
  (`http.client` encodes header text as Latin-1); another value is refused, naming the placeholder;
- in the host part of a URL: it must be a host name (letters, digits, `-`, `.`), so a parameter
  cannot send requests to another site;
- in the path, query or fragment of a URL: percent-encoded, so it cannot add segments or parameters;
  and a path segment it makes `.` or `..` is refused, since clients and servers resolve such a segment
  away (`/api/tenants/{tenant}/v1` with `..` would be `/api/v1`). Encoding the dots does not help:
  `%2E%2E` is `..` by RFC 3986, and requests (which unquotes unreserved characters), yarl and many
  servers decode it before resolving the path.

Late placeholders (`LATE_PLACEHOLDERS`: `{assertion}`, `{refresh_token}`) are not resolved when the
account is built: the token request keeps them as written (so its fingerprint, the account's cache key,
stays the same) and `fill_late` fills them just before each send, with values made for that request.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_custom_token.errors import PlaceholderError

if TYPE_CHECKING:
    from airflow_custom_token.wire import HttpRequest

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
DOT_SEGMENTS = frozenset({".", ".."})
_CONTROL = re.compile(r"[\r\n\x00]")
#: Placeholders of the token request filled at send time (`fill_late`), each by a feature the account
#: configures: `assertion` (a signed JWT, `assertion_private_key`), `refresh_token` (the last answer's).
LATE_PLACEHOLDERS = frozenset({"assertion", "refresh_token"})


def placeholders(text: str) -> list[str]:
    """Names of the placeholders in `text`, in order of appearance."""
    return PLACEHOLDER.findall(text)


def _lookup(name: str, values: Mapping[str, str], field: str) -> str:
    if name in values:
        return values[name]
    known = ", ".join(sorted(values)) or "none"
    raise PlaceholderError(field, f"placeholder {{{name}}} has no value; parameters available: {known}")


def render_text(text: str, values: Mapping[str, str], field: str, *, header: bool = False) -> str:
    """Replace placeholders in plain text. Text without placeholders comes back unchanged.

    `header`: the text travels in a header, so each value must be Latin-1 text (never quoted).
    """
    if "{" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        found = _lookup(match.group(1), values, field)
        if header and not _is_latin1(found):
            raise PlaceholderError(
                field,
                f"placeholder {{{match.group(1)}}} has a value with characters a header cannot carry "
                "(only Latin-1 text travels in an HTTP header; the value is not quoted)",
            )
        return found

    result = PLACEHOLDER.sub(value, text)
    if _CONTROL.search(result) and not _CONTROL.search(text):
        raise PlaceholderError(field, "a placeholder value contains a line break or NUL character")
    return result


def render_header(text: str, values: Mapping[str, str], field: str) -> str:
    """`render_text` for a header name or value."""
    return render_text(text, values, field, header=True)


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _authority_end(template: str) -> int:
    """Index where the authority (host[:port]) of an absolute URL template ends, or -1 if not absolute."""
    scheme_end = template.find("://")
    if scheme_end < 0:
        return -1
    start = scheme_end + 3
    ends = [i for i in (template.find(c, start) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(template)


def render_url(template: str, values: Mapping[str, str], field: str) -> str:
    """Resolve placeholders in a URL (absolute, or a path relative to a base URL)."""
    if "{" not in template:
        return template
    authority_end = _authority_end(template)
    out: list[str] = []
    last = 0
    for match in PLACEHOLDER.finditer(template):
        out.append(template[last : match.start()])
        value = _lookup(match.group(1), values, field)
        if match.start() < authority_end:
            if not HOST_NAME.fullmatch(value) or ".." in value:
                raise PlaceholderError(
                    field,
                    f"placeholder {{{match.group(1)}}} stands in the host, so its value must be a host name "
                    "(letters, digits, '-' and '.'); found a value with other characters",
                )
            out.append(value)
        else:
            try:
                out.append(quote(value, safe=""))
            except UnicodeEncodeError:
                raise PlaceholderError(
                    field,
                    f"placeholder {{{match.group(1)}}} has a value that is not valid Unicode text "
                    "(a lone surrogate such as \\udc80)",
                ) from None
        last = match.end()
    out.append(template[last:])
    url = "".join(out)
    _refuse_dot_segments(template, url, field)
    return url


def _path_segments(url: str) -> list[str]:
    """The path segments of a URL (absolute, or a path), without its query and fragment."""
    authority = _AUTHORITY.match(url)
    path = url[authority.end() if authority else 0 :]
    return re.split(r"[?#]", path, maxsplit=1)[0].split("/")


def _refuse_dot_segments(template: str, url: str, field: str) -> None:
    """A path segment that placeholders make `.` or `..` would be resolved away: refuse it.

    Rendered values hold no `/`, `?` or `#` (host values are host names, others are percent-encoded),
    so the template's path segments and the URL's correspond one to one.
    """
    for wanted, got in zip(_path_segments(template), _path_segments(url), strict=False):
        names = placeholders(wanted)
        if names and got in DOT_SEGMENTS:
            raise PlaceholderError(
                field,
                f"placeholder {{{names[0]}}} turns the URL path segment {wanted!r} into {got!r}, which "
                "HTTP clients and servers resolve away (removing a path segment); a value in a URL path "
                "must not be '.' or '..'",
            )


def render_object(obj: Any, values: Mapping[str, str], field: str, *, header: bool = False) -> Any:
    """Resolve placeholders in every string (keys and values) of a JSON-like object.

    `header`: the object's strings travel as header names and values (see `render_text`).
    """
    if isinstance(obj, str):
        return render_text(obj, values, field, header=header)
    if isinstance(obj, Mapping):
        return {
            render_text(str(k), values, field, header=header): render_object(
                v, values, f"{field}.{k}", header=header
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [render_object(v, values, field, header=header) for v in obj]
    return obj


def render_headers(obj: Any, values: Mapping[str, str], field: str) -> Any:
    """`render_object` for headers."""
    return render_object(obj, values, field, header=True)


def missing_placeholders(obj: Any, available: Mapping[str, Any] | frozenset[str]) -> list[str]:
    """Placeholders in any string of `obj` that `available` has no value for (in order, no repeats)."""
    found: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, str):
            for name in placeholders(o):
                if name not in available and name not in found:
                    found.append(name)
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(str(k))
                walk(v)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)

    walk(obj)
    return found


def kept_late(names: frozenset[str] | set[str]) -> dict[str, str]:
    """Values that leave the late placeholders `names` in place when the account is built."""
    return {name: f"{{{name}}}" for name in names}


def fill_late(request: HttpRequest, values: Mapping[str, str]) -> HttpRequest:
    """`request` with its late placeholders (those `values` names) filled: in the values of its query
    parameters, form, JSON body and headers. A header value must stay Latin-1 text on one line.

    The values become secrets of the request (`redact`): each is made for one request (an assertion)
    or is a credential (a refresh token).
    """
    if not values:
        return request
    pattern = re.compile(r"\{(" + "|".join(re.escape(name) for name in values) + r")\}")

    def fill(text: str, field: str, header: bool = False) -> str:
        if "{" not in text:
            return text
        filled = pattern.sub(lambda match: values[match.group(1)], text)
        if filled != text and (_CONTROL.search(filled) or (header and not _is_latin1(filled))):
            raise PlaceholderError(
                field,
                "a late placeholder's value cannot travel there (a line break or NUL, or in a header "
                "text that is not Latin-1)",
            )
        return filled

    def fill_json(obj: Any) -> Any:
        if isinstance(obj, str):
            return fill(obj, "access_parameters")
        if isinstance(obj, Mapping):
            return {k: fill_json(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [fill_json(v) for v in obj]
        return obj

    def pairs(
        items: tuple[tuple[str, str], ...], field: str, header: bool = False
    ) -> tuple[tuple[str, str], ...]:
        return tuple((name, fill(value, field, header)) for name, value in items)

    return dataclasses.replace(
        request,
        params=pairs(request.params, "access_parameters"),
        form=None if request.form is None else pairs(request.form, "access_parameters"),
        json=fill_json(request.json),
        headers=pairs(request.headers, "access_headers", header=True),
        redact=(*request.redact, *(v for v in values.values() if v)),
    )
