"""Airflow's secrets masker over many token refreshes (issue 15, item 10), against the demo API.

Airflow's masker compiles one regex of every value it holds, again on each new one: told every token a
long-running process refreshes, each registration costs more than the one before, and in the triggerer
that compile ran on the event loop. Now each refresh supersedes the account's previous token, only the
last `redaction.MASKER_OLD_TOKENS` superseded tokens stay in the masker, the live one always does, and
async code registers in a worker thread while the loop keeps running. No timing is asserted: what
stays registered, and on which thread the masker's regex is compiled.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_custom_token import compat, redaction
from airflow_custom_token.aio import AsyncCustomTokenClient
from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.demo import DemoServer
from airflow_custom_token.hooks.custom_token import CustomTokenHook
from airflow_custom_token.token import Token
from tests.airflow_names import redact as airflow_redact

pytestmark = pytest.mark.timeout(120)

REFRESHES = 3 * redaction.MASKER_OLD_TOKENS + 8


@pytest.fixture(autouse=True)
def fresh_registry() -> None:
    """As in a fresh process: no secret known, no token registered (tests/conftest.py's
    `isolated_masking` does it for every test; said here because these tests count on it)."""
    redaction.reset()


@pytest.fixture
def masker() -> Iterator[Any]:
    found = compat.local_masker()
    assert found is not None, "this release's masker is not the one compat.update_masker knows"
    yield found


def in_masker(masker: Any, value: str) -> bool:
    return re.escape(value) in masker.patterns


def refresh_sync(hook: CustomTokenHook, count: int) -> list[Token]:
    """`count` token refreshes through the hook's token source: fetch, then discard (as after a 401)."""
    auth = CustomTokenAuth(hook.source)
    tokens = []
    for _ in range(count):
        token = auth.get_token()
        tokens.append(token)
        hook.source.discard(token)
    return tokens


async def refresh_async(hook: CustomTokenHook, count: int) -> list[Token]:
    async with AsyncCustomTokenClient(hook.source) as client:
        tokens = []
        for _ in range(count):
            token = await hook.source.aget(client._send_token)
            tokens.append(token)
            await hook.source.adiscard(token)
        tokens.append(await hook.source.aget(client._send_token))  # the live one
        return tokens


def assert_bounded(masker: Any, tokens: list[Token], live: Token) -> None:
    values = [t.value for t in tokens]
    assert len(set(values)) == len(values), "the demo API issued a token twice"
    registered = [v for v in values if in_masker(masker, v)]
    assert len(registered) <= redaction.MASKER_OLD_TOKENS + 1, len(registered)
    assert values[0] not in registered and values[len(values) // 2] not in registered  # retired
    # the live token, its injected form, and the token it replaced are still masked by Airflow
    # (the process-wide masker may hold an ordinary word such as "header" from earlier tests: the
    # separator between the two forms is not what this checks)
    redacted = airflow_redact(f"live {live.value}; header Bearer {live.value}")
    assert live.value not in redacted
    assert re.fullmatch(r"live \*\*\*; (header|\*\*\*) \*\*\*", redacted), redacted
    previous = values[-2]
    assert airflow_redact(f"previous {previous}") == "previous ***"
    # the account's client secret is never retired
    assert airflow_redact("client_secret=dev-secret") == "client_secret=***"
    # the provider's own redaction still knows every token it saw (bounded apart, at 4096)
    assert redaction.redact_string(f"old {values[0]}") == "old ***"
    assert len(redaction.known()) <= redaction._MAX_KNOWN


def test_sync_refreshes_keep_the_masker_bounded(demo: DemoServer, acme: str, masker: Any) -> None:
    hook = CustomTokenHook(acme)
    before = len(masker.patterns)

    tokens = refresh_sync(hook, REFRESHES)
    live = CustomTokenAuth(hook.source).get_token()

    assert demo.stats()["token_requests"] == REFRESHES + 1
    assert_bounded(masker, [*tokens, live], live)
    forms_per_token = len(redaction.masker_forms([live.value, "Bearer " + live.value]))
    assert len(masker.patterns) <= before + (redaction.MASKER_OLD_TOKENS + 1) * forms_per_token + 4
    assert redaction.masker_state()["superseded_kept"] <= redaction.MASKER_OLD_TOKENS


def test_async_refreshes_keep_the_masker_bounded(demo: DemoServer, acme: str, masker: Any) -> None:
    hook = CustomTokenHook(acme)

    tokens = asyncio.run(refresh_async(hook, REFRESHES))

    assert demo.stats()["token_requests"] == REFRESHES + 1
    assert_bounded(masker, tokens, tokens[-1])


def test_two_accounts_keep_their_live_tokens(
    demo: DemoServer, acme: str, make_conn: Callable[..., str], masker: Any
) -> None:
    """One account refreshing many times never retires another account's live token."""
    from tests.conftest import demo_extra

    other = make_conn("acme_qa", host=demo.url, login="qa", password="qa-secret", extra=demo_extra(demo))
    quiet = CustomTokenAuth(CustomTokenHook(other).source).get_token()

    refresh_sync(CustomTokenHook(acme), REFRESHES)

    assert in_masker(masker, quiet.value)
    assert airflow_redact(f"qa token {quiet.value}") == "qa token ***"


def test_a_token_that_comes_back_is_masked_again(masker: Any) -> None:
    """A server may answer a refresh with a token it issued before: it is live, so masked, again."""
    first = "comeback-token-0001"
    redaction.register_token("slot", first, [first])
    for n in range(redaction.MASKER_OLD_TOKENS + 2):
        redaction.register_token("slot", f"other-token-{n:04d}", [f"other-token-{n:04d}"])
    assert not in_masker(masker, first)

    redaction.register_token("slot", first, [first])

    assert in_masker(masker, first)
    assert airflow_redact(f"token {first}") == "token ***"


def test_async_registration_runs_off_the_event_loop(
    demo: DemoServer, acme: str, masker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The masker's regex is compiled in a worker thread while the event loop keeps running.

    The probe: the masker update waits (in its thread) until a coroutine of the same loop has run. Were
    the update on the loop, that coroutine could not run and the wait would time out.
    """
    hook = CustomTokenHook(acme)
    assert hook.source.account  # the account built (its secrets registered) before the spies
    updates: list[tuple[int, bool]] = []  # (thread, did the loop run meanwhile)
    grew_on: list[int] = []  # threads on which Airflow's own add_mask grew the masker
    real_update = compat.update_masker
    real_add_mask = masker.add_mask
    started, loop_ran = threading.Event(), threading.Event()

    def update(add: Any, retire: Any = ()) -> bool:
        started.set()
        updates.append((threading.get_ident(), loop_ran.wait(10)))
        return real_update(add, retire)

    def add_mask(secret: Any, name: str | None = None) -> None:
        size = len(masker.patterns)
        real_add_mask(secret, name)
        if len(masker.patterns) != size:
            grew_on.append(threading.get_ident())

    monkeypatch.setattr(compat, "update_masker", update)
    masker.add_mask = add_mask  # what `amask_secret` calls: Airflow's own add_mask, on the loop

    async def main() -> tuple[int, list[Token]]:
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                if started.is_set():
                    loop_ran.set()
                await asyncio.sleep(0.001)

        probing = asyncio.create_task(probe())
        try:
            tokens = await refresh_async(hook, 3)
        finally:
            stop.set()
            await probing
        return threading.get_ident(), tokens

    try:
        loop_thread, tokens = asyncio.run(main())
    finally:
        del masker.add_mask

    assert loop_thread not in grew_on  # Airflow's add_mask (amask_secret) found every value there already
    assert updates, "the masker was not updated"
    assert all(thread != loop_thread for thread, _ in updates)
    assert all(ran for _, ran in updates), "the event loop did not run while the masker was updated"
    live = tokens[-1].value
    assert airflow_redact(f"token {live}") == "token ***"


def test_triggers_sharing_a_token_register_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand triggers that got the same token at once share one registration (one worker thread)."""
    calls: list[str] = []
    real = redaction._register_token_locally

    def counted(*args: Any) -> Any:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(redaction, "_register_token_locally", counted)
    token = "shared-by-many-triggers-0001"

    async def many() -> None:
        await asyncio.gather(*(redaction.aregister_token("slot", token, [token]) for _ in range(200)))

    asyncio.run(many())

    assert calls == [token]
    assert airflow_redact(f"token {token}") == "token ***"


def test_triggers_sharing_an_account_register_its_secrets_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The async hooks of one account (one per trigger) register its password from the loop: once."""
    calls: list[tuple[str, ...]] = []
    real = redaction._register_locally

    def counted(secrets: tuple[str, ...]) -> Any:
        calls.append(secrets)
        return real(secrets)

    monkeypatch.setattr(redaction, "_register_locally", counted)
    secret = "account-password-shared-0001"

    async def many() -> None:
        await asyncio.gather(*(redaction.aregister(secret) for _ in range(200)))
        await redaction.aregister(secret)  # known by now: no worker thread at all

    asyncio.run(many())

    assert calls == [(secret,)]
    assert airflow_redact(f"password {secret}") == "password ***"
