"""API retries (issue 13): the connection's `request_retries`, `run_with_advanced_retry`, the operator's
`retry_args` and `request_kwargs`, against a flaky API on 127.0.0.1 (`tests.apis.Api`).

Each client a DAG author has is checked: `hook.run`, `CustomTokenAuth` on a plain `requests.Session`,
the async hook, and the deferrable operator (its trigger).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import tenacity

from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.errors import ConfigurationError, RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenAsyncHook, CustomTokenHook
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from tests.apis import CLIENT_ID, CLIENT_SECRET, Api
from tests.servers.test_operators import run_deferred

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("task_runner_off")]

CONN_ID = "flaky"
KINDS = ["run", "auth", "async", "deferrable"]


@pytest.fixture
def api() -> Iterator[Api]:
    with Api() as server:
        yield server


@pytest.fixture
def conn(api: Api, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """`conn(**extra)`: the connection `flaky` on the API, with these extra fields."""
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_AFTER_MAX", "0.3")

    def make(**extra: Any) -> str:
        return make_conn(CONN_ID, **api.connection(**extra))

    return make


def call(api: Api, kind: str, method: str = "GET", **extra: Any) -> int:
    """Send `method /api/data` the way `kind` does, on a connection with `extra`; the final status
    (a `RequestError`'s status when the client raises one, as all but `auth` do for >= 400)."""
    try:
        if kind == "run":
            return CustomTokenHook(CONN_ID).run("/api/data", method).status_code
        if kind == "auth":  # no Airflow connection: the values themselves (settings' defaults)
            auth = CustomTokenAuth.from_values(
                api.url, api.extra(**extra), login=CLIENT_ID, password=CLIENT_SECRET
            )
            return requests.request(method, f"{api.url}/api/data", auth=auth, timeout=10).status_code
        if kind == "async":
            return asyncio.run(CustomTokenAsyncHook(CONN_ID).run("/api/data", method)).status
        op = CustomTokenHttpOperator(
            task_id="call",
            custom_token_conn_id=CONN_ID,
            endpoint="/api/data",
            method=method,
            deferrable=True,
            warn_on_non_idempotent=False,
        )
        run_deferred(op, {})
        return 200
    except RequestError as error:
        assert error.status is not None, error
        return error.status


# -- the connection's request_retries -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_request_retries_carry_a_flaky_api_to_success(api: Api, conn: Callable[..., str], kind: str) -> None:
    conn(request_retries=2)
    api.state.faults += [503, (429, 1)]  # Retry-After: 1, capped by retry_after_max (0.3 here)
    started = time.monotonic()

    assert call(api, kind, request_retries=2) == 200

    elapsed = time.monotonic() - started
    assert api.state.statuses() == [503, 429, 200]
    assert len(api.state.issued) == 1 and {s.token for s in api.state.seen} == {api.state.issued[0]}
    # the 429's wait: Retry-After up to the cap (0.3 s), or all of it (1 s) for the plain values'
    # default settings (retry_after_max 60)
    assert (1.0 if kind == "auth" else 0.3) <= elapsed < 8, elapsed


def test_retry_after_is_honoured_up_to_retry_after_max(
    api: Api, conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn(request_retries=1)
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_AFTER_MAX", "60")
    api.state.faults += [(429, 1)]
    started = time.monotonic()
    assert CustomTokenHook(CONN_ID).run("/api/data").status_code == 200
    assert time.monotonic() - started >= 1.0  # what the server asked for

    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__RETRY_AFTER_MAX", "0.2")
    api.state.faults += [(429, 30)]
    started = time.monotonic()
    assert CustomTokenHook(CONN_ID).run("/api/data").status_code == 200
    assert time.monotonic() - started < 3  # 30 s asked, 0.2 s waited

    assert api.state.statuses() == [429, 200, 429, 200]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("retry_after", ["²", "1.5e3", "soon", "Wed, 21 Oct 99999 07:28:00 GMT"])
def test_a_retry_after_neither_digits_nor_a_date_counts_as_absent(
    api: Api, conn: Callable[..., str], kind: str, retry_after: str
) -> None:
    """`²` is a digit to `str.isdigit()`, not to `float()`: 0.2 raised ValueError after one send."""
    conn(request_retries=1)
    api.state.faults += [(503, retry_after)]

    assert call(api, kind, request_retries=1) == 200  # retried after the backoff, as with no Retry-After

    assert api.state.statuses() == [503, 200]


@pytest.mark.parametrize("kind", ["run", "async", "deferrable"])
def test_without_request_retries_the_first_503_is_the_error(
    api: Api, conn: Callable[..., str], kind: str
) -> None:
    conn()
    api.state.faults += [503]

    with pytest.raises(RequestError, match=r"^GET http://127\.0\.0\.1:\d+/api/data answered 503 ") as error:
        if kind == "run":
            CustomTokenHook(CONN_ID).run("/api/data")
        elif kind == "async":
            asyncio.run(CustomTokenAsyncHook(CONN_ID).run("/api/data"))
        else:
            op = CustomTokenHttpOperator(
                task_id="call", custom_token_conn_id=CONN_ID, endpoint="/api/data", deferrable=True
            )
            run_deferred(op, {})

    assert error.value.status == 503
    assert api.state.statuses() == [503]
    assert api.state.issued[0] not in str(error.value)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_post_or_patch_is_sent_once_whatever_request_retries_says(
    api: Api, conn: Callable[..., str], kind: str, method: str
) -> None:
    conn(request_retries=3)
    api.state.faults += [503, 503]

    assert call(api, kind, method, request_retries=3) == 503

    assert [(s.method, s.status) for s in api.state.seen] == [(method, 503)]


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "PUT", "DELETE"])
def test_idempotent_methods_are_retried(api: Api, conn: Callable[..., str], method: str) -> None:
    conn(request_retries=1)
    api.state.faults += [502]

    assert call(api, "run", method) == 200

    assert [(s.method, s.status) for s in api.state.seen] == [(method, 502), (method, 200)]


def test_a_dropped_connection_is_retried(api: Api, conn: Callable[..., str]) -> None:
    conn(request_retries=1)
    api.state.faults += ["drop"]

    assert CustomTokenHook(CONN_ID).run("/api/data", params={"a": "1"}).json()["query"] == {"a": "1"}

    assert [s.path for s in api.state.seen] == ["/api/data", "/api/data"]


def test_retries_are_counted_per_request(api: Api, conn: Callable[..., str]) -> None:
    conn(request_retries=1)
    hook = CustomTokenHook(CONN_ID)
    api.state.faults += [503, 503]

    with pytest.raises(RequestError, match="answered 503"):
        hook.run("/api/data")
    assert hook.run("/api/data").status_code == 200  # a new request: its own retry

    assert api.state.statuses() == [503, 503, 200]


def test_request_retries_is_checked_like_every_field(api: Api, conn: Callable[..., str]) -> None:
    conn(request_retries=-1)

    with pytest.raises(
        ConfigurationError, match=r"request_retries: expected a number >= 0 and <= 10, found -1"
    ):
        CustomTokenHook(CONN_ID).run("/api/data")

    assert api.state.seen == [] and api.state.token_requests == []


# -- run_with_advanced_retry and the operator's retry_args ---------------------------------------------------

RETRY_ON_ERRORS = {"wait": tenacity.wait_fixed(0), "retry": tenacity.retry_if_exception_type(RequestError)}


def test_run_with_advanced_retry_retries_as_its_arguments_say(api: Api, conn: Callable[..., str]) -> None:
    conn()
    hook = CustomTokenHook(CONN_ID)
    api.state.faults += [500, 500]

    response = hook.run_with_advanced_retry(
        {"stop": tenacity.stop_after_attempt(3), **RETRY_ON_ERRORS}, "/api/data", params={"a": "1"}
    )

    assert response.json()["query"] == {"a": "1"}
    assert api.state.statuses() == [500, 500, 200]

    api.state.faults += [500, 500]
    with pytest.raises(RequestError, match="answered 500") as error:
        hook.run_with_advanced_retry(
            {"stop": tenacity.stop_after_attempt(2), "reraise": True, **RETRY_ON_ERRORS}, "/api/data"
        )
    assert error.value.status == 500
    assert api.state.statuses() == [500, 500, 200, 500, 500]


def test_run_with_advanced_retry_retries_any_method_the_caller_says(
    api: Api, conn: Callable[..., str]
) -> None:
    """Unlike request_retries, tenacity's arguments are the caller's decision: a POST too."""
    conn()
    api.state.faults += [503]

    response = CustomTokenHook(CONN_ID).run_with_advanced_retry(
        {"stop": tenacity.stop_after_attempt(2), **RETRY_ON_ERRORS}, "/api/jobs", "POST", json={"n": 1}
    )

    assert response.json()["body"] == '{"n": 1}'
    assert [(s.method, s.status) for s in api.state.seen] == [("POST", 503), ("POST", 200)]


def test_the_operators_retry_args(api: Api, conn: Callable[..., str]) -> None:
    conn()
    api.state.faults += [502]
    op = CustomTokenHttpOperator(
        task_id="call",
        custom_token_conn_id=CONN_ID,
        endpoint="/api/data",
        query_params={"page": 2},
        retry_args={"stop": tenacity.stop_after_attempt(2), **RETRY_ON_ERRORS},
        response_filter=lambda response: response.json()["query"],
    )

    assert op.execute({}) == {"page": "2"}
    assert api.state.statuses() == [502, 200]


# -- request_kwargs ------------------------------------------------------------------------------------------


def test_the_operators_request_kwargs_reach_requests(api: Api, conn: Callable[..., str]) -> None:
    conn()
    op = CustomTokenHttpOperator(
        task_id="upload",
        custom_token_conn_id=CONN_ID,
        endpoint="/api/upload",
        method="POST",
        data={"kind": "daily"},
        request_kwargs={
            "files": {"report": ("report.csv", b"a,b\n1,2\n", "text/csv")},
            "cookies": {"session": "s-1"},
        },
        response_filter=lambda response: response.json(),
    )

    echo = op.execute({})

    assert echo["content_type"].startswith("multipart/form-data; boundary=")
    assert 'name="report"; filename="report.csv"' in echo["body"] and "a,b\n1,2\n" in echo["body"]
    assert 'name="kind"' in echo["body"] and "daily" in echo["body"]
    [seen] = api.state.seen
    assert seen.headers["Cookie"] == "session=s-1" and seen.token == api.state.issued[0]


def test_request_kwargs_that_would_replace_the_token_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"call: request_kwargs: expected keys among cookies, files; found \['auth'\]"
    ):
        CustomTokenHttpOperator(task_id="call", endpoint="/x", request_kwargs={"auth": ("u", "p")})
    with pytest.raises(
        ConfigurationError, match=r"request_kwargs: expected keys among cookies, files; found \['hooks'\]"
    ):
        CustomTokenHook("unused").run("/x", hooks={"response": []})


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"retry_args": {"stop": tenacity.stop_after_attempt(2)}}, "retry_args"),
        ({"request_kwargs": {"files": {}}, "retry_args": {"reraise": True}}, "request_kwargs and retry_args"),
    ],
)
def test_sync_only_arguments_are_refused_with_deferrable(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises(
        ValueError, match=rf"call: {named} work in sync mode only, not with deferrable=True .*request_retries"
    ):
        CustomTokenHttpOperator(task_id="call", endpoint="/x", deferrable=True, **arguments)
