"""Token flows real APIs use (issue 12), against the demo API: Basic client authentication, a session API
that hands out a CSRF token beside the session (an additional output), and an expiry in a header.

The session API of the demo (`POST /session/v1/login` with Basic client auth; `/api/session/...`) answers a
`session` cookie, an `X-CSRF-Token` header and an `X-Session-Expires` header, and refuses a request whose
CSRF token is not its session's.
"""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from airflow_custom_token import redaction
from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.demo.server import SESSION_API, SESSION_LOGIN
from airflow_custom_token.errors import (
    ConfigurationError,
    RequestError,
    TokenRequestError,
    TokenResponseError,
)
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.operators.http import CustomTokenHttpOperator
from airflow_custom_token.token import Token
from airflow_custom_token.triggers.http import CustomTokenHttpTrigger
from tests.conftest import demo_extra
from tests.serving import Handler, Serving
from tests.triggering import run_trigger

NOTES = f"{SESSION_API}v1/notes"
ECHO = f"{SESSION_API}v1/echo"
LOGIN, SECRET = "demo", "demo-secret"


def session_extra(**overrides: Any) -> dict[str, Any]:
    """A session API: Basic login, the session in a cookie, its CSRF token and lifetime in headers."""
    extra: dict[str, Any] = {
        "integration_key": "notes",
        "access_endpoint": SESSION_LOGIN,
        "access_verb": "POST",
        "access_auth": "basic",
        "access_response_path": "cookie:session",
        "access_outputs": {"csrf": "header:X-CSRF-Token"},
        "access_expiry_path": "header:X-Session-Expires",
        "inject_as": "header",
        "inject_name": "Cookie",
        "inject_template": "session={token}",
        "request_parameters": {"header": {"X-CSRF-Token": "{csrf}"}},
    }
    extra.update(overrides)
    return {k: v for k, v in extra.items() if v is not None}


@pytest.fixture
def notes(demo: DemoServer, make_conn: Callable[..., str]) -> str:
    return make_conn("notes", host=demo.url, login=LOGIN, password=SECRET, extra=session_extra())


def pairs(demo: DemoServer) -> list[tuple[str | None, str | None]]:
    """(session, CSRF token) of each request to the session API, in order."""
    found = []
    for entry in demo.api_log:
        if entry["path"].startswith(SESSION_API):
            cookie = entry["headers"].get("Cookie", "")
            session = cookie.removeprefix("session=") if cookie.startswith("session=") else None
            found.append((session, entry["headers"].get("X-CSRF-Token")))
    return found


def issued(demo: DemoServer) -> list[tuple[str, str]]:
    """The (session, CSRF token) pairs the demo issued, oldest first."""
    return list(demo._csrf.items())


def found_in(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if any(f in text for f in {s, quote(s, safe=""), quote_plus(s)})]


def secrets_of(demo: DemoServer) -> list[str]:
    """Every session and CSRF token issued, the password, and the Basic credential."""
    basic = base64.b64encode(f"{LOGIN}:{SECRET}".encode()).decode()
    return [*demo._tokens, *demo._csrf.values(), SECRET, basic]


# -- Basic client authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["hook", "trigger"])
def test_basic_header_built_from_login_and_password_and_the_secret_nowhere_else(
    demo: DemoServer, make_conn: Callable[..., str], via: str
) -> None:
    extra = demo_extra(demo, access_auth="basic", access_parameters={"grant_type": "client_credentials"})
    conn_id = make_conn("basic", host=demo.url, login="dev", password="dev-secret", extra=extra)

    if via == "hook":
        assert CustomTokenHook(conn_id).run("/api/v1/whoami").json()["account"] == "dev"
    else:
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=conn_id, endpoint="/api/v1/whoami"))
        assert event["status"] == "success" and json.loads(event["response"]["text"])["account"] == "dev"

    [record] = demo.token_log
    assert record["headers"]["Authorization"] == "Basic " + base64.b64encode(b"dev:dev-secret").decode()
    assert record["form"] == {"grant_type": "client_credentials"} and record["query"] == {}
    elsewhere = {**record, "headers": {k: v for k, v in record["headers"].items() if k != "Authorization"}}
    assert found_in(json.dumps(elsewhere), ["dev-secret"]) == []


def test_basic_credentials_are_utf8_and_the_password_may_hold_a_colon(make_conn: Callable[..., str]) -> None:
    with DemoServer(accounts={"jürgen": "pä:ss-wört"}) as server:
        extra = demo_extra(server, access_auth="basic", access_parameters=None)
        make_conn("utf8", host=server.url, login="jürgen", password="pä:ss-wört", extra=extra)

        assert CustomTokenHook("utf8").run("/api/v1/whoami").json()["account"] == "jürgen"

        sent = server.token_log[0]["headers"]["Authorization"].removeprefix("Basic ")
        assert base64.b64decode(sent) == "jürgen:pä:ss-wört".encode()


def test_the_basic_credential_is_masked_like_the_password(
    demo: DemoServer, make_conn: Callable[..., str]
) -> None:
    """A token endpoint that echoes the request's headers in its error must not show the credential."""
    basic = "Basic " + base64.b64encode(b"dev:dev-secret").decode()
    demo.push_fault({"status": 400, "json": {"error": "bad", "you_sent": {"Authorization": basic}}})
    extra = demo_extra(demo, access_auth="basic", access_parameters=None)
    make_conn("basic", host=demo.url, login="dev", password="dev-secret", extra=extra)
    hook = CustomTokenHook("basic")

    with pytest.raises(TokenRequestError) as caught:
        hook.get_token()

    assert "400" in str(caught.value)
    assert found_in(str(caught.value), [basic, basic.removeprefix("Basic "), "dev-secret"]) == []
    assert basic in redaction.known() and basic.removeprefix("Basic ") in redaction.known()


# -- a session API with a CSRF token --------------------------------------------------------------------


def test_calls_carry_the_csrf_token_of_their_session_with_one_login_and_a_refresh_changes_both(
    demo: DemoServer, notes: str
) -> None:
    hook = CustomTokenHook(notes)
    for text in ("a", "b", "c"):
        assert hook.run(NOTES, "POST", json={"text": text}).status_code == 201
    assert [n["text"] for n in hook.run(NOTES).json()["notes"]] == ["a", "b", "c"]
    session = hook.get_conn()
    assert session.get(f"{demo.url}{NOTES}").status_code == 200

    [first] = issued(demo)
    assert demo.stats()["token_requests"] == 1
    assert pairs(demo) == [first] * 5  # X-CSRF-Token: {csrf}, from request_parameters, on every call
    demo.revoke_all()

    assert hook.run(NOTES).json()["account"] == LOGIN  # 401, a new login, the call again

    [second] = issued(demo)
    assert demo.stats()["token_requests"] == 2 and demo.stats()["rejected"] == 1
    assert second[0] != first[0] and second[1] != first[1]  # both values changed, together
    assert pairs(demo)[-2:] == [first, second]
    assert hook.run(NOTES).status_code == 200 and pairs(demo)[-1] == second
    assert demo.stats()["token_requests"] == 2


def test_the_triggerer_sends_the_same_pair_and_refreshes_it_together(demo: DemoServer, notes: str) -> None:
    def call() -> dict[str, Any]:
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=notes, endpoint=NOTES))
        assert event["status"] == "success", event
        return event

    call()
    call()
    [first] = issued(demo)
    assert demo.stats()["token_requests"] == 1 and pairs(demo) == [first, first]
    demo.revoke_all()

    assert call()["response"]["status"] == 200

    [second] = issued(demo)
    assert second[0] != first[0] and second[1] != first[1]
    assert pairs(demo)[-2:] == [first, second] and demo.stats()["token_requests"] == 2


def test_the_demo_api_rejects_a_stale_pair(demo: DemoServer) -> None:
    def login() -> tuple[str, str]:
        answer = requests.post(f"{demo.url}{SESSION_LOGIN}", auth=(LOGIN, SECRET), timeout=5)
        assert answer.status_code == 200
        return answer.cookies["session"], answer.headers["X-CSRF-Token"]

    def status(session: str | None, csrf: str | None) -> int:
        headers = {"X-CSRF-Token": csrf} if csrf else {}
        cookies = {"session": session} if session else {}
        return requests.get(f"{demo.url}{NOTES}", headers=headers, cookies=cookies, timeout=5).status_code

    (s1, c1), (s2, c2) = login(), login()
    assert (status(s1, c1), status(s2, c2)) == (200, 200)
    assert (status(s2, c1), status(s1, c2), status(s2, None)) == (403, 403, 403)
    assert status(None, c2) == 401
    in_body = {"username": LOGIN, "password": SECRET}  # the login wants Basic client authentication
    assert requests.post(f"{demo.url}{SESSION_LOGIN}", data=in_body, timeout=5).status_code == 401


# -- expiry in a header ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["seconds", "epoch", "iso"])
def test_an_expiry_read_from_a_response_header_drives_the_refresh(
    demo: DemoServer, notes: str, style: str
) -> None:
    demo.set_lifetime(4)
    demo.set_expiry_style(style)
    hook = CustomTokenHook(notes)
    hook.run(NOTES)
    token = hook.source.get(hook._send_token_request)

    assert token.expiry_source.startswith("expiry location 'header:X-Session-Expires'")
    assert 2.5 < token.lifetime <= 4.5  # not access_lifetime (3600 s): the header's
    [first] = issued(demo)
    wait = token.refresh_at(hook.settings.refresh_margin) - time.time()  # half the lifetime: ~2 s
    hook.run(NOTES)
    assert demo.stats()["token_requests"] == 1
    time.sleep(max(0.0, wait) + 0.1)

    hook.run(NOTES)

    assert demo.stats()["token_requests"] == 2 and demo.stats()["rejected"] == 0
    second = issued(demo)[-1]
    assert second[0] != first[0] and second[1] != first[1] and pairs(demo)[-1] == second


# -- redaction ------------------------------------------------------------------------------------------


def test_outputs_reach_airflows_masker(demo: DemoServer, notes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_custom_token import compat

    redaction.reset()
    calls: list[str] = []
    real = compat.mask_secret

    def record(secret: str) -> None:
        calls.append(secret)
        real(secret)

    monkeypatch.setattr(compat, "mask_secret", record)

    CustomTokenHook(notes).run(NOTES)

    [(session, csrf)] = issued(demo)
    assert {session, csrf, f"session={session}"} <= set(calls)


@pytest.mark.usefixtures("task_runner_off")
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_the_csrf_token_never_reaches_xcom_or_logs(
    demo: DemoServer,
    notes: str,
    deferrable: bool,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.servers.test_operators import execute

    op = CustomTokenHttpOperator(
        task_id="echo",
        custom_token_conn_id=notes,
        endpoint=ECHO,
        log_response=True,
        deferrable=deferrable,
        response_filter=lambda response: {
            "headers": {k: response.json()["headers"].get(k) for k in ("Cookie", "X-CSRF-Token")},
            "text": response.text,
        },
    )

    with caplog.at_level("DEBUG"):
        result = execute(op, deferrable)

    assert result["headers"] == {"Cookie": "***", "X-CSRF-Token": "***"}
    [(session, csrf)] = issued(demo)
    assert pairs(demo)[-1] == (session, csrf)  # the API did get them
    assert found_in(json.dumps(result), secrets_of(demo)) == []
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err  # Airflow's task logger writes to stdout
    assert found_in(logs, secrets_of(demo)) == []
    assert '"X-CSRF-Token": "***"' in logs and '"Cookie": "***"' in logs  # the logged echo


def assert_clean(error: BaseException, secrets: list[str]) -> None:
    shown = "".join(traceback.format_exception(error))
    assert found_in(shown, secrets) == [], shown


def test_an_error_answer_that_echoes_the_csrf_token_is_redacted(demo: DemoServer, notes: str) -> None:
    with pytest.raises(RequestError) as caught:
        CustomTokenHook(notes).run(ECHO, params={"status": "500"})

    assert caught.value.status == 500 and "X-CSRF-Token" in str(caught.value)
    assert_clean(caught.value, secrets_of(demo))


def test_a_trigger_event_that_echoes_the_csrf_token_is_redacted(demo: DemoServer, notes: str) -> None:
    event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id=notes, endpoint=ECHO))

    assert event["status"] == "success"
    assert json.loads(event["response"]["text"])["headers"]["X-CSRF-Token"] == "***"
    assert found_in(json.dumps(event), secrets_of(demo)) == []


@pytest.mark.parametrize("via", ["hook", "trigger"])
def test_an_output_missing_from_the_token_answer_is_an_error_that_names_it(
    demo: DemoServer, make_conn: Callable[..., str], via: str
) -> None:
    extra = session_extra(access_outputs={"csrf": "header:X-CSRF-Token", "tenant": "data.tenant"})
    make_conn("missing", host=demo.url, login=LOGIN, password=SECRET, extra=extra)

    if via == "hook":
        with pytest.raises(TokenResponseError) as caught:
            CustomTokenHook("missing").get_token()
        message = str(caught.value)
        assert_clean(caught.value, secrets_of(demo))
    else:
        event = run_trigger(CustomTokenHttpTrigger(custom_token_conn_id="missing", endpoint=NOTES))
        assert event["status"] == "error"
        message = event["message"]

    assert "output 'tenant' at 'data.tenant' (access_outputs)" in message
    assert "not in the response; it holds an object with keys: user" in message
    assert found_in(message, secrets_of(demo)) == []
    assert demo.stats()["token_requests"] == 1  # not retried: the answer will not change
    assert demo.stats()["api_requests"] == 0


def test_test_connection_shows_neither_value(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    extra = session_extra(test_endpoint=ECHO)
    make_conn("tested", host=demo.url, login=LOGIN, password=SECRET, extra=extra)

    ok, message = CustomTokenHook("tested").test_connection()

    assert ok, message
    assert "answered 200" in message and found_in(message, secrets_of(demo)) == []


def test_an_unknown_placeholder_in_request_parameters_fails_before_any_request(
    demo: DemoServer, make_conn: Callable[..., str]
) -> None:
    extra = session_extra(request_parameters={"header": {"X-CSRF-Token": "{csfr}"}, "url": {"s": "{csrf}"}})
    make_conn("typo", host=demo.url, login=LOGIN, password=SECRET, extra=extra)

    with pytest.raises(ConfigurationError) as caught:
        CustomTokenHook("typo").run(NOTES)

    assert caught.value.problems == [
        "request_parameters.X-CSRF-Token: placeholder {csfr} has no value; parameters available: login, "
        "password, redirectUri; outputs available: csrf"
    ]
    assert demo.stats()["token_requests"] == 0 and demo.stats()["api_requests"] == 0


# -- caches ---------------------------------------------------------------------------------------------


def test_outputs_are_cached_with_the_token_encrypted_in_the_host_cache(
    demo: DemoServer, notes: str, isolated_cache: Any
) -> None:
    CustomTokenHook(notes).run(NOTES)
    [(session, csrf)] = issued(demo)
    files = list(isolated_cache.glob("*.token"))
    assert files and all(found_in(f.read_bytes().decode("latin-1"), [session, csrf]) == [] for f in files)
    PROCESS_CACHE.clear()  # another process of this host

    hook = CustomTokenHook(notes)
    hook.run(NOTES)

    assert demo.stats()["token_requests"] == 1 and pairs(demo) == [(session, csrf)] * 2
    assert hook.source.store is not None
    stored = hook.source.store.read(hook.account.cache_key)
    assert stored is not None and stored.outputs == {"csrf": csrf}


def test_a_cached_token_without_the_outputs_is_replaced(demo: DemoServer, notes: str) -> None:
    """An entry an older version wrote (no outputs): the account cannot use it, and fetches once."""
    hook = CustomTokenHook(notes)
    store = hook.source.store
    assert store is not None
    old = {
        "v": "tok_written_by_an_older_version",
        "exp": time.time() + 3600,
        "at": time.time(),
        "k": hook.account.cache_key,
    }
    store.token_path(hook.account.cache_key).write_bytes(store.cipher.encrypt(json.dumps(old).encode()))

    assert hook.run(NOTES).status_code == 200

    [pair] = issued(demo)
    assert demo.stats()["token_requests"] == 1 and pairs(demo) == [pair]
    stored = store.read(hook.account.cache_key)
    assert stored is not None and stored.value == pair[0] and stored.outputs == {"csrf": pair[1]}


def test_the_cache_key_depends_on_the_outputs(demo: DemoServer, make_conn: Callable[..., str]) -> None:
    """The same token request read another way is another cache entry."""
    for conn_id, name in (("one", "csrf"), ("two", "xsrf"), ("none", None)):
        extra = session_extra(
            access_outputs={name: "header:X-CSRF-Token"} if name else None,
            request_parameters={"header": {"X-CSRF-Token": f"{{{name}}}"}} if name else None,
        )
        make_conn(conn_id, host=demo.url, login=LOGIN, password=SECRET, extra=extra)

    accounts = [CustomTokenHook(c).account for c in ("one", "two", "none")]

    assert len({account.cache_key for account in accounts}) == 3


class _TwoTokens(Handler):
    """A token endpoint that answers an access token and an id token at once, counting its requests."""

    def do_POST(self) -> None:
        self.read_body()
        self.server.state.append(1)
        number = len(self.server.state)
        self.answer_json(
            200,
            {
                "access_token": f"tok_access_{number:08d}",
                "id_token": f"tok_id_{number:08d}",
                "expires_in": 3600,
            },
        )


@pytest.mark.parametrize(
    "differs",
    [
        {"access_response_path": "id_token"},  # the token location
        {"access_expiry_path": "no.such.expiry", "access_lifetime": 120},  # the expiry location, lifetime
        {"access_lifetime": 120},  # the lifetime alone
        {"access_outputs": {"id": "id_token"}},  # the outputs
    ],
    ids=["token location", "expiry location", "lifetime", "outputs"],
)
def test_connections_that_read_the_answer_differently_do_not_share_a_cache_entry(
    make_conn: Callable[..., str], differs: dict[str, Any]
) -> None:
    """Same token request, read another way: another cache entry (0.2 handed the first one's token)."""
    requests_seen: list[int] = []
    with Serving(_TwoTokens, requests_seen) as server:
        base = {
            "integration_key": "twotokens",
            "access_endpoint": f"{server.url}/token",
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            "access_response_path": "access_token",
            "access_expiry_path": "expires_in",
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
        }
        make_conn("first", host=server.url, login="client-one", password="cli-secret-9", extra=base)
        make_conn(
            "second", host=server.url, login="client-one", password="cli-secret-9", extra={**base, **differs}
        )
        first, second = CustomTokenHook("first"), CustomTokenHook("second")

        assert first.account.cache_key != second.account.cache_key
        assert first.get_token() == "tok_access_00000001"
        token = second.get_token()
        assert len(requests_seen) == 2  # the second connection requested its own
        expected = "tok_id_00000002" if "access_response_path" in differs else "tok_access_00000002"
        assert token == expected
        PROCESS_CACHE.clear()  # another process of the host: each reads its own entry
        assert (CustomTokenHook("first").get_token(), CustomTokenHook("second").get_token()) == (
            "tok_access_00000001",
            expected,
        )
        assert len(requests_seen) == 2


# -- the shared cache (Redis) ---------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from airflow_custom_token.cache import shared_conn
    from tests.cluster import SHARED_CONN_ID, SHARED_ENV, RedisServer

    if not RedisServer.available():
        pytest.skip("redis-server is not installed: run scripts/install-redis")
    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}", server.connection())
        monkeypatch.setenv(SHARED_ENV, SHARED_CONN_ID)
        shared_conn.reset()
        yield server
        shared_conn.reset()


def test_outputs_travel_through_the_shared_cache_encrypted(
    demo: DemoServer, notes: str, redis: Any, isolated_cache: Any
) -> None:
    CustomTokenHook(notes).run(NOTES)
    [(session, csrf)] = issued(demo)
    assert found_in(repr(redis.scan()), [session, csrf]) == []
    PROCESS_CACHE.clear()  # another host: its own process and host caches
    for path in isolated_cache.glob("*.token"):
        path.unlink()

    CustomTokenHook(notes).run(NOTES)

    assert demo.stats()["token_requests"] == 1 and pairs(demo) == [(session, csrf)] * 2


def test_a_shared_entry_without_the_outputs_is_replaced(demo: DemoServer, notes: str, redis: Any) -> None:
    from airflow_custom_token.cache.redis_client import Entry

    hook = CustomTokenHook(notes)
    shared = hook.source.shared()
    assert shared is not None
    old = Token("tok_written_by_an_older_version", time.time() + 3600, time.time())
    key = hook.account.cache_key
    redis.client().set(shared.name(key), shared.encode(key, old), px=3_600_000)

    assert hook.run(NOTES).status_code == 200

    [pair] = issued(demo)
    assert demo.stats()["token_requests"] == 1 and pairs(demo) == [pair]
    stored = shared.decode(key, Entry(redis.client().get(shared.name(key)), 3_600_000))
    assert stored is not None and stored.outputs == {"csrf": pair[1]}
