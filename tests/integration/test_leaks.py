"""Live tokens, passwords and secret parameters stay out of logs, XCom, errors, reprs and trigger events.

The in-process tests check each surface on its own; `test_dags_test_writes_no_secret_anywhere` runs a
DAG that tries hard to leak (tests/dags/leak_check.py), the example DAG that echoes its URL token and the
example DAG of a session API (a session cookie and its CSRF token, an additional output, from a login
with Basic client authentication) with `airflow dags test`, then searches everything Airflow wrote: its
output, every file under AIRFLOW_HOME and every row of the metadata database.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from cryptography.fernet import Fernet

import airflow_custom_token.demo.connections as example_dags
from airflow_custom_token import redaction
from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.errors import CustomTokenError, RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.airflow_names import xcom_return_values
from tests.conftest import demo_extra
from tests.paths import EXAMPLE_DAGS
from tests.triggering import first_event

pytestmark = pytest.mark.timeout(420)  # airflow dags test runs; slow on 2 busy cores


PASSWORD = "dev-secret"
API_SECRET = "sig-secret-41c7"  # integration parameter whose name marks it secret
TENANT = "tenant-open-9"  # integration parameter that is not secret

INJECTIONS = {
    "header": {"inject_as": "header", "inject_name": "Authorization", "inject_template": "Bearer {token}"},
    "url": {"inject_as": "url", "inject_name": "sid", "inject_template": "{token}"},
}


def leak_extra(demo: DemoServer, injection: str, **overrides: Any) -> dict[str, Any]:
    return demo_extra(
        demo,
        **INJECTIONS[injection],
        integration_parameters={"api_secret": API_SECRET, "tenant": TENANT},
        request_parameters={"header": {"X-Signature": "{api_secret}"}, "url": {"sig": "{api_secret}"}},
        **overrides,
    )


@pytest.fixture(params=list(INJECTIONS))
def injection(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def leaky(demo: DemoServer, make_conn: Callable[..., str], injection: str) -> str:
    return make_conn(
        "leaky", host=demo.url, login="dev", password=PASSWORD, extra=leak_extra(demo, injection)
    )


def secrets_of(demo: DemoServer) -> list[str]:
    """Everything that must never show: each token the demo issued, the password, the secret parameter."""
    return [*demo._tokens, PASSWORD, API_SECRET]


def found_in(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if any(f in text for f in {s, quote(s, safe=""), quote_plus(s)})]


# -- Airflow's secrets masker ---------------------------------------------------------------------------


@pytest.fixture
def masker_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record what reaches Airflow's `mask_secret` / `amask_secret` through compat (then pass it on)."""
    from airflow_custom_token import compat

    redaction.reset()  # as in a fresh worker process
    calls: list[tuple[str, str]] = []
    sync_real, async_real = compat.mask_secret, compat.amask_secret

    def record(secret: str) -> None:
        calls.append(("sync", secret))
        sync_real(secret)

    async def arecord(secret: str) -> None:
        calls.append(("async", secret))
        await async_real(secret)

    monkeypatch.setattr(compat, "mask_secret", record)
    monkeypatch.setattr(compat, "amask_secret", arecord)
    return calls


def test_token_injection_value_and_secret_parameters_reach_airflows_masker(
    demo: DemoServer, leaky: str, injection: str, masker_calls: list[tuple[str, str]]
) -> None:
    from tests.airflow_names import redact

    hook = CustomTokenHook(leaky)
    token = hook.get_token()

    registered = {secret for kind, secret in masker_calls if kind == "sync"}
    value = hook.account.injection_value(token)
    assert {token, value, PASSWORD, API_SECRET} <= registered
    assert TENANT not in registered and "dev" not in registered
    assert redact(f"got {value} and {API_SECRET}") == "got *** and ***"


def test_a_refreshed_token_is_registered_too(
    demo: DemoServer, leaky: str, masker_calls: list[tuple[str, str]]
) -> None:
    hook = CustomTokenHook(leaky)
    first = hook.get_token()
    demo.revoke_all()

    hook.run("/api/v1/whoami")  # 401, new token, retried once

    second = hook.get_token()
    assert second != first
    assert {first, second} <= {secret for _, secret in masker_calls}


def test_a_token_from_the_host_cache_is_registered(
    demo: DemoServer, leaky: str, masker_calls: list[tuple[str, str]]
) -> None:
    """Another process fetched it (host cache): this process never saw it, and must register it."""
    token = CustomTokenHook(leaky).get_token()
    PROCESS_CACHE.clear()
    redaction.reset()
    masker_calls.clear()

    assert CustomTokenHook(leaky).get_token() == token
    assert demo.stats()["token_requests"] == 1
    assert token in {secret for _, secret in masker_calls}


def test_the_trigger_registers_with_amask_secret(
    demo: DemoServer, leaky: str, masker_calls: list[tuple[str, str]]
) -> None:
    """As in the triggerer: the account is read asynchronously, the token fetched with aiohttp."""
    event = first_event(CustomTokenHttpTrigger(custom_token_conn_id=leaky, endpoint="/api/v1/whoami"))

    assert event["status"] == "success"
    (token,) = demo._tokens
    value = "Bearer " + token if demo.api_log[-1]["headers"].get("Authorization") else token
    assert {token, value, PASSWORD, API_SECRET} <= {secret for _, secret in masker_calls}
    assert {token, value} <= {secret for kind, secret in masker_calls if kind == "async"}


def test_injection_value_is_registered_when_another_connection_fetched_the_token(
    demo: DemoServer, make_conn: Callable[..., str], masker_calls: list[tuple[str, str]]
) -> None:
    """Two connections with the same integration key and token request share one token; each injects
    it its own way, so each rendered value must be known."""
    for conn_id, injection in (("shared_url", "url"), ("shared_header", "header")):
        make_conn(conn_id, host=demo.url, login="dev", password=PASSWORD, extra=leak_extra(demo, injection))
    token = CustomTokenHook("shared_url").get_token()

    hook = CustomTokenHook("shared_header")
    assert hook.get_token() == token and demo.stats()["token_requests"] == 1

    assert "Bearer " + token in {secret for _, secret in masker_calls}
    assert redaction.redact({"Authorization": "Bearer " + token}) == {"Authorization": "***"}


# -- repr, errors -----------------------------------------------------------------------------------------


def test_reprs_show_no_secret(demo: DemoServer, leaky: str) -> None:
    hook = CustomTokenHook(leaky)
    token = hook.auth.get_token()
    session = hook.get_conn()
    objects = [
        hook,
        session,
        session.auth,
        hook.auth,
        hook.account,
        hook.account.token_request,
        hook.source,
        token,
        AsyncCustomTokenClient(hook.source),
        CustomTokenHttpTrigger(custom_token_conn_id=leaky, endpoint="/api/v1/echo"),
    ]
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert found_in(text, secrets_of(demo)) == [], f"{type(obj).__name__}: {text}"


def test_repr_of_an_account_with_a_secret_in_the_token_endpoint_path(
    demo: DemoServer, make_conn: Callable[..., str]
) -> None:
    """APIs that take the key in the path (`/bot<key>/...`) must not show it in a repr either."""
    extra = leak_extra(demo, "header", access_endpoint="/oauth2/v1/token/{api_secret}")
    make_conn("pathkey", host=demo.url, login="dev", password=PASSWORD, extra=extra)

    account = CustomTokenHook("pathkey").account

    assert API_SECRET not in repr(account) and API_SECRET not in repr(account.token_request)


def assert_error_is_clean(error: BaseException, secrets: list[str]) -> None:
    """The message and the whole formatted traceback (what a log shows)."""
    shown = "".join(traceback.format_exception(error))
    assert found_in(str(error), secrets) == [], str(error)
    assert found_in(shown, secrets) == [], shown


def test_api_error_status_message_hides_the_token(demo: DemoServer, leaky: str) -> None:
    with pytest.raises(RequestError) as caught:
        CustomTokenHook(leaky).run("/api/v1/status/500")

    assert "500" in str(caught.value)
    assert_error_is_clean(caught.value, secrets_of(demo))


def test_final_401_after_refresh_hides_both_tokens(demo: DemoServer, leaky: str) -> None:
    hook = CustomTokenHook(leaky)
    hook.get_token()
    demo.set_reject_all(True)

    with pytest.raises(RequestError) as caught:
        hook.run("/api/v1/echo")

    assert caught.value.status == 401 and len(demo._tokens) == 2
    assert_error_is_clean(caught.value, secrets_of(demo))


def test_unreachable_api_error_hides_the_token(
    demo: DemoServer, make_conn: Callable[..., str], injection: str
) -> None:
    """Token from the demo; API host down: requests quotes the URL (with ?sid=<token>) in its error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    extra = leak_extra(demo, injection, access_endpoint=f"{demo.url}/oauth2/v1/token")
    make_conn("down", host=closed, login="dev", password=PASSWORD, extra=extra)

    with pytest.raises(RequestError) as caught:
        CustomTokenHook("down").run("/api/v1/echo")

    assert len(demo._tokens) == 1
    assert_error_is_clean(caught.value, secrets_of(demo))


def test_token_request_error_with_echoing_body_is_clean(demo: DemoServer, leaky: str) -> None:
    demo.push_fault({"status": 400, "json": {"error": "bad", "you_sent": [PASSWORD, API_SECRET]}})

    with pytest.raises(CustomTokenError) as caught:
        CustomTokenHook(leaky).get_token()

    assert_error_is_clean(caught.value, secrets_of(demo))


# -- trigger events -----------------------------------------------------------------------------------------


def test_trigger_event_for_an_echo_is_redacted(demo: DemoServer, leaky: str) -> None:
    trigger = CustomTokenHttpTrigger(
        custom_token_conn_id=leaky, endpoint="/api/v1/echo", query_params={"a": "1"}
    )

    event = first_event(trigger)

    assert event["status"] == "success" and event["response"]["status"] == 200
    echoed = json.loads(event["response"]["text"])
    assert echoed["headers"]["X-Signature"] == "***"
    text = json.dumps(event)
    assert found_in(text, secrets_of(demo)) == []
    assert found_in(json.dumps(trigger.serialize()), secrets_of(demo)) == []


def test_trigger_error_event_is_clean(demo: DemoServer, leaky: str) -> None:
    demo.push_fault({"status": 403, "body": f"denied {PASSWORD} {API_SECRET}"})
    trigger = CustomTokenHttpTrigger(custom_token_conn_id=leaky, endpoint="/api/v1/echo")

    event = first_event(trigger)

    assert event["status"] == "error" and "403" in event["message"]
    assert found_in(json.dumps(event), secrets_of(demo)) == []


# -- airflow dags test, everything it writes ----------------------------------------------------------------

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
LEAK_DAG = Path(__file__).parent / "dags" / "leak_check.py"
EXAMPLE_DAG = EXAMPLE_DAGS / "example_url_parameter.py"
SESSION_DAG = EXAMPLE_DAGS / "example_session_csrf.py"


@dataclass
class LeakRun:
    home: Path
    demo: DemoServer
    outputs: dict[str, str] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def db_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}

    def xcoms(self, dag_id: str) -> dict[str, Any]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True) as conn:
            rows = xcom_return_values(conn, dag_id)
        return {task: json.loads(value) for task, value in rows}

    def task_states(self, dag_id: str) -> dict[str, str]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,))
            return dict(rows.fetchall())


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakRun]:
    home = tmp_path_factory.mktemp("leak-home")
    dags = home / "dags"
    dags.mkdir()
    for dag_file in (LEAK_DAG, EXAMPLE_DAG, SESSION_DAG):
        (dags / dag_file.name).symlink_to(dag_file)
    with DemoServer() as demo:
        connections = {
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
                {
                    "conn_type": "custom_token",
                    "host": demo.url,
                    "login": "dev",
                    "password": PASSWORD,
                    "extra": leak_extra(demo, injection, integration_key=key),
                }
            )
            for conn_id, injection, key in (("leak_header", "header", "leakh"), ("leak_url", "url", "leaku"))
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(home / "token-cache"),
                "AIRFLOW__CUSTOM_TOKEN__RETRY_WAIT_MAX": "0.2",
                **example_dags.environment(demo.url),
                **connections,
            }
        )
        run = LeakRun(home, demo)

        def airflow(name: str, *args: str) -> None:
            started = time.monotonic()
            done = subprocess.run(
                [AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=400, check=False
            )
            run.outputs[name], run.codes[name] = done.stdout + done.stderr, done.returncode
            run.seconds[name] = time.monotonic() - started

        airflow("migrate", "db", "migrate")
        assert run.codes["migrate"] == 0, run.outputs["migrate"][-3000:]
        airflow("leak_check", "dags", "test", "custom_token_leak_check")
        airflow("example", "dags", "test", "example_custom_token_url_parameter")
        airflow("session", "dags", "test", "example_custom_token_session_csrf")
        yield run


@pytest.mark.airflow_cli
def test_dags_test_ran_the_leaky_tasks_for_real(leak_run: LeakRun) -> None:
    """Controls: the API received the real tokens, and the tasks did what they were written to do."""
    states = leak_run.task_states("custom_token_leak_check")
    assert len(states) == 12, leak_run.outputs["leak_check"][-5000:]
    for task, state in states.items():
        assert state == ("failed" if "_fails_" in task else "success"), (
            task,
            leak_run.outputs["leak_check"][-5000:],
        )
    assert leak_run.codes["example"] == 0, leak_run.outputs["example"][-5000:]
    assert leak_run.codes["session"] == 0, leak_run.outputs["session"][-5000:]
    tokens = list(leak_run.demo._tokens)
    api_log = json.dumps(leak_run.demo.api_log)
    assert tokens and all(token in api_log for token in tokens)
    assert leak_run.demo._csrf and all(csrf in api_log for csrf in leak_run.demo._csrf.values())
    assert API_SECRET in api_log  # the secret parameter was sent, and so echoed back


@pytest.mark.airflow_cli
def test_logged_responses_show_stars(leak_run: LeakRun) -> None:
    output = leak_run.outputs["leak_check"]
    assert '"Authorization": "***"' in output, f"took {leak_run.seconds}"
    assert '"X-Signature": "***"' in output
    assert '"sid": "***"' in output


@pytest.mark.airflow_cli
def test_xcoms_are_redacted_recursively(leak_run: LeakRun) -> None:
    xcoms = leak_run.xcoms("custom_token_leak_check")
    header = xcoms["leak_header_filtered_sync"]
    assert header["request_headers"]["Authorization"] == "***"  # the whole "Bearer <token>"
    assert header["echo"]["headers"]["X-Signature"] == "***"
    url = xcoms["leak_url_filtered_sync"]
    assert url["echo"]["query"]["sid"] == "***" and url["echo"]["query"]["sig"] == "***"
    assert "***" in url["request_url"] and "***" in url["url"]
    deferred = xcoms["leak_url_filtered_deferred"]
    assert deferred["echo"]["query"]["sid"] == "***"
    assert leak_run.xcoms("example_custom_token_url_parameter")["echo"]["access_token"] == "***"
    session = leak_run.xcoms("example_custom_token_session_csrf")["echo_session"]
    assert session == {"Cookie": "***", "X-CSRF-Token": "***"}


@pytest.mark.airflow_cli
def test_dags_test_writes_no_secret_anywhere(leak_run: LeakRun) -> None:
    login, secret = example_dags.NOTES_ACCOUNT
    basic = base64.b64encode(f"{login}:{secret}".encode()).decode()  # the session API's Basic credential
    secrets = [*leak_run.demo._tokens, PASSWORD, API_SECRET, *example_dags.ACCOUNTS.values()]
    secrets += [*leak_run.demo._csrf.values(), secret, basic]  # the CSRF tokens: additional outputs
    problems: list[str] = []
    for name, output in leak_run.outputs.items():
        problems += [f"output of {name}: {s}" for s in found_in(output, secrets)]
    for table, rows in leak_run.db_rows().items():
        problems += [f"table {table}: {s}" for s in found_in(repr(rows), secrets)]
    for path in leak_run.home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes().decode("utf-8", "replace")
            problems += [f"file {path.relative_to(leak_run.home)}: {s}" for s in found_in(data, secrets)]
    assert problems == []
