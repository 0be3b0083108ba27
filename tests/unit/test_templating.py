"""Properties of `{placeholder}` resolution (hypothesis): our errors only, fixed hosts, idempotence."""

from __future__ import annotations

import re
import string
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from airflow_custom_token import templating
from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.errors import CustomTokenError, PlaceholderError

pytestmark = pytest.mark.timeout(120)


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(["a", "b", "tenant", "id", "x_1", "password", "missing"])
# Characters that matter in URLs and templates, mixed with ordinary text.
HOSTILE = "/?#@:;\\.%&=+ {}[]\r\n\t\x00'\"<>"
hostile_text = st.text(alphabet=st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), max_size=20)
values_st = st.dictionaries(NAMES.filter(lambda n: n != "missing"), hostile_text, max_size=6)
placeholder = NAMES.map(lambda n: "{" + n + "}")
template_st = st.lists(placeholder | hostile_text, max_size=8).map("".join)


def json_like(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(template_st, inner, max_size=4),
        max_leaves=12,
    )


def only_our_errors(fn: Any, *args: Any) -> Any:
    """`fn(*args)`, or None when it raises one of the package's own errors (and nothing else)."""
    try:
        return fn(*args)
    except CustomTokenError:
        return None


PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
CONTROL = re.compile(r"[\r\n\x00]")


def missing_names(template: str, values: dict[str, str]) -> list[str]:
    return [name for name in PLACEHOLDER.findall(template) if name not in values]


# -- each renderer substitutes exactly, or raises our error naming the field and the problem ---------


@SETTINGS
@given(template_st, values_st)
def test_render_text_substitutes_exactly_or_names_the_problem(template: str, values: dict[str, str]) -> None:
    missing = missing_names(template, values)
    expected = None if missing else PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    try:
        result = templating.render_text(template, values, "field")
    except PlaceholderError as exc:
        assert exc.field == "field"
        if missing:
            assert f"placeholder {{{missing[0]}}} has no value" in str(exc)
        else:  # only a value may bring a line break or NUL into the text
            assert "line break or NUL" in str(exc)
            assert expected is not None and CONTROL.search(expected) and not CONTROL.search(template)
        return
    assert not missing
    assert result == expected


@SETTINGS
@given(template_st, values_st)
def test_render_url_encodes_every_path_value_or_names_the_problem(
    template: str, values: dict[str, str]
) -> None:
    url = "https://api.example.com/" + template
    missing = missing_names(template, values)
    try:
        result = templating.render_url(url, values, "endpoint")
    except PlaceholderError as exc:
        assert str(exc).startswith("endpoint: ")
        if missing:
            assert f"placeholder {{{missing[0]}}} has no value" in str(exc)
        else:
            # a value that is not Unicode text, or a whole path segment made '.' or '..'
            assert "not valid Unicode text" in str(exc) or "must not be '.' or '..'" in str(exc)
        return
    assert not missing
    assert result.startswith("https://api.example.com/")  # no value moves the request to another host
    for name in PLACEHOLDER.findall(template):
        assert quote(values[name], safe="") in result
    assert urlsplit(result).hostname == "api.example.com"


def shape(obj: Any) -> Any:
    """The structure of a JSON-like object with its strings erased (rendering changes only strings)."""
    if isinstance(obj, dict):
        return ("dict", sorted(repr(shape(v)) for v in obj.values()))
    if isinstance(obj, list | tuple):
        return [shape(v) for v in obj]
    return "str" if isinstance(obj, str) else repr(obj)


def keys_collide(obj: Any, values: dict[str, str]) -> bool:
    """Does any object, at any depth, have two keys that render to the same text?"""
    if isinstance(obj, dict):
        rendered = {templating.render_text(str(k), values, "k") for k in obj}
        return len(rendered) < len(obj) or any(keys_collide(v, values) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(keys_collide(v, values) for v in obj)
    return False


@SETTINGS
@given(json_like(template_st), values_st)
def test_render_object_keeps_the_shape_or_names_the_field(obj: Any, values: dict[str, str]) -> None:
    try:
        result = templating.render_object(obj, values, "field")
    except PlaceholderError as exc:
        assert exc.field.startswith("field")
        assert "placeholder" in str(exc) or "line break or NUL" in str(exc)
        return
    if keys_collide(obj, values):
        return  # two keys rendered to the same text: the later one wins, as in a JSON object
    assert repr(shape(result)) == repr(shape(obj))


def test_a_value_that_is_not_valid_unicode_text_gives_a_placeholder_error() -> None:
    """JSON may carry a lone surrogate ("\\udc80"); in a URL path it cannot be encoded."""
    with pytest.raises(PlaceholderError):
        templating.render_url("/items/{id}", {"id": "\udc80"}, "endpoint")


# -- values cannot move the host --------------------------------------------------------------------------

ORIGIN = "https://api.example.com:8443"
literal = st.text(alphabet=string.ascii_letters + string.digits + "-_./", max_size=6)
path_template = st.lists(literal | st.sampled_from(["{a}", "{b}", "{id}"]), min_size=1, max_size=6).map(
    "".join
)
url_values = st.fixed_dictionaries(
    {
        "a": hostile_text,
        "b": hostile_text,
        "id": st.sampled_from(["//evil.example", "@evil.example", "..", ":80"]),
    }
)


def hosts(url: str) -> tuple[Any, ...]:
    """The host and port as the stdlib and as urllib3 (what requests sends with) read them."""
    parts, parsed = urlsplit(url), parse_url(url)
    return parts.hostname, parts.port, parsed.host, parsed.port


@SETTINGS
@given(path_template, st.sampled_from(["/", "/v1/", "/v1?x=", "/v1#"]), url_values)
@example("{a}", "/", {"a": "@evil.example", "b": "", "id": ".."})
@example("{a}", "/v1?x=", {"a": "1#@evil.example:80/", "b": "", "id": ".."})
def test_values_cannot_change_the_host_of_an_absolute_url(
    template: str, joint: str, values: dict[str, str]
) -> None:
    url = only_our_errors(templating.render_url, ORIGIN + joint + template, values, "endpoint")
    if url is None:  # refused only for a path segment made '.' or '..' (clients would resolve it away)
        with pytest.raises(PlaceholderError, match=r"must not be '\.' or '\.\.'"):
            templating.render_url(ORIGIN + joint + template, values, "endpoint")
        return
    assert hosts(url) == ("api.example.com", 8443, "api.example.com", 8443)


ACCOUNT = build_account(
    [
        RawConnection(
            "props",
            "custom_token",
            host=ORIGIN + "/base",
            extra={
                "integration_key": "props",
                "access_endpoint": "/token",
                "access_verb": "POST",
                "inject_as": "header",
                "inject_name": "X-Api-Key",
                "inject_template": "{token}",
            },
        )
    ]
)


@SETTINGS
@given(path_template, url_values)
@example("{a}", {"a": "//evil.example/", "b": "", "id": ".."})
@example("{a}{b}", {"a": "https:", "b": "//evil.example", "id": ".."})
def test_values_cannot_move_a_relative_endpoint_off_the_origin(template: str, values: dict[str, str]) -> None:
    url = only_our_errors(ACCOUNT.request_url, template, values)
    if url is None:  # refused only for a path segment made '.' or '..' (clients would resolve it away)
        with pytest.raises(PlaceholderError, match=r"must not be '\.' or '\.\.'"):
            ACCOUNT.request_url(template, values)
        return
    assert ACCOUNT.is_allowed(url)
    assert hosts(url) == ("api.example.com", 8443, "api.example.com", 8443)


host_values = st.text(alphabet="ab0-._:/?#@\\%\r\t ", max_size=8) | st.sampled_from(["a:1", "a@b", "a/b"])


def test_a_host_placeholder_value_with_a_trailing_line_break_is_refused() -> None:
    """`HOST_NAME` ends in `$`, which also matches before a final newline."""
    with pytest.raises(PlaceholderError):
        templating.render_url("https://{sub}.example.com/", {"sub": "acme\n"}, "host")


@SETTINGS
@given(host_values, hostile_text)
@example("a.b", "/")
def test_a_host_placeholder_takes_host_names_only(sub: str, rest: str) -> None:
    template = "https://{sub}.example.com/{rest}"
    url = only_our_errors(templating.render_url, template, {"sub": sub, "rest": rest}, "host")
    if url is None:
        return
    assert templating.HOST_NAME.fullmatch(sub) and ".." not in sub
    host = f"{sub}.example.com".lower()
    assert hosts(url) == (host, None, host, None)
    assert not any(c in url for c in "\r\n\t\x00 ")


# -- idempotence --------------------------------------------------------------------------------------------

no_placeholder_text = template_st.filter(lambda t: not templating.placeholders(t))


@SETTINGS
@given(no_placeholder_text, values_st)
def test_text_without_placeholders_comes_back_unchanged(text: str, values: dict[str, str]) -> None:
    assert templating.render_text(text, values, "f") == text
    assert templating.render_url(text, values, "f") == text
    assert templating.render_object({text: [text, 1, None]}, values, "f") == {text: [text, 1, None]}


plain_values = st.dictionaries(
    NAMES.filter(lambda n: n != "missing"), st.text(alphabet=string.printable.replace("{", ""), max_size=12)
)


@SETTINGS
@given(template_st, plain_values)
def test_rendering_twice_changes_nothing_more(template: str, values: dict[str, str]) -> None:
    """Once resolved (with values that hold no placeholders), text is a fixed point."""
    once = only_our_errors(templating.render_text, template, values, "f")
    if once is not None:
        assert templating.render_text(once, values, "f") == once


@SETTINGS
@given(template_st, values_st)
def test_unresolvable_placeholders_are_named(template: str, values: dict[str, str]) -> None:
    missing = templating.missing_placeholders(template, values)
    if missing:
        with pytest.raises(PlaceholderError, match=missing[0]):
            templating.render_text(template, values, "f")
