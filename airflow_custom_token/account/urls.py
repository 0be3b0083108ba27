"""URLs: origins, what makes an absolute URL usable, masking a URL's secrets, adding a query."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from airflow_custom_token.account.raw import is_secret_name
from airflow_custom_token.redaction import redact_string


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`; a URL that cannot be read (a bad port, an unclosed `[`) has no host,
    so it is never an allowed origin."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return "", "", None
    return scheme, (parts.hostname or "").lower(), port


def origin_text(url: str | None) -> str:
    """`scheme://host[:port]` of a URL as written, without its userinfo and path (which may hold secrets)."""
    scheme, _, rest = (url or "").partition("://")
    return f"{scheme}://{re.split(r'[/?#]', rest, maxsplit=1)[0].rpartition('@')[2]}"


# What a URL's authority (`[userinfo@]host[:port]`) may hold (RFC 3986): ASCII only, no space or `\`.
_AUTHORITY_CHARS = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@\[\]]")


_PORT_TEXT = re.compile(r"[0-9:]{1,12}")


def url_flaw(url: str) -> tuple[str, str] | None:
    """Why `url` is not a usable absolute http(s) URL, as (what was expected, what was found); None if it is.

    Only what cannot hold a secret is quoted: the part before the path of a URL without a scheme
    (userinfo dropped), a scheme, one character, a port. Checked here, not left to the HTTP clients:
    they refuse or silently change (IDNA: a full-width at sign or full stop) what `urlsplit` reads, so
    the origin checked and the host called could differ.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        first = re.split(r"[/?#]", url, maxsplit=1)[0]
        _, at, host = first.rpartition("@")
        shown = ("...@" if at else "") + host + ("/..." if url[len(first) :].strip("/") else "")
        return "scheme", f"found {shown!r}"
    if head.lower() not in ("http", "https"):
        valid = re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", head)
        return "scheme", f"found scheme {head!r}" if valid else "found no valid scheme"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "\\" in authority:  # urlsplit reads `h\@x` as user `h\`, host `x`; urllib3 as host `h`, path `\@x`
        return "a host name", "found the character '\\', which a URL's host cannot hold"
    userinfo, _, host_port = authority.rpartition("@")
    if any(not _AUTHORITY_CHARS.match(c) for c in userinfo):  # may hold a password: nothing quoted
        return "a URL whose user and password (before @) are ASCII and percent-encoded", "found other text"
    bad = next((c for c in host_port if not _AUTHORITY_CHARS.match(c)), None)
    if bad is not None and not bad.isascii():
        return (
            "a host name in ASCII (an internationalized domain name in its xn-- form)",
            f"found the character {bad!r} (U+{ord(bad):04X}), which HTTP clients read as another or refuse",
        )
    if bad is not None:
        return "a host name", f"found the character {bad!r}, which a URL's host cannot hold"
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a `[` without its `]`, or the reverse
        return "an IPv6 address in brackets, e.g. http://[::1]:8080", "found an unmatched '[' or ']'"
    if not parts.hostname:
        return "a URL with a host name", "found none"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        text = authority.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        return (
            "a port from 1 to 65535 after the host",
            f"found {text!r}" if _PORT_TEXT.fullmatch(text) else "found another value",
        )
    return None


BASE_URL_EXPECTED = "a base URL with scheme, e.g. https://api.example.com; {found}"


HTTP_URL = "an http(s) URL, {found}"


def url_problem(problems: list[str], key: str, url: str, scheme_expected: str) -> bool:
    """Note the problem of an absolute URL `url` (`url_flaw`), if it has one; whether it had one.

    `scheme_expected` words a missing or wrong scheme, e.g. "an http(s) URL, {found}".
    """
    flaw = url_flaw(url)
    if flaw is None:
        return False
    expected, found = flaw
    if expected == "scheme":
        problems.append(f"{key}: expected " + scheme_expected.format(found=found))
    else:
        problems.append(f"{key}: expected {expected}, {found}")
    return True


def masked_url(url: str, secrets: tuple[str, ...] = ()) -> str:
    """The URL with query values masked when they are secret (or any secret appears in them)."""
    parts = urlsplit(url)
    if parts.query:
        pairs = [
            (k, "***" if any(s and s in v for s in secrets) or is_secret_name(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        url = urlunsplit(parts._replace(query=urlencode(pairs, safe="*")))
    return redact_string(url, secrets) if secrets else url  # a secret may stand in the path too


def add_query(url: str, pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    """`url` with `pairs` appended to its query, the existing query kept as it is."""
    if not pairs:
        return url
    parts = urlsplit(url)
    extra = urlencode(list(pairs))
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
