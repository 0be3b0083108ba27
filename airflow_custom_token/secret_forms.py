"""Finding secrets in text, free of I/O and state: every form a secret takes and `***` in its place.

- `forms(secret)`: raw, percent-encoded, form-encoded, and as JSON encoders write it in a string
  (`json_forms`: `\\/`, `\\uXXXX`, `\\"`, `\\\\`).
- `patterns(secrets)`: what to search for one set of secrets, computed once per set: the forms of the
  long ones (plain text search, longest first) and one whole-token regex of the short ones.
- `mask(text, patterns)` / `redact_with(value, patterns)`: `***` for every form found, any mixture of
  JSON escapes included (`sess\\/AbCd\\u002BGh==`); a short secret only where it stands alone.

What is registered, with Airflow's masker and in the process, is `redaction`'s.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
#: Airflow's masker ignores values shorter than this (its `MIN_LENGTH`). The provider keeps shorter
#: secrets too (down to `MIN_SHORT_LENGTH`), and redacts them itself where it writes (errors, events,
#: the response log, XCom), but only as whole tokens (`short_pattern`): masking "ab1" inside every
#: word would maim text.
MIN_LENGTH = 5
#: Shorter values are not kept at all: one or two characters hide nothing (a few thousand guesses find
#: them), and as whole tokens they are everywhere ("v2" in `/api/v2/`, "eu", "id", "1").
MIN_SHORT_LENGTH = 3
#: Words that are never a secret, whatever a connection calls them (lower case): the provider's own
#: vocabulary (field choices, HTTP methods and headers, JSON literals). Registering one would mask it
#: in every log line of the process (`test_an_ordinary_word_is_never_registered`).
ORDINARY_WORDS = frozenset(
    {
        "header", "headers", "url", "query", "body", "json", "form", "data", "params",
        "get", "post", "put", "patch", "delete", "head", "options", "trace", "connect",
        "http", "https", "bearer", "basic", "digest", "token", "authorization", "cookie",
        "content-type", "accept", "application/json", "text/plain",
        "true", "false", "null", "none", "yes", "no", "on", "off",
    }
)  # fmt: skip


def registrable(secret: str) -> bool:
    """Is `secret` something to keep and mask? At least `MIN_SHORT_LENGTH` characters that are not
    blank, and never an ordinary word."""
    return bool(secret) and len(secret.strip()) >= MIN_SHORT_LENGTH and secret.lower() not in ORDINARY_WORDS


def forms(secret: str) -> set[str]:
    """Every form of a secret that can appear in text: raw, percent-encoded, form-encoded, and as JSON
    encoders write it in a string (`json_forms`)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), *json_forms(secret)}


def json_forms(secret: str) -> set[str]:
    """The secret as common JSON encoders write it inside a string, when that differs from it.

    `"` and `\\` escaped; non-ASCII (and control) characters as-is or as `\\uXXXX` (lower or upper case
    hex); `/` as-is, as `\\/` (PHP, many others) or as `\\u002f`. Any other mixture of escapes is
    caught by the provider's own redaction (`mask`), not by Airflow's masker.
    """
    found: set[str] = set()
    for ascii_only in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        for slash in ("/", "\\/", "\\u002f", "\\u002F"):
            form = escaped.replace("/", slash)
            found |= {form, _UNICODE_ESCAPE.sub(lambda m: m[0].upper().replace("\\U", "\\u"), form)}
    found.discard(secret)
    return found


_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


class Patterns:
    """What to mask for one set of secrets: the forms of the long ones (plain text search, longest
    first) and one whole-token regex of the short ones' forms (`MIN_LENGTH`)."""

    __slots__ = ("chars", "plain", "short")

    def __init__(self, plain: tuple[str, ...], short: re.Pattern[str] | None, chars: frozenset[str]) -> None:
        self.plain, self.short = plain, short
        self.chars = chars  # every character of every form: an escape of another is never part of one

    def __bool__(self) -> bool:
        return bool(self.plain) or self.short is not None


@functools.lru_cache(maxsize=256)
def patterns(secrets: tuple[str, ...]) -> Patterns:
    """Every form of every secret, computed once per set of secrets."""
    plain: set[str] = set()
    short: set[str] = set()
    for secret in secrets:
        if registrable(secret):
            (plain if len(secret) >= MIN_LENGTH else short).update(forms(secret))
    chars = frozenset("".join(plain) + "".join(short))
    return Patterns(tuple(sorted(plain, key=len, reverse=True)), short_pattern(short), chars)


def short_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """A regex of `values` (literals, longest first); `_whole` says which of its matches are whole
    tokens."""
    alternatives = [re.escape(value) for value in sorted(set(values), key=len, reverse=True)]
    return re.compile("|".join(alternatives)) if alternatives else None


#: Just before a whole token, an escape counts as a boundary: `%XX`, `\uXXXX`, `\n` and the like.
_ESCAPE_BEFORE = re.compile(r"(?:%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\\[bfnrt])\Z")


def _whole(match: re.Match[str]) -> str:
    """`***` for a short secret that stands alone: not preceded or followed by a letter, digit or `_`
    (where its own edge is one), an escape before it (`%XX`, `\\uXXXX`, `\\n`) counting as a boundary.
    "ab1" is masked in `csrf=ab1&x`, `"ab1"` and `ab1.`, never in `cab1e`."""
    text, start, end = match.string, match.start(), match.end()
    value = match[0]
    if end < len(text) and _is_word(value[-1]) and _is_word(text[end]):
        return value
    after_word = start > 0 and _is_word(value[0]) and _is_word(text[start - 1])
    if after_word and not _ESCAPE_BEFORE.search(text, max(0, start - 6), start):
        return value
    return MASK


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def mask(text: str, patterns: Patterns) -> str:
    for form in patterns.plain:
        if form in text:
            text = text.replace(form, MASK)
    if patterns.short is not None:
        text = patterns.short.sub(_whole, text)
    if "\\" in text:
        text = _mask_escaped(text, patterns)
    return text


#: A JSON string escape: a surrogate pair, `\uXXXX`, or one of `\" \\ \/ \b \f \n \r \t`.
_JSON_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\[\"\\/bfnrt]"
)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(escape: str) -> str:
    if len(escape) == 2:
        return _SIMPLE_ESCAPES[escape[1]]
    if len(escape) == 12:  # a surrogate pair: one character
        high, low = int(escape[2:6], 16), int(escape[8:12], 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return chr(int(escape[2:], 16))


def _mask_escaped(text: str, patterns: Patterns) -> str:
    r"""Mask secrets written with JSON escapes, in any mixture (`sess\/AbCd\u002BGh==`): search the text
    with its escapes decoded, and replace the stretch of the original each match came from."""
    pieces: list[str] = []  # the decoded text, piece by piece
    decoded_at: list[int] = []  # where each escape starts in the decoded text...
    original_at: list[tuple[int, int]] = []  # ...and where it was in `text`
    position = length = 0
    for match in _JSON_ESCAPE.finditer(text):
        char = _unescape(match[0])
        if char not in patterns.chars:  # `\n`, `\u00e9` in text no secret has: left as they are
            continue
        literal = text[position : match.start()]
        pieces.append(literal)
        length += len(literal)
        decoded_at.append(length)
        original_at.append(match.span())
        pieces.append(char)
        length += 1
        position = match.end()
    if not decoded_at:
        return text
    pieces.append(text[position:])
    decoded = "".join(pieces)

    def original(index: int, end: bool) -> int:
        """Where decoded character `index` (or, with `end`, the one before it) was in `text`."""
        at = index - 1 if end else index
        k = bisect.bisect_right(decoded_at, at) - 1
        if k >= 0 and decoded_at[k] == at:  # an escape
            return original_at[k][1 if end else 0]
        base_decoded, base_original = (decoded_at[k] + 1, original_at[k][1]) if k >= 0 else (0, 0)
        return base_original + (at - base_decoded) + (1 if end else 0)

    spans: list[tuple[int, int]] = []
    for form in patterns.plain:
        start = decoded.find(form)
        while start >= 0:
            spans.append((start, start + len(form)))
            start = decoded.find(form, start + len(form))
    if patterns.short is not None:
        spans += [m.span() for m in patterns.short.finditer(decoded) if _whole(m) == MASK]
    if not spans:
        return text
    masked: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        first, last = original(start, False), original(stop, True)
        if masked and first < masked[-1][1]:  # overlaps the previous one: one mask for both
            masked[-1] = (masked[-1][0], max(last, masked[-1][1]))
        else:
            masked.append((first, last))
    out, position = [], 0
    for first, last in masked:
        out += [text[position:first], MASK]
        position = last
    out.append(text[position:])
    return "".join(out)


def redact_with(value: Any, patterns: Patterns) -> Any:
    """`mask` applied recursively through strings, bytes, lists, tuples and dicts."""
    if isinstance(value, str):
        return mask(value, patterns)
    if isinstance(value, bytes):
        return mask(value.decode("utf-8", "replace"), patterns).encode()
    if isinstance(value, dict):
        return {redact_with(k, patterns): redact_with(v, patterns) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_with(v, patterns) for v in value)
    return value
