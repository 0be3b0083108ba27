"""Multi-step logins (`access_steps`) as the account is built: what a step may say, and the errors that
name the step, the key and what was found (never a secret); the login's run over canned answers."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_custom_token import login
from airflow_custom_token.account import RawConnection, build_account
from airflow_custom_token.errors import ConfigurationError
from airflow_custom_token.token import TokenLimits
from airflow_custom_token.wire import HttpResponse

PAGE = {"endpoint": "/login", "verb": "GET", "outputs": {"nonce": "nonce"}}
SIGN_IN = {
    "endpoint": "/sign-in",
    "parameters": {"user": "{login}", "password": "{password}", "n": "{nonce}"},
}


def account(steps: Any, **extra: Any) -> Any:
    fields = {
        "integration_key": "acme",
        "access_endpoint": "https://auth.example.com/token",
        "access_verb": "POST",
        "access_parameters": {"client_id": "{login}"},
        "access_steps": steps,
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        "integration_parameters": {"tenant": "t1"},
        **extra,
    }
    raw = RawConnection(
        conn_id="acme",
        conn_type="custom_token",
        host="https://api.example.com",
        login="client-1",
        password="hunter2-secret",
        extra=fields,
    )
    return build_account([raw])


def problems(steps: Any, **extra: Any) -> str:
    with pytest.raises(ConfigurationError) as failed:
        account(steps, **extra)
    assert "hunter2-secret" not in str(failed.value)
    return str(failed.value)


def test_steps_are_built_with_their_verb_body_and_open_outputs() -> None:
    acc = account([PAGE, SIGN_IN], access_headers={"X-Nonce": "{nonce}"})
    page, sign_in = acc.steps
    assert (page.request.method, page.request.url, page.outputs) == (
        "GET",
        "https://api.example.com/login",
        (("nonce", "nonce"),),
    )
    assert sign_in.request.method == "POST", "a step with parameters defaults to POST"
    assert dict(sign_in.request.form or ()) == {
        "user": "client-1",
        "password": "hunter2-secret",
        "n": "{nonce}",
    }
    assert dict(acc.token_request.headers)["X-Nonce"] == "{nonce}", "filled when the login runs"
    assert acc.output_names == ("nonce",)
    assert acc.cache_key != account([PAGE]).cache_key != account([]).cache_key


KEYS = "endpoint, verb, parameters, body, headers, outputs"
ORIGINS = "a path or a URL on the origin of the token endpoint, of host or of allowed_hosts"
BAD_STEPS = [
    ([PAGE] * 6, "access_steps: expected at most 5 steps, found 6"),
    ({"endpoint": "/x"}, "access_steps: expected a JSON list"),
    (["/login"], f"access_steps[0]: expected an object with keys {KEYS}, found str"),
    ([{"endpoint": "/x", "method": "GET"}], f"access_steps[0]: expected only the keys {KEYS}, found method"),
    ([{"verb": "GET"}], "access_steps[0].endpoint: expected a path under the Base URL or a URL, found None"),
    ([{"endpoint": "/x", "verb": "PUT"}], "access_steps[0].verb: expected GET or POST, found 'PUT'"),
    ([{"endpoint": "/x", "body": "xml"}], "access_steps[0].body: expected form or json, found 'xml'"),
    (
        [{"endpoint": "https://evil.example.net/login"}],
        f"access_steps[0].endpoint: expected {ORIGINS}; found a URL on https://evil.example.net:443",
    ),
    ([SIGN_IN, PAGE], "access_steps[0]: placeholder {nonce} is an output of this step or a later one"),
    (
        [{**PAGE, "outputs": {"tenant": "id"}}],
        "access_steps[0].outputs: the output name 'tenant' is the name of an integration parameter",
    ),
    (
        [PAGE, PAGE],
        "access_steps[1].outputs: the output name 'nonce' is the name of an output of access_steps[0]",
    ),
    (
        [{**PAGE, "outputs": {"n-1": "id"}}],
        "access_steps[0].outputs: expected names of letters, digits and underscores",
    ),
    ([{**PAGE, "outputs": {"n": "header:"}}], "access_steps[0].outputs.n: expected a name after 'header:'"),
    ([{"endpoint": "/x", "parameters": {"a": "{nope}"}}], "access_steps[0]: placeholder {nope} has no value"),
    (
        [{"endpoint": "/login?n={nonce}"}, PAGE],
        "access_steps[0].endpoint: expected no output or late placeholder in the URL",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), BAD_STEPS)
def test_a_bad_step_is_named_with_what_was_expected_and_found(steps: Any, expected: str) -> None:
    assert expected in problems(steps)


def test_steps_may_address_the_token_endpoints_origin_and_allowed_hosts() -> None:
    acc = account(
        [{"endpoint": "https://auth.example.com/login"}, {"endpoint": "https://sso.example.org/start"}],
        allowed_hosts=["sso.example.org"],
    )
    assert [s.request.url for s in acc.steps] == [
        "https://auth.example.com/login",
        "https://sso.example.org/start",
    ]


def test_an_output_name_an_api_request_uses_is_a_per_token_slot() -> None:
    acc = account([PAGE], request_parameters={"header": {"X-Nonce": "{nonce}"}})
    headers, _ = acc.credentials("tok", {"nonce": "n-1"})
    assert ("X-Nonce", "n-1") in headers


def test_the_run_carries_outputs_and_cookies_forward_on_the_same_host_only() -> None:
    acc = account([PAGE, SIGN_IN, {"endpoint": "https://auth.example.com/step3"}])
    flow = login.run(acc, {}, TokenLimits())
    first, _ = next(flow)
    assert ("GET", "https://api.example.com/login") == (first.method, first.url)
    answer = HttpResponse(200, {"content-type": "application/json"}, b'{"nonce": "n-42"}', {"page": "p-1"})
    second, fresh = flow.send(answer)
    assert dict(second.form or ())["n"] == "n-42" and dict(second.headers)["Cookie"] == "page=p-1"
    assert set(fresh) == {"n-42", "p-1"}, "registered as secrets before the step is sent"
    third, _ = flow.send(HttpResponse(303, {"location": "/welcome"}, b"", {"session": "s-1"}))
    assert "Cookie" not in dict(third.headers), "api.example.com's cookies never go to auth.example.com"
    with pytest.raises(StopIteration) as done:
        flow.send(HttpResponse(204, {}, b""))
    result: login.Login = done.value.value
    assert result.values == {"nonce": "n-42"}
    assert result.cookies == {"api.example.com": {"page": "p-1", "session": "s-1"}}
