"""The token cache: one token request per lifetime across threads and processes, expiry from every
source, refresh before expiry and on 401, and the encrypted host cache on disk."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.errors import RequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from tests.conftest import demo_extra


def test_sixteen_threads_one_token_request(demo, acme):
    hook = CustomTokenHook("acme")
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(20):
                assert hook.run("/api/v1/whoami").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert demo.stats()["authenticated"] == 320
    assert demo.stats()["token_requests"] == 1


def test_hooks_in_one_process_share_the_token(demo, acme):
    tokens = {CustomTokenHook("acme").get_token() for _ in range(5)}
    assert len(tokens) == 1
    assert demo.stats()["token_requests"] == 1


WORKER = textwrap.dedent(
    """
    import sys, time
    from airflow_custom_token.hooks.custom_token import CustomTokenHook
    start = float(sys.argv[1])
    hook = CustomTokenHook("acme")
    time.sleep(max(0.0, start - time.time()))
    for _ in range(10):
        hook.run("/api/v1/whoami")
    print("ok")
    """
)


def _env(acme_json: str, cache_dir, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update({"AIRFLOW_CONN_ACME": acme_json, "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(cache_dir)})
    env.update(extra)
    return env


def test_eight_processes_one_token_request(demo, acme, isolated_cache):
    env = _env(os.environ["AIRFLOW_CONN_ACME"], isolated_cache)
    start = time.time() + 6  # all interpreters import Airflow first, then start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(start)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outputs
    assert demo.stats()["authenticated"] == 80
    assert demo.stats()["token_requests"] == 1


# -- expiry from each source ---------------------------------------------------------------------


@pytest.mark.parametrize("style", ["seconds", "string", "epoch", "iso", "jwt", "none"])
def test_expiry_from_each_source(demo, make_conn, style):
    demo.set_lifetime(1234)
    demo.set_expiry_style(style)
    make_conn(
        "acme", host=demo.url, login="dev", password="dev-secret", extra=demo_extra(demo, access_lifetime=777)
    )
    hook = CustomTokenHook("acme")
    hook.get_token()
    token = PROCESS_CACHE.peek(hook.account.cache_key, 0)
    assert token is not None
    expected = 777 if style == "none" else 1234
    assert abs(token.lifetime - expected) < 2, (style, token.lifetime, token.expiry_source)


def test_iso_expiry_is_a_date_time(demo, make_conn):
    make_conn("acme", host=demo.url, login="dev", password="dev-secret", extra=demo_extra(demo))
    demo.set_expiry_style("iso")
    hook = CustomTokenHook("acme")
    hook.get_token()
    token = PROCESS_CACHE.peek(hook.account.cache_key, 0)
    assert token is not None
    assert datetime.fromtimestamp(token.expires_at, UTC) > datetime.now(UTC)


def test_jwt_exp_claim_is_read(demo, make_conn):
    demo.set_expiry_style("jwt")
    demo.set_lifetime(600)
    make_conn("acme", host=demo.url, login="dev", password="dev-secret", extra=demo_extra(demo))
    hook = CustomTokenHook("acme")
    value = hook.get_token()
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[1] + "=="))
    token = PROCESS_CACHE.peek(hook.account.cache_key, 0)
    assert token is not None and token.expires_at == payload["exp"]
    assert token.expiry_source == "JWT exp claim"


class _StoppedClock:
    """The provider's clock (`time.time` of the caches and the token source), stopped: a test moves it
    forward instead of sleeping, so a loaded machine cannot make it flake. Everything else is `time`'s."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _StoppedClock:
    from airflow_custom_token import source
    from airflow_custom_token.cache import host, process

    stopped = _StoppedClock()
    for module in (process, host, source):
        monkeypatch.setattr(module, "time", stopped)
    return stopped


@pytest.fixture
def short_tokens(demo, make_conn):
    """`acme`, whose tokens the provider reads as `lifetime` seconds long (the demo keeps accepting them:
    what is tested is when the provider refreshes, not the server's clock)."""

    def define(lifetime: int) -> str:
        demo.set_expiry_style("none")
        extra = demo_extra(demo, access_lifetime=lifetime)
        return make_conn("acme", host=demo.url, login="dev", password="dev-secret", extra=extra)

    return define


def test_one_second_token_with_zero_margin_is_refreshed_after_expiry(demo, short_tokens, clock, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__REFRESH_MARGIN", "0")
    hook = CustomTokenHook(short_tokens(1))
    first = hook.get_token()
    clock.advance(0.9)
    assert hook.get_token() == first  # still valid
    clock.advance(0.2)  # past its expiry
    assert hook.run("/api/v1/whoami").status_code == 200
    second = hook.get_token()
    assert second != first
    assert demo.api_log[-1]["headers"]["Authorization"] == f"Bearer {second}"  # never the expired one
    assert demo.stats()["token_requests"] == 2
    assert demo.stats()["rejected"] == 0


def test_default_margin_refreshes_a_30_second_token_15_seconds_early(demo, acme):
    demo.set_lifetime(30)
    hook = CustomTokenHook("acme")
    hook.get_token()
    token = PROCESS_CACHE.peek(hook.account.cache_key, 60)
    assert token is not None
    assert token.refresh_at(60) == pytest.approx(token.expires_at - 15)
    assert PROCESS_CACHE.peek(hook.account.cache_key, 60, now=token.obtained_at + 14.9) is token
    assert PROCESS_CACHE.peek(hook.account.cache_key, 60, now=token.obtained_at + 15.1) is None


def test_short_token_is_refreshed_early(demo, short_tokens, clock):
    hook = CustomTokenHook(short_tokens(2))  # default margin 60 s, capped at half the lifetime: 1 s
    hook.run("/api/v1/whoami")
    first = hook.get_token()
    clock.advance(0.9)
    hook.run("/api/v1/whoami")
    assert hook.get_token() == first and demo.stats()["token_requests"] == 1
    clock.advance(0.2)  # past half its lifetime, before its expiry
    hook.run("/api/v1/whoami")
    assert hook.get_token() != first
    assert demo.stats()["token_requests"] == 2
    assert demo.stats()["rejected"] == 0


# -- refresh on status ------------------------------------------------------------------------


def test_revoked_token_refreshes_once_and_succeeds(demo, acme):
    hook = CustomTokenHook("acme")
    old = hook.get_token()
    demo.revoke_all()
    response = hook.run("/api/v1/whoami")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert hook.get_token() != old
    assert demo.stats()["token_requests"] == 2
    assert demo.stats()["rejected"] == 1


def test_revoked_token_refreshes_for_session_users_too(demo, acme):
    hook = CustomTokenHook("acme")
    session = hook.get_conn()
    session.get(f"{demo.url}/api/v1/whoami").raise_for_status()
    demo.revoke_all()
    assert session.get(f"{demo.url}/api/v1/whoami").status_code == 200
    assert demo.stats()["token_requests"] == 2


def test_token_never_accepted_fails_after_one_retry(demo, acme):
    demo.set_reject_all(True)
    hook = CustomTokenHook("acme")
    with pytest.raises(RequestError, match="401") as caught:
        hook.run("/api/v1/whoami")
    assert "after fetching a new token and retrying once" in str(caught.value)
    assert demo.stats()["token_requests"] == 2
    assert demo.stats()["api_requests"] == 2


def test_stream_body_is_not_resent_and_the_error_says_why(demo, acme):
    hook = CustomTokenHook("acme")
    hook.get_token()
    demo.revoke_all()
    with pytest.raises(RequestError, match="cannot be sent twice"):
        hook.run("/api/v1/echo", method="POST", data=(chunk for chunk in [b"a", b"b"]))
    assert demo.stats()["api_requests"] == 1
    hook.run("/api/v1/whoami")  # the next request uses a new token
    assert demo.stats()["token_requests"] == 2


def test_discard_keeps_a_token_that_another_caller_already_replaced(demo, acme):
    hook = CustomTokenHook("acme")
    hook.get_token()
    stale = PROCESS_CACHE.peek(hook.account.cache_key, 0)
    hook.invalidate_token()
    fresh_value = hook.get_token()
    hook.source.discard(stale)  # a late caller drops the token it used: the new one stays
    assert hook.get_token() == fresh_value
    assert demo.stats()["token_requests"] == 2


def test_invalidate_token_drops_both_caches(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    hook.get_token()
    assert list(isolated_cache.glob("*.token"))
    hook.invalidate_token()
    assert not list(isolated_cache.glob("*.token"))
    hook.get_token()
    assert demo.stats()["token_requests"] == 2


# -- the host cache on disk -------------------------------------------------------------------


def test_host_cache_files_are_private_and_encrypted(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    token = hook.get_token()
    files = [p for p in isolated_cache.rglob("*") if p.is_file()]
    assert any(p.suffix == ".token" for p in files)
    assert stat.S_IMODE(isolated_cache.stat().st_mode) == 0o700
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        data = path.read_bytes()
        assert token.encode() not in data and b"dev-secret" not in data
    grep = subprocess.run(["grep", "-rl", token, str(isolated_cache)], capture_output=True)
    assert grep.stdout == b""


def test_host_cache_serves_a_new_process(demo, acme, isolated_cache):
    hook = CustomTokenHook("acme")
    token = hook.get_token()
    PROCESS_CACHE.clear()  # as a new process would start
    assert CustomTokenHook("acme").get_token() == token
    assert demo.stats()["token_requests"] == 1


@pytest.mark.parametrize("damage", ["garbage", "truncate", "other-key", "empty"])
def test_unreadable_cache_file_is_replaced(demo, acme, isolated_cache, damage):
    hook = CustomTokenHook("acme")
    hook.get_token()
    [path] = isolated_cache.glob("*.token")
    blob = path.read_bytes()
    path.write_bytes(
        {
            "garbage": b"not a fernet token",
            "truncate": blob[: len(blob) // 2],
            "other-key": Fernet(Fernet.generate_key()).encrypt(b'{"v": "x", "exp": 9e9, "at": 0}'),
            "empty": b"",
        }[damage]
    )
    PROCESS_CACHE.clear()
    hook = CustomTokenHook("acme")
    assert hook.run("/api/v1/whoami").status_code == 200
    assert demo.stats()["token_requests"] == 2
    # Replaced by a file that Airflow's Fernet key reads, holding the new token, never in clear text.
    replaced = path.read_bytes()
    token = hook.get_token()
    assert token.encode() not in replaced
    stored = json.loads(Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode()).decrypt(replaced))
    assert token in json.dumps(stored)
    PROCESS_CACHE.clear()
    CustomTokenHook("acme").get_token()
    assert demo.stats()["token_requests"] == 2


def test_host_cache_off_without_fernet_key(demo, acme, isolated_cache):
    script = textwrap.dedent(
        """
        from airflow_custom_token.hooks.custom_token import CustomTokenHook
        hook = CustomTokenHook("acme")
        hook.run("/api/v1/whoami")
        hook.run("/api/v1/whoami")
        print("ok")
        """
    )
    env = _env(os.environ["AIRFLOW_CONN_ACME"], isolated_cache, AIRFLOW__CORE__FERNET_KEY="")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "host cache is off" in (done.stdout + done.stderr)
    assert not list(isolated_cache.glob("*.token")) if isolated_cache.exists() else True
    assert demo.stats()["token_requests"] == 1


def test_host_cache_can_be_turned_off(demo, acme, isolated_cache, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__HOST_CACHE", "False")
    CustomTokenHook("acme").get_token()
    assert not isolated_cache.exists() or not list(isolated_cache.glob("*.token"))
