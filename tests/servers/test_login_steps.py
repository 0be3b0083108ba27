"""Multi-step logins (issue 20, `access_steps`) against the demo API's login (`/login/v1/`).

The demo's login is two steps: a login page that sets a `login_page` cookie and answers a nonce, then a
sign-in (the credentials and that nonce, with that cookie) that answers `303 See Other` with a `session`
cookie; the token request (`/login/v1/token`) wants that session cookie. Its counters say how many login
pages were served, sign-ins made and refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.demo.connections import demo_connections
from airflow_custom_token.demo.login import PAGE, SIGN_IN, TOKEN
from airflow_custom_token.errors import TokenRequestError, TokenResponseError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from tests.servers.test_operators import execute

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("task_runner_off")]

PAGE_STEP = {"endpoint": PAGE, "verb": "GET", "outputs": {"nonce": "nonce"}}
SIGN_IN_STEP = {
    "endpoint": SIGN_IN,
    "verb": "POST",
    "parameters": {"username": "{login}", "password": "{password}", "nonce": "{nonce}"},
}


@pytest.fixture
def connect(demo: DemoServer, make_conn: Callable[..., str]) -> Callable[..., str]:
    """A connection like the demo's `acme_login` (account qa), with overrides of its extra."""

    def make(password: str = "qa-secret", **overrides: Any) -> str:
        body = demo_connections(demo.url)["acme_login"]
        extra = {**body["extra"], **overrides}
        return make_conn("login", host=demo.url, login="qa", password=password, extra=extra)

    return make


def token_requests(demo: DemoServer, path: str = TOKEN) -> list[dict[str, Any]]:
    return [entry for entry in demo.token_log if entry["path"] == path]


def cookies_sent(entry: dict[str, Any]) -> dict[str, str]:
    header = entry["headers"].get("Cookie", "")
    return dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_two_step_login_then_the_token_through_the_operator(demo, connect, deferrable):
    conn_id = connect()
    op = CustomTokenHttpOperator(
        task_id="whoami", custom_token_conn_id=conn_id, endpoint="/api/v1/whoami", deferrable=deferrable
    )
    assert json.loads(execute(op, deferrable))["account"] == "qa"
    stats = demo.stats()
    assert (stats["login_pages"], stats["logins"], stats["logins_refused"]) == (1, 1, 0)
    assert stats["token_requests"] == 1  # the steps are not token requests
    [token_request] = token_requests(demo)
    cookies = cookies_sent(token_request)
    assert cookies["session"].startswith("si_"), "the sign-in's cookie reaches the token request"
    assert cookies["login_page"].startswith("lp_"), "and so does the login page's, on the same host"


def test_the_token_is_cached_and_each_new_token_logs_in_again(demo, connect):
    hook = CustomTokenHook(connect())
    for _ in range(3):
        assert hook.run("/api/v1/whoami").json()["account"] == "qa"
    assert (demo.stats()["login_pages"], demo.stats()["token_requests"]) == (1, 1)
    hook.invalidate_token()
    assert hook.run("/api/v1/whoami").json()["account"] == "qa"
    assert (demo.stats()["login_pages"], demo.stats()["logins"], demo.stats()["token_requests"]) == (2, 2, 2)
    first, second = (cookies_sent(entry)["session"] for entry in token_requests(demo))
    assert first != second, "a new login, a new session: no cookie is kept from the last one"


def test_an_output_fills_the_token_request_and_every_api_request(demo, connect):
    conn_id = connect(
        access_steps=[PAGE_STEP],
        access_endpoint="/oauth2/v1/token",
        access_parameters={"client_id": "{login}", "client_secret": "{password}", "login_nonce": "{nonce}"},
        access_headers={"X-Login-Nonce": "{nonce}"},
        request_parameters={"header": {"X-Login-Nonce": "{nonce}"}},
    )
    answer = CustomTokenHook(conn_id).run("/api/v1/whoami").json()
    [token_request] = token_requests(demo, "/oauth2/v1/token")
    nonce = token_request["form"]["login_nonce"]
    assert len(nonce) > 10 and token_request["headers"]["X-Login-Nonce"] == nonce
    assert answer["request_headers"]["X-Login-Nonce"] == nonce, "an output is an API request's placeholder"


def test_cookies_go_to_the_host_that_set_them_never_to_another(demo, connect):
    """The login page is on 127.0.0.1; the token endpoint is the same server named `localhost`."""
    conn_id = connect(
        access_steps=[PAGE_STEP],
        access_endpoint=demo.url.replace("127.0.0.1", "localhost") + "/oauth2/v1/token",
        access_parameters={"client_id": "{login}", "client_secret": "{password}"},
    )
    assert CustomTokenHook(conn_id).get_token()
    [token_request] = token_requests(demo, "/oauth2/v1/token")
    assert token_request["headers"]["Host"].startswith("localhost:")
    assert "Cookie" not in token_request["headers"], "127.0.0.1's cookie went to localhost"


def test_a_refused_sign_in_names_the_step_and_never_the_password(demo, connect, caplog):
    hook = CustomTokenHook(connect(password="wrong-password"))
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenRequestError) as refused:
        hook.get_token()
    message = str(refused.value)
    assert message.startswith(
        f"Login failed: login step 2 of 2 (access_steps[1]: POST {demo.url}{SIGN_IN}) answered 401"
    ), message
    assert "wrong user name or password" in message
    assert "wrong-password" not in message and "wrong-password" not in caplog.text
    assert (demo.stats()["logins_refused"], demo.stats()["token_requests"]) == (1, 0)


def test_an_output_missing_from_the_answer_names_the_step(demo, connect):
    hook = CustomTokenHook(
        connect(access_steps=[{**PAGE_STEP, "outputs": {"nonce": "data.nonce"}}, SIGN_IN_STEP])
    )
    with pytest.raises(TokenResponseError) as missing:
        hook.get_token()
    assert str(missing.value).startswith(
        f"Login failed: login step 1 of 2 (access_steps[0]: GET {demo.url}{PAGE}): The output 'nonce' at "
        "'data.nonce' (access_steps[0].outputs) is not in the response; it holds an object with keys: nonce"
    ), str(missing.value)
    assert demo.stats()["logins"] == 0


def test_the_deferrable_client_logs_in_with_its_own_session(demo, connect):
    hook = CustomTokenHook(connect())

    async def call() -> int:
        async with AsyncCustomTokenClient(hook.source) as client:
            return (await client.request("GET", "/api/v1/whoami")).status

    assert asyncio.run(call()) == 200
    assert (demo.stats()["login_pages"], demo.stats()["logins"], demo.stats()["token_requests"]) == (1, 1, 1)
    assert cookies_sent(token_requests(demo)[0])["session"].startswith("si_")


def test_the_test_button_logs_in_and_names_a_failing_step(demo, connect):
    ok, message = CustomTokenHook(connect()).test_connection()
    assert ok and message.startswith(f"Token obtained from {demo.url}{TOKEN}") and "answered 200" in message
    assert demo.stats()["logins"] == 1
    ok, message = CustomTokenHook(connect(password="wrong-password")).test_connection()
    assert (
        not ok and message.startswith("Login failed: login step 2 of 2") and "wrong-password" not in message
    )
