"""Refresh tokens (issue 20), against the demo API's rotating endpoint (`/oauth2/v1/rotating`).

That endpoint answers an access token with a single-use refresh token; a refresh request spends the one it
is sent and answers a new pair; a refresh token sent twice is refused (400 `invalid_grant`) and its whole
family revoked, as OAuth servers with reuse detection do. Its counters say how many refreshes were made,
refused, and refused as a reuse.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_custom_token import redaction
from airflow_custom_token.cache import PROCESS_CACHE
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.demo.rotation import REFRESH_LIFETIME, ROTATING
from airflow_custom_token.errors import ConfigurationError, TokenRequestError
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.renewal import RefreshRejected
from tests.conftest import demo_extra

pytestmark = pytest.mark.timeout(120)


def rotating_extra(demo: DemoServer, **overrides: Any) -> dict[str, Any]:
    """Client credentials for the first token, then refresh tokens read from `refresh_token`."""
    settings: dict[str, Any] = {
        "integration_key": "rotating",
        "access_endpoint": f"{demo.url}{ROTATING}",
        "access_parameters": {
            "grant_type": "client_credentials",
            "client_id": "{login}",
            "client_secret": "{password}",
        },
        "refresh_path": "refresh_token",
    }
    return demo_extra(demo, **{**settings, **overrides})


@pytest.fixture
def rotating(demo: DemoServer, make_conn: Callable[..., str]) -> str:
    return make_conn(
        "rotating", host=demo.url, login="dev", password="dev-secret", extra=rotating_extra(demo)
    )


def sent_grants(demo: DemoServer) -> list[str]:
    return [entry["form"]["grant_type"] for entry in demo.token_log if entry["path"] == ROTATING]


def sent_refresh_tokens(demo: DemoServer) -> list[str]:
    return [
        e["form"]["refresh_token"]
        for e in demo.token_log
        if e["path"] == ROTATING and e["form"].get("refresh_token")
    ]


def expire_access_token(hook: CustomTokenHook) -> None:
    """Make the cached access token expire now in every tier (its refresh token kept), as time would."""
    hook.source.discard(None)


def test_expiry_renews_with_the_refresh_token_and_keeps_the_rotated_one(demo, rotating):
    hook = CustomTokenHook(rotating)
    first = hook.get_token()
    assert sent_grants(demo) == ["client_credentials"]
    for _ in range(3):
        expire_access_token(hook)
        assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    assert sent_grants(demo) == ["client_credentials"] + ["refresh_token"] * 3
    refreshes = sent_refresh_tokens(demo)
    assert len(set(refreshes)) == 3, "each refresh sends the refresh token the one before answered"
    stats = demo.stats()
    assert (stats["refreshes"], stats["refreshes_rejected"]) == (3, 0)
    assert hook.get_token() != first


def test_refresh_on_status_discards_the_access_token_only(demo, rotating):
    hook = CustomTokenHook(rotating)
    assert hook.run("/api/v1/whoami").status_code == 200
    demo.revoke_access()  # the API forgets the access token; the refresh token stays valid
    assert hook.run("/api/v1/whoami").status_code == 200  # a 401, then a refresh, then 200
    assert sent_grants(demo) == ["client_credentials", "refresh_token"]
    assert demo.stats()["refreshes_rejected"] == 0


def test_rejected_refresh_token_falls_back_to_the_token_request(demo, rotating, caplog):
    hook = CustomTokenHook(rotating)
    hook.get_token()
    demo.revoke_all()  # the server forgets every token and refresh token (a revoked consent)
    expire_access_token(hook)
    with caplog.at_level(logging.WARNING):
        assert hook.run("/api/v1/whoami").status_code == 200
    assert sent_grants(demo) == ["client_credentials", "refresh_token", "client_credentials"]
    assert "refresh request of" in caplog.text and "was refused (400)" in caplog.text
    for secret in sent_refresh_tokens(demo):
        assert secret not in caplog.text


def test_seed_gets_the_first_token_and_a_rejected_one_names_the_field_to_reseed(demo, make_conn, caplog):
    seed = demo.consent("dev")
    extra = rotating_extra(demo, access_parameters=None, access_auth="basic", initial_refresh_token=seed)
    conn = make_conn("seeded", host=demo.url, login="dev", password="dev-secret", extra=extra)
    hook = CustomTokenHook(conn)
    assert hook.run("/api/v1/whoami").json()["account"] == "dev"
    assert sent_grants(demo) == ["refresh_token"] and sent_refresh_tokens(demo) == [seed]
    assert seed not in redaction.redact_string(f"x {seed} y")

    demo.revoke_all()  # the consent is withdrawn: the stored refresh token is refused
    expire_access_token(hook)
    with pytest.raises(RefreshRejected) as caught:
        hook.run("/api/v1/whoami")
    message = str(caught.value)
    assert "the refresh token was rejected" in message and "initial_refresh_token" in message
    assert caught.value.status == 400
    for secret in [seed, *sent_refresh_tokens(demo)]:
        assert secret not in message and secret not in caplog.text
    assert isinstance(caught.value, TokenRequestError)

    # the rejected refresh token is gone from the caches: a new seed is what the next call uses
    new_seed = demo.consent("dev")
    extra["initial_refresh_token"] = new_seed
    conn = make_conn("seeded", host=demo.url, login="dev", password="dev-secret", extra=extra)
    assert CustomTokenHook(conn).run("/api/v1/whoami").status_code == 200
    assert sent_refresh_tokens(demo)[-1] == new_seed


def test_seed_without_refresh_path_is_a_configuration_error(demo, make_conn):
    extra = demo_extra(demo, initial_refresh_token="rt_secret_value_123")
    conn = make_conn("bad", host=demo.url, login="dev", password="dev-secret", extra=extra)
    with pytest.raises(ConfigurationError) as caught:
        CustomTokenHook(conn).account
    assert "initial_refresh_token: expected refresh_path too" in str(caught.value)
    assert "rt_secret_value_123" not in str(caught.value)


def test_refresh_parameters_without_the_placeholder_are_refused(demo, make_conn):
    extra = rotating_extra(demo, refresh_parameters={"grant_type": "refresh_token"})
    conn = make_conn("bad", host=demo.url, login="dev", password="dev-secret", extra=extra)
    with pytest.raises(ConfigurationError) as caught:
        CustomTokenHook(conn).account
    assert "refresh_parameters: expected {refresh_token} in a value" in str(caught.value)


def test_refresh_token_lives_in_the_host_cache_encrypted(demo, rotating, isolated_cache):
    hook = CustomTokenHook(rotating)
    hook.get_token()
    stored = PROCESS_CACHE.peek(hook.source.key, 0)
    assert stored is not None and stored.refresh is not None
    files = list(isolated_cache.rglob("*.token"))
    assert len(files) == 1, "the host cache holds the entry"
    raw = files[0].read_bytes()
    assert stored.refresh.encode() not in raw and stored.value.encode() not in raw  # Fernet-encrypted
    hook.source.discard(None)  # an invalidation: the access token goes, the refresh token stays
    PROCESS_CACHE.clear()  # another process of this host: only the file is left
    assert CustomTokenHook(rotating).run("/api/v1/whoami").status_code == 200
    assert sent_grants(demo) == ["client_credentials", "refresh_token"]
    assert sent_refresh_tokens(demo) == [stored.refresh]


def test_answer_states_the_refresh_tokens_own_lifetime(demo, rotating):
    hook = CustomTokenHook(rotating)
    hook.get_token()
    token = PROCESS_CACHE.peek(hook.source.key, 0)
    assert token is not None and token.refresh_expires_at is not None
    assert abs(token.refresh_expires_at - (time.time() + REFRESH_LIFETIME)) < 30


def test_deferrable_path_renews_with_the_refresh_token(demo, rotating):
    from airflow_custom_token.aio import AsyncCustomTokenClient

    hook = CustomTokenHook(rotating)
    hook.get_token()
    expire_access_token(hook)

    async def call() -> int:
        async with AsyncCustomTokenClient(hook.source) as client:
            response = await client.request("GET", "/api/v1/whoami")
            return response.status

    assert asyncio.run(call()) == 200
    assert sent_grants(demo) == ["client_credentials", "refresh_token"]


def test_four_threads_share_one_refresh_per_lifetime(demo, rotating):
    demo.set_lifetime(2)  # refreshed at half its lifetime: every second
    hook = CustomTokenHook(rotating)
    errors: list[str] = []
    end = time.time() + 4

    def work() -> None:
        own = CustomTokenHook(rotating)
        while time.time() < end:
            try:
                own.run("/api/v1/whoami")
            except Exception as exc:  # collected and asserted below
                errors.append(repr(exc))
            time.sleep(0.01)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = demo.stats()
    assert errors == []
    assert stats["refreshes_rejected"] == 0 and stats["refresh_reuse"] == 0
    assert 2 <= stats["refreshes"] <= 5, stats
    assert hook.account.refresh is not None
