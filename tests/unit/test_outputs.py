"""Issue 12 without a server: `access_auth`, `access_outputs` and `access_expiry_path: header:<Name>`.

What the account builder accepts and refuses (each problem naming its field), what `read_token` reads
(outputs beside the token, an expiry in a header), how a token carries its outputs (JSON of the caches)
and how the request rules inject them. Against the demo API: tests/servers/test_token_flows.py.
"""

from __future__ import annotations

import base64
import json
from email.utils import formatdate
from typing import Any

import pytest

from airflow_custom_token import rules
from airflow_custom_token.account.build import basic_authorization, build_account
from airflow_custom_token.account.checks import check_outputs
from airflow_custom_token.account.connected import ConnectedAccount, PerToken
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.errors import ConfigurationError, TokenResponseError
from airflow_custom_token.rules import ApiRequest
from airflow_custom_token.token import Token, TokenLimits, read_token
from airflow_custom_token.wire import HttpResponse

NOW = 1_800_000_000.0
HOST = "https://api.example.com"
BASE: dict[str, Any] = {
    "integration_key": "unit",
    "access_endpoint": "https://auth.example.com/session",
    "access_verb": "POST",
    "inject_as": "header",
    "inject_name": "Cookie",
    "inject_template": "session={token}",
}
CSRF: dict[str, Any] = {
    "access_response_path": "cookie:session",
    "access_outputs": {"csrf": "header:X-CSRF-Token"},
    "request_parameters": {"header": {"X-CSRF-Token": "{csrf}"}},
}


def account(
    login: str | None = "client", password: str | None = "s3cret-pw", params: Any = None, **extra: Any
) -> ConnectedAccount:
    raw = RawConnection(
        "unit", "custom_token", host=HOST, login=login, password=password, extra={**BASE, **extra}
    )
    return build_account([raw], params)


def problems(**extra: Any) -> list[str]:
    params = extra.pop("task_parameters", None)
    with pytest.raises(ConfigurationError) as caught:
        account(params=params, **extra)
    return caught.value.problems


def answer(
    body: Any = None, headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None
) -> HttpResponse:
    data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
    return HttpResponse(200, {k.lower(): v for k, v in (headers or {}).items()}, data, cookies or {})


# -- access_auth ------------------------------------------------------------------------------------------


def test_basic_authorization_is_base64_of_login_colon_password_in_utf8() -> None:
    acct = account(login="jürgen", password="pä:ss", access_auth="BASIC", access_parameters={"a": "b"})

    header = dict(acct.token_request.headers)["Authorization"]
    assert header == "Basic " + base64.b64encode("jürgen:pä:ss".encode()).decode()
    assert acct.token_request.form == (("a", "b"),)
    assert header in acct.secrets and header.removeprefix("Basic ") in acct.secrets
    assert "Basic" not in repr(acct.token_request)


def test_body_is_the_default_and_adds_no_header() -> None:
    acct = account(access_parameters={"client_id": "{login}", "client_secret": "{password}"})
    assert acct.token_request.headers == ()
    assert dict(acct.token_request.form or ()) == {"client_id": "client", "client_secret": "s3cret-pw"}


def test_basic_leaves_login_and_password_placeholders_to_the_user() -> None:
    """With basic, `{login}`/`{password}` still resolve where the user puts them (some APIs want the
    client id in the body too); the README's example puts neither there."""
    acct = account(access_auth="basic", access_parameters={"client_id": "{login}"})
    assert dict(acct.token_request.form or ()) == {"client_id": "client"}


def test_basic_without_a_password_sends_an_empty_one() -> None:
    value, found = basic_authorization({"access_auth": "basic"}, {"login": "sk_live_key"})
    assert found == [] and value == "Basic " + base64.b64encode(b"sk_live_key:").decode()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"access_auth": "digest"},
            "access_auth: expected one of body, basic, client_secret_basic, found 'digest'",
        ),
        (
            {"access_auth": "basic", "login": None},
            "access_auth: basic sends login:password in an Authorization header; set login",
        ),
        (
            {"access_auth": "basic", "login": "a:b"},
            "access_auth: basic cannot send a login that contains ':' (RFC 7617); found one that does",
        ),
        (
            {"access_auth": "basic", "access_headers": {"authorization": "Bearer x"}},
            "access_auth: basic sets the Authorization header of the token request, which access_headers "
            "sets too; remove it from access_headers",
        ),
    ],
)
def test_access_auth_errors_name_the_field(kwargs: dict[str, Any], expected: str) -> None:
    assert problems(**kwargs) == [expected]


# -- access_outputs: configuration ------------------------------------------------------------------------


def test_outputs_become_per_token_placeholders_in_the_template_and_the_request_parameters() -> None:
    acct = account(
        **{
            **CSRF,
            "inject_template": "session={token}; csrf={csrf}",
            "integration_parameters": {"tenant": "t1"},
            "request_parameters": {
                "header": {"X-CSRF-Token": "{csrf}", "X-Tenant": "{tenant}"},
                "url": {"c": "v-{csrf}-{tenant}"},
            },
        }
    )

    assert acct.outputs == (("csrf", "header:X-CSRF-Token"),)
    assert acct.request_headers == (("X-Tenant", "t1"),)  # rendered once
    assert acct.token_headers == (("X-CSRF-Token", PerToken(("", ""), ("csrf",))),)
    assert acct.token_query == (("c", PerToken(("v-", "-t1"), ("csrf",))),)
    headers, query = acct.credentials("TOK", {"csrf": "C5RF"})
    assert headers == [("X-Tenant", "t1"), ("X-CSRF-Token", "C5RF"), ("Cookie", "session=TOK; csrf=C5RF")]
    assert query == [("c", "v-C5RF-t1")]
    assert acct.added_names == ({"X-Tenant", "X-CSRF-Token", "Cookie"}, {"c"})
    assert acct.header_slots == {"token", "csrf"}
    assert set(acct.token_values("TOK", {"csrf": "C5RF"})) == {
        "TOK", "C5RF", "session=TOK; csrf=C5RF", "v-C5RF-t1"
    }  # fmt: skip


def test_a_parameter_value_that_looks_like_an_output_placeholder_stays_literal() -> None:
    acct = account(**CSRF, integration_parameters={"note": "{csrf}"}, inject_template="s={token} {note}")
    assert acct.injection_value("TOK", {"csrf": "C5RF"}) == "s=TOK {csrf}"


def test_an_output_cannot_be_used_where_no_token_is_at_hand() -> None:
    found = problems(**CSRF, access_parameters={"x": "{csrf}"})
    assert found == [
        "access_parameters.x: placeholder {csrf} has no value; parameters available: login, password, "
        "redirectUri"
    ]


@pytest.mark.parametrize(
    ("outputs", "params", "expected"),
    [
        (
            {"x-csrf": "header:X"},
            None,
            "access_outputs: expected names of letters, digits and underscores (each is used as {name}), "
            "found 'x-csrf'",
        ),
        ({"token": "data.t"}, None, "access_outputs: the output name 'token' is the name of the token"),
        ({"login": "data.l"}, None, "access_outputs: the output name 'login' is the name of a built-in"),
        (
            {"password": "data.p"},
            None,
            "access_outputs: the output name 'password' is the name of a built-in",
        ),
        ({"redirectUri": "data.r"}, None, "access_outputs: the output name 'redirectUri' is the name of a"),
        (
            {"tenant": "data.t"},
            None,
            "access_outputs: the output name 'tenant' is the name of an integration",
        ),
        (
            {"run": "data.r"},
            {"run": "r1"},
            "access_outputs: the output name 'run' is the name of an integration",
        ),
        ({"csrf": 3}, None, "access_outputs.csrf: expected a location as in access_response_path"),
        ({"csrf": " "}, None, "access_outputs.csrf: expected a location as in access_response_path"),
        ({"csrf": "header: "}, None, "access_outputs.csrf: expected a name after 'header:', found none"),
        ({"csrf": "cookie:"}, None, "access_outputs.csrf: expected a name after 'cookie:', found none"),
        (["csrf"], None, "access_outputs: expected a JSON object, found list"),
    ],
)
def test_access_outputs_errors_name_the_field(outputs: Any, params: Any, expected: str) -> None:
    found = problems(integration_parameters={"tenant": "t1"}, access_outputs=outputs, task_parameters=params)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_check_outputs_alone() -> None:
    outputs, found = check_outputs({"access_outputs": {"csrf": " header:X-CSRF-Token "}}, {})
    assert outputs == (("csrf", "header:X-CSRF-Token"),) and found == []


def test_a_placeholder_that_is_neither_a_parameter_nor_an_output_says_which_outputs_there_are() -> None:
    found = problems(**{**CSRF, "request_parameters": {"header": {"X-CSRF-Token": "{xsrf}"}}})
    assert found == [
        "request_parameters.X-CSRF-Token: placeholder {xsrf} has no value; parameters available: login, "
        "password, redirectUri; outputs available: csrf"
    ]
    assert problems(inject_template="Bearer {token} {csrf}") == [
        "inject_template: placeholder {csrf} has no value; parameters available: login, password, redirectUri"
    ]


def test_expiry_header_needs_a_name() -> None:
    assert problems(access_expiry_path="header:") == [
        "access_expiry_path: expected a name after 'header:', found none"
    ]


def test_the_cache_key_changes_with_the_outputs() -> None:
    plain = account()
    assert plain.cache_key.startswith("unit-")
    assert account(access_outputs={"csrf": "data.c"}).cache_key != plain.cache_key
    assert (
        account(access_outputs={"csrf": "data.c"}).cache_key
        != account(access_outputs={"x": "data.c"}).cache_key
    )


# -- access_outputs: reading the answer ---------------------------------------------------------------------


def test_outputs_are_read_from_each_kind_of_location() -> None:
    acct = account(
        access_response_path="data.token",
        access_outputs={
            "csrf": "header:X-CSRF-Token",
            "xsrf": "cookie:XSRF-TOKEN",
            "user": "data.user.id",
            "shard": "data.shard",
        },
    )
    response = answer(
        {"data": {"token": "TOK", "user": {"id": " u-1 "}, "shard": 7}},
        headers={"X-CSRF-Token": "C5RF"},
        cookies={"XSRF-TOKEN": "X5RF"},
    )

    token = read_token(acct, response, NOW)

    assert token.value == "TOK"
    assert token.outputs == {"csrf": "C5RF", "xsrf": "X5RF", "user": "u-1", "shard": "7"}
    assert "C5RF" not in repr(token)


def test_a_json_output_beside_a_header_token_parses_the_body() -> None:
    acct = account(access_response_path="header:X-Token", access_outputs={"whole": "text"})
    token = read_token(acct, answer(b"  the-body  ", headers={"X-Token": "TOK"}), NOW)
    assert token.outputs == {"whole": "the-body"}


@pytest.mark.parametrize(
    ("outputs", "response", "expected"),
    [
        (
            {"csrf": "header:X-CSRF-Token"},
            answer({"access_token": "TOK"}, headers={"X-Other": "1"}),
            "The output 'csrf' at 'header:X-CSRF-Token' (access_outputs): the response has no header "
            "'x-csrf-token'; headers: x-other",
        ),
        (
            {"xsrf": "cookie:XSRF"},
            answer({"access_token": "TOK"}),
            "The output 'xsrf' at 'cookie:XSRF' (access_outputs): the response sets no cookie 'XSRF'; "
            "cookies set: none",
        ),
        (
            {"csrf": "data.csrf"},
            answer({"access_token": "TOK", "data": {"other": 1}}),
            "The output 'csrf' at 'data.csrf' (access_outputs) is not in the response; it holds an object "
            "with keys: other at 'data'",
        ),
        (
            {"csrf": "data"},
            answer({"access_token": "TOK", "data": {"a": 1}}),
            "The output 'csrf' at 'data' (access_outputs) holds an object with keys: a, expected text",
        ),
        (
            {"csrf": "data"},
            answer({"access_token": "TOK", "data": "  "}),
            "The output 'csrf' at 'data' (access_outputs) holds an empty value",
        ),
    ],
)
def test_an_output_missing_or_wrong_is_an_error_that_names_it(
    outputs: dict[str, str], response: HttpResponse, expected: str
) -> None:
    with pytest.raises(TokenResponseError) as caught:
        read_token(account(access_outputs=outputs), response, NOW)
    assert str(caught.value) == expected
    assert "TOK" not in str(caught.value)


def test_an_output_in_a_body_that_is_not_json_names_it() -> None:
    acct = account(access_response_path="header:X-Token", access_outputs={"csrf": "data.csrf"})
    with pytest.raises(TokenResponseError) as caught:
        read_token(acct, answer(b"<html>SECRET</html>", headers={"X-Token": "TOK"}), NOW)
    message = str(caught.value)
    assert message.startswith("Output 'csrf' location 'data.csrf' is a JSON path, but the token endpoint")
    assert "set its location to 'text'" in message and "SECRET" not in message


@pytest.mark.parametrize("bad", ["a\r\nb", "a\x00b", "a\u2028b"])
def test_an_unsendable_output_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(TokenResponseError) as caught:
        read_token(
            account(access_outputs={"csrf": "csrf"}), answer({"access_token": "T", "csrf": f"X{bad}Y"}), NOW
        )
    assert "The output 'csrf' at 'csrf' (access_outputs) holds a value that cannot be sent" in str(
        caught.value
    )
    assert "X" not in str(caught.value).split("access_outputs")[1]


def test_an_output_is_bounded_like_the_token() -> None:
    limits = TokenLimits(max_token_bytes=16)
    with pytest.raises(TokenResponseError) as caught:
        read_token(
            account(access_outputs={"csrf": "csrf"}),
            answer({"access_token": "T", "csrf": "C" * 17}),
            NOW,
            limits,
        )
    assert str(caught.value).startswith(
        "The output 'csrf' at 'csrf' (access_outputs) holds a value of 17 bytes, more than [custom_token] "
        "max_token_bytes (16; the value is not quoted)"
    )


def test_an_output_sent_in_a_header_must_be_ascii_one_sent_in_a_url_need_not() -> None:
    response = answer({"access_token": "T", "csrf": "çsrf", "q": "çq"})
    in_header = account(access_outputs={"csrf": "csrf"}, request_parameters={"header": {"X": "{csrf}"}})
    with pytest.raises(TokenResponseError) as caught:
        read_token(in_header, response, NOW)
    assert "characters other than ASCII" in str(caught.value) and "{csrf} is sent in a header" in str(
        caught.value
    )
    in_url = account(access_outputs={"q": "q"}, request_parameters={"url": {"q": "{q}"}})
    assert read_token(in_url, response, NOW).outputs == {"q": "çq"}


# -- access_expiry_path: header:<Name> ---------------------------------------------------------------------


def expiring(value: str, **headers: str) -> Token:
    acct = account(**CSRF, access_expiry_path="header:X-Expires")
    response = answer(
        {}, headers={"X-CSRF-Token": "C", "X-Expires": value, **headers}, cookies={"session": "S"}
    )
    return read_token(acct, response, NOW)


@pytest.mark.parametrize(
    ("value", "lifetime"),
    [
        ("120", 120.0),
        (" 90.5 ", 90.5),
        (str(int(NOW + 300)), 300.0),  # epoch seconds
        ("2027-01-15T08:05:00Z", 300.0),  # ISO-8601 (NOW is 2027-01-15T08:00:00Z)
        (formatdate(NOW + 600, usegmt=True), 600.0),  # an HTTP date, as an Expires header has it
    ],
)
def test_an_expiry_in_a_header_is_a_lifetime_or_an_absolute_time(value: str, lifetime: float) -> None:
    token = expiring(value)
    assert token.lifetime == pytest.approx(lifetime)
    assert token.expiry_source == "expiry location 'header:X-Expires'"


def test_an_absolute_expiry_in_a_header_is_read_against_the_server_date() -> None:
    server_now = NOW + 3600  # the server's clock is an hour ahead
    token = expiring(str(int(server_now + 300)), date=formatdate(server_now, usegmt=True))
    assert token.lifetime == pytest.approx(300.0)
    assert "read against the server's clock, +3600 s from ours" in token.expiry_source


def test_a_missing_expiry_header_falls_back_to_the_default_lifetime() -> None:
    acct = account(**CSRF, access_expiry_path="header:X-Expires", access_lifetime=42)
    token = read_token(acct, answer({}, headers={"X-CSRF-Token": "C"}, cookies={"session": "S"}), NOW)
    assert token.lifetime == 42 and token.expiry_source == "default lifetime (access_lifetime)"


def test_an_unreadable_expiry_header_names_the_field() -> None:
    with pytest.raises(TokenResponseError) as caught:
        expiring("soon")
    assert str(caught.value) == (
        "The expiry location 'header:X-Expires' (access_expiry_path) holds text that is neither a number "
        "of seconds nor an ISO-8601 or HTTP date-time"
    )


# -- a token carries its outputs ----------------------------------------------------------------------------


def test_a_token_and_its_outputs_round_trip_through_the_cache_json() -> None:
    token = Token("TOK", NOW + 60, NOW, "x", {"csrf": "C5RF"})
    assert Token.from_json(json.loads(json.dumps(token.to_json()))) == token
    assert Token("TOK", NOW + 60, NOW).to_json().keys() == {"v", "exp", "at", "src"}  # as 0.1 wrote it


def test_a_cache_entry_written_without_outputs_reads_as_a_token_without_them() -> None:
    old = {"v": "TOK", "exp": NOW + 60, "at": NOW, "src": "expiry location 'expires_in'"}
    token = Token.from_json(old)
    assert token.outputs == {} and token.value == "TOK"
    acct = account(**CSRF)
    assert not acct.has_outputs(token.outputs) and acct.has_outputs({"csrf": "C"})
    assert account().has_outputs({})


def test_a_template_whose_output_the_token_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(TokenResponseError, match=r"The token in use has no output 'csrf' \(access_outputs\)"):
        account(**CSRF).credentials("TOK", {})


def test_tokens_hash_by_their_fields_but_not_their_outputs() -> None:
    assert hash(Token("T", 1.0, 0.0, outputs={"a": "1"})) == hash(Token("T", 1.0, 0.0))


# -- the request rules inject them ------------------------------------------------------------------------


def test_the_rules_inject_the_outputs_and_know_them_as_secrets() -> None:
    acct = account(**CSRF)
    request = ApiRequest("GET", f"{HOST}/v1/notes", headers=(("X-Trace", "t"),))

    sent = rules.inject(acct, request, Token("TOK", NOW + 60, NOW, outputs={"csrf": "C5RF"}))

    assert dict(sent.headers) == {"X-Trace": "t", "X-CSRF-Token": "C5RF", "Cookie": "session=TOK"}
    assert {"TOK", "C5RF", "session=TOK"} <= set(sent.secrets)
    assert rules.uninjected(acct, sent).headers == (("X-Trace", "t"),)


def test_the_readme_session_example_resolves() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [body] = re.findall(r"export AIRFLOW_CONN_NOTES='(.*?)'", readme, flags=re.S)
    conn = json.loads(body)
    raw = RawConnection("notes", conn["conn_type"], host=conn["host"], login=conn["login"],
                        password=conn["password"], extra=conn["extra"])  # fmt: skip

    acct = build_account([raw])

    assert acct.token_request.url == "https://notes.example.com/session/v1/login"
    basic = dict(acct.token_request.headers)["Authorization"]
    assert basic == "Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=" and basic in readme
    assert acct.token_request.form == ()  # the secret is in the Basic header only
    assert acct.credentials("s-1", {"csrf": "c-1"})[0] == [("X-CSRF-Token", "c-1"), ("Cookie", "session=s-1")]
