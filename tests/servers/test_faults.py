"""Token endpoint faults, against the demo API: retries, waits, bounds, and what the user is told.

Retry settings come from `[custom_token]` through `AIRFLOW__CUSTOM_TOKEN__*` (conftest: 3 retries,
`retry_wait_max` 0.2 s). Faults are queued on the demo server, one per token request.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_custom_token.errors import CustomTokenError, TokenRequestError, TokenResponseError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.settings import load_settings
from tests.conftest import demo_extra
from tests.serving import free_port

pytestmark = pytest.mark.timeout(60)


PASSWORD = "dev-secret"
API_SECRET = "param-secret-8e1f"  # an integration parameter whose name marks it secret


@pytest.fixture
def connect(demo: Any, make_conn: Callable[..., str]) -> Callable[..., CustomTokenHook]:
    """A connection on the demo API (extra overridable) and a fresh hook for it."""

    def make(**overrides: Any) -> CustomTokenHook:
        extra = demo_extra(demo, integration_parameters={"api_secret": API_SECRET}, **overrides)
        make_conn("faulty", host=demo.url, login="dev", password=PASSWORD, extra=extra)
        return CustomTokenHook("faulty")

    return make


def assert_secret_free(message: str, *more: str) -> None:
    for secret in (PASSWORD, API_SECRET, *more):
        assert secret not in message


# -- retried faults --------------------------------------------------------------------------------------


def test_two_500s_then_success(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    demo.push_fault({"status": 500})
    demo.push_fault({"status": 500})

    response = connect().run("/api/v1/whoami")

    assert response.json()["account"] == "dev"
    assert demo.stats()["token_requests"] == 3


def test_429_with_retry_after_waits_that_long(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    """Backoff alone would wait at most `retry_wait_max` (0.2 s): ~1 s proves Retry-After was honoured."""
    demo.push_fault({"status": 429, "retry_after": 1})
    hook = connect()

    started = time.monotonic()
    hook.run("/api/v1/whoami")
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 3
    assert demo.stats()["token_requests"] == 2


def test_retry_after_is_capped_by_retry_after_max(
    connect: Callable[..., CustomTokenHook], demo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_AFTER_MAX", "0.3")
    demo.push_fault({"status": 503, "retry_after": 30})

    started = time.monotonic()
    connect().get_token()

    assert time.monotonic() - started < 3
    assert demo.stats()["token_requests"] == 2


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_are_bounded_by_token_request_retries(
    connect: Callable[..., CustomTokenHook], demo: Any, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", str(retries))
    for _ in range(retries + 3):
        demo.push_fault({"status": 500, "body": f"upstream broke; it was sent {PASSWORD}"})

    with pytest.raises(TokenRequestError) as caught:
        connect().run("/api/v1/whoami")

    assert demo.stats()["token_requests"] == retries + 1
    assert demo.stats()["api_requests"] == 0
    message = str(caught.value)
    assert caught.value.status == 500
    assert f"{demo.url}/oauth2/v1/token" in message and "500" in message
    assert "upstream broke" in message and "***" in message  # a redacted excerpt of the body
    assert_secret_free(message)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_not_retried(connect: Callable[..., CustomTokenHook], demo: Any, status: int) -> None:
    demo.push_fault({"status": status})

    with pytest.raises(TokenRequestError) as caught:
        connect().get_token()

    assert caught.value.status == status and not caught.value.retryable
    assert demo.stats()["token_requests"] == 1


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", "7")
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_WAIT_MAX", "4.5")
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_AFTER_MAX", "12")

    policy = load_settings().retry

    assert (policy.retries, policy.wait_max, policy.retry_after_max) == (7, 4.5, 12)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(retries=6, wait_base=0.5, wait_max=3.0, retry_after_max=10)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)]:
        waits = {policy.wait(attempt, TokenRequestError("x", retryable=True)) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(waits) > 1  # jitter
    assert policy.wait(1, TokenRequestError("x", retry_after=4)) == 4
    assert policy.wait(1, TokenRequestError("x", retry_after=400)) == 10


# -- no answer at all ------------------------------------------------------------------------------------


@pytest.fixture
def slammer() -> Iterator[tuple[str, list[int]]]:
    """A port on 127.0.0.1 that accepts connections and closes them at once; counts them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    sock.close()


def test_connection_errors_are_retried(
    connect: Callable[..., CustomTokenHook], slammer: tuple[str, list[int]]
) -> None:
    url, accepted = slammer
    hook = connect(access_endpoint=f"{url}/oauth2/v1/token")

    with pytest.raises(TokenRequestError, match="could not connect") as caught:
        hook.get_token()

    assert len(accepted) == 4  # 1 + token_request_retries
    assert f"{url}/oauth2/v1/token" in str(caught.value)
    assert_secret_free(str(caught.value))


def test_a_refused_get_token_request_does_not_reveal_its_query(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """GET token requests carry the credentials in the query; the connection error quotes the URL."""
    hook = connect(
        access_endpoint=f"http://127.0.0.1:{free_port()}/oauth2/v1/token",
        access_verb="GET",
        access_parameters={"client_id": "{login}", "client_secret": "{password}", "sig": "{api_secret}"},
    )

    with pytest.raises(TokenRequestError, match="could not connect") as caught:
        hook.get_token()

    assert_secret_free(str(caught.value))


def test_a_hanging_token_endpoint_fails_within_the_configured_bound(
    connect: Callable[..., CustomTokenHook], demo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__TOKEN_REQUEST_RETRIES", "2")
    timeout, retries, wait_max = 0.4, 2, 0.2
    for _ in range(retries + 1):
        demo.push_fault({"hang": 2})
    hook = connect(timeout=timeout)

    started = time.monotonic()
    with pytest.raises(TokenRequestError, match="timed out") as caught:
        hook.run("/api/v1/whoami")
    elapsed = time.monotonic() - started

    bound = (retries + 1) * timeout + retries * wait_max
    assert elapsed < bound + 1.0, f"took {elapsed:.2f} s, bound {bound:.2f} s"
    assert demo.stats()["token_requests"] == retries + 1
    assert f"{demo.url}/oauth2/v1/token" in str(caught.value)
    assert_secret_free(str(caught.value))


def test_one_hang_then_an_answer_succeeds(connect: Callable[..., CustomTokenHook], demo: Any) -> None:
    demo.push_fault({"hang": 2})

    assert connect(timeout=0.4).run("/api/v1/whoami").json()["account"] == "dev"
    assert demo.stats()["token_requests"] == 2


# -- error pages -----------------------------------------------------------------------------------------


def test_html_error_page_is_retried_then_described_briefly(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    for _ in range(4):
        demo.push_fault({"html": True})  # 502 Bad Gateway, text/html

    with pytest.raises(TokenRequestError) as caught:
        connect().get_token()

    message = str(caught.value)
    assert demo.stats()["token_requests"] == 4
    assert "502" in message and "HTML page" in message
    assert len(message) < 400


def test_html_page_instead_of_a_token_names_the_location_and_content_type(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    demo.push_fault({"html": True, "status": 200})

    with pytest.raises(TokenResponseError) as caught:
        connect().get_token()

    assert "access_token" in str(caught.value) and "text/html" in str(caught.value)
    assert demo.stats()["token_requests"] == 1


def test_error_names_endpoint_with_secret_query_values_masked(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    demo.push_fault({"status": 400, "json": {"error": "invalid_client", "got": [PASSWORD, API_SECRET]}})
    hook = connect(
        access_endpoint="/oauth2/v1/token?client_id={login}&client_secret={password}&sig={api_secret}",
        access_verb="GET",
        access_parameters=None,
    )

    with pytest.raises(TokenRequestError) as caught:
        hook.get_token()

    message = str(caught.value)
    assert "/oauth2/v1/token?client_id=dev&client_secret=***&sig=***" in message
    assert "400" in message and "invalid_client" in message
    assert_secret_free(message)


def test_a_secret_in_the_endpoint_path_is_not_shown(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """Some APIs put the key in the path (`/bot<key>/...`): the error must name the endpoint without it."""
    hook = connect(access_endpoint="/oauth2/v1/token/{api_secret}")  # the demo answers 404 here

    with pytest.raises(TokenRequestError) as caught:
        hook.get_token()

    assert "404" in str(caught.value)
    assert_secret_free(str(caught.value))


# -- malformed token responses -----------------------------------------------------------------------------

MALFORMED: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {
    # name: (extra overrides, fault, what the message must name)
    "not-json": ({}, {"body": "hello there", "content_type": "text/plain"}, ["access_token", "text/plain"]),
    "no-content-type-garbage": ({}, {"body": "{oops", "content_type": ""}, ["access_token", "not JSON"]),
    "path-missing": ({}, {"json": {"token": "abc", "ttl": 5}}, ["access_token", "token, ttl"]),
    "nested-path-missing": (
        {"access_response_path": "data.session.id"},
        {"json": {"data": {"user": "x", "expires": 1}}},
        ["data.session.id", "expires, user", "'data'"],
    ),
    "top-level-list": ({}, {"json": [1, 2, 3]}, ["access_token", "list"]),
    "empty-token": ({}, {"json": {"access_token": ""}}, ["access_token", "empty"]),
    "blank-token": ({}, {"json": {"access_token": "   "}}, ["access_token", "empty"]),
    "number-token": ({}, {"json": {"access_token": 1234567}}, ["access_token", "int", "expected text"]),
    "object-token": ({}, {"json": {"access_token": {"v": "x"}}}, ["access_token", "expected text"]),
    "null-token": ({}, {"json": {"access_token": None}}, ["access_token", "expected text"]),
    "expiry-text": (
        {},
        {"json": {"access_token": "tok_valid_abcdef", "expires_in": "soon"}},
        ["expires_in", "ISO-8601"],
    ),
    "expiry-object": (
        {},
        {"json": {"access_token": "tok_valid_abcdef", "expires_in": {"s": 1}}},
        ["expires_in", "object with keys: s"],
    ),
    "expiry-bool": ({}, {"json": {"access_token": "tok_valid_abcdef", "expires_in": True}}, ["expires_in"]),
    "expiry-nan": (
        {},
        {
            "body": '{"access_token": "tok_valid_abcdef", "expires_in": NaN}',
            "content_type": "application/json",
        },
        ["expires_in"],
    ),
    "expiry-infinity": (
        {},
        {
            "body": '{"access_token": "tok_valid_abcdef", "expires_in": Infinity}',
            "content_type": "application/json",
        },
        ["expires_in"],
    ),
    "header-missing": (
        {"access_response_path": "header:X-Session-Token"},
        {"json": {"ok": 1}},
        ["X-Session-Token".lower(), "content-type"],
    ),
    "cookie-missing": ({"access_response_path": "cookie:sid"}, {"json": {"ok": 1}}, ["sid", "cookie"]),
}


@pytest.mark.parametrize(
    "case",
    MALFORMED,
)
def test_malformed_token_response_gives_a_precise_error(
    connect: Callable[..., CustomTokenHook], demo: Any, case: str
) -> None:
    overrides, fault, named = MALFORMED[case]
    demo.push_fault(fault)

    with pytest.raises(CustomTokenError) as caught:
        connect(**overrides).run("/api/v1/whoami")

    error = caught.value
    assert isinstance(error, TokenResponseError), f"{type(error).__name__}: {error}"
    message = str(error)
    for word in named:
        assert word in message
    assert "Traceback" not in message and "KeyError" not in message
    assert "tok_valid_abcdef" not in message
    assert_secret_free(message)
    assert demo.stats()["token_requests"] == 1  # a wrong answer is not retried
    assert demo.stats()["api_requests"] == 0


def test_a_text_token_read_as_json_is_not_quoted_in_the_error(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """/auth/v1/text answers the bare token; a JSON path there must fail without showing that token."""
    with pytest.raises(TokenResponseError) as caught:
        connect(access_endpoint="/auth/v1/text").get_token()

    message = str(caught.value)
    assert "access_token" in message and "text/plain" in message
    issued = list(demo._tokens)
    assert len(issued) == 1 and issued[0] not in message


def test_malformed_errors_survive_json_serialisation(
    connect: Callable[..., CustomTokenHook], demo: Any
) -> None:
    """Errors are plain text the UI and logs can carry (no bytes, no objects)."""
    demo.push_fault({"json": {"nope": 1}})
    with pytest.raises(TokenResponseError) as caught:
        connect().get_token()
    assert json.loads(json.dumps(str(caught.value))) == str(caught.value)
