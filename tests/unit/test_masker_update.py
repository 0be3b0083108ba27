"""`compat.update_masker` and the bounds of the provider's registries (issue 15, item 10). No server.

Airflow's masker (3.0-3.3) keeps a set of escaped values (`patterns`) and one regex of all of them
(`replacer`); it has no public way to forget one. `update_masker` adds many values with one compile and
removes only values it added itself, behind a version guard.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from airflow_custom_token import compat, redaction
from tests.airflow_names import redact as airflow_redact


@pytest.fixture(autouse=True)
def fresh_registry() -> None:
    """No secret known, no token registered, nothing of the provider's in the masker (tests/conftest.py's
    `isolated_masking` does it for every test; said here because these tests count on it)."""
    redaction.reset()


@pytest.fixture
def masker() -> Any:
    found = compat.local_masker()
    assert found is not None
    return found


#: In every value of `test_many_values_one_compile`: no token, secret or word of another test has it
#: (`§` is not ASCII, so no random token is), so a regex holds one copy per value of the test's own.
MARKER = "§manyvalues§"  # nothing `re.escape` changes


def test_many_values_one_compile(masker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[int] = []  # how many of the values each regex compiled holds
    real_compile = re.compile

    def counting(pattern: Any, flags: int = 0) -> Any:
        if isinstance(pattern, str) and MARKER in pattern:
            compiled.append(pattern.count(MARKER))
        return real_compile(pattern, flags)

    assert not [p for p in masker.patterns if MARKER in p]  # nothing left behind by another test
    monkeypatch.setattr(re, "compile", counting)  # the module compat compiles with
    values = [f"update-value-a{n}-{MARKER}" for n in range(1, 40)]

    assert compat.update_masker(values) is True

    assert [n for n in compiled if n > 1] == [39]  # one regex of everything, not one per value
    assert airflow_redact(f"a {values[0]} b {values[-1]} c") == "a *** b *** c"


def test_only_what_it_added_is_removed(masker: Any) -> None:
    """A value Airflow masks for its own reasons (a connection's password) stays masked."""
    compat.mask_secret("airflows-own-password-77e1")  # as Airflow's own lookup masks a password
    compat.update_masker(["airflows-own-password-77e1", "providers-token-77e1"])

    compat.update_masker([], retire=["airflows-own-password-77e1", "providers-token-77e1"])

    assert airflow_redact("providers-token-77e1") == "providers-token-77e1"
    assert airflow_redact("airflows-own-password-77e1") == "***"


def test_a_value_added_and_retired_at_once_stays(masker: Any) -> None:
    compat.update_masker(["both-ways-value-31aa"])

    compat.update_masker(["both-ways-value-31aa"], retire=["both-ways-value-31aa"])

    assert airflow_redact("both-ways-value-31aa") == "***"


def test_the_masker_is_left_alone_on_an_unknown_release(masker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another major release: `update_masker` does nothing, and registration falls back to
    `mask_secret`, value by value, as before."""
    monkeypatch.setattr(compat, "AIRFLOW_VERSION", (4, 0, 0))
    before = set(masker.patterns)

    assert compat.local_masker() is None and compat.masker_size() is None
    assert compat.update_masker(["unknown-release-value-5b2c"]) is False
    assert masker.patterns == before

    redaction.register_token("slot", "fallback-token-5b2c", ["fallback-token-5b2c"])
    assert airflow_redact("fallback-token-5b2c") == "***"  # masked by mask_secret


def test_the_masker_is_left_alone_when_its_shape_differs(
    masker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(masker, "patterns", list(masker.patterns))  # not the set update_masker knows

    assert compat.local_masker() is None
    assert compat.update_masker(["other-shape-value-9d0e"]) is False


def test_registering_the_live_token_again_changes_nothing(
    masker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    redaction.register_token("slot", "live-token-0c11", ["live-token-0c11", "Bearer live-token-0c11"])
    calls: list[Any] = []
    monkeypatch.setattr(compat, "update_masker", lambda *args: calls.append(args))
    monkeypatch.setattr(compat, "mask_secret", calls.append)

    for _ in range(5):
        redaction.register_token("slot", "live-token-0c11", ["live-token-0c11", "Bearer live-token-0c11"])

    assert calls == []


def test_known_stays_bounded_and_keeps_what_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's own registry: superseded tokens go first; live tokens and account secrets stay."""
    monkeypatch.setattr(redaction, "_MAX_KNOWN", 64)
    monkeypatch.setattr(compat, "update_masker", lambda *args: True)  # the masker's part is tested above
    monkeypatch.setattr(compat, "mask_secret", lambda secret: None)
    redaction.register("account-secret-4d4d")
    redaction.register_token("quiet", "quiet-token-4d4d", ["quiet-token-4d4d"])

    for n in range(300):
        redaction.register_token("busy", f"busy-token-{n:04d}", [f"busy-token-{n:04d}"])

    known = redaction.known()
    assert len(known) <= 64
    assert {"account-secret-4d4d", "quiet-token-4d4d", "busy-token-0299"} <= set(known)
    assert "busy-token-0000" not in known
    assert redaction.masker_state() == {"live_tokens": 2, "superseded_kept": redaction.MASKER_OLD_TOKENS}


def test_a_token_shared_by_two_slots_is_not_retired_while_one_holds_it(masker: Any) -> None:
    redaction.register_token("one", "shared-token-6e6e", ["shared-token-6e6e"])
    redaction.register_token("two", "shared-token-6e6e", ["shared-token-6e6e"])

    for n in range(redaction.MASKER_OLD_TOKENS + 3):
        redaction.register_token("one", f"one-token-{n:04d}", [f"one-token-{n:04d}"])

    assert re.escape("shared-token-6e6e") in masker.patterns
    assert re.escape("one-token-0000") not in masker.patterns


def test_airflow_masks_an_extra_whose_key_holds_token(masker: Any) -> None:
    """What Airflow's own connection lookup does (`Connection.extra_dejson` masks every extra whose key
    contains `token`): with the older UIs' `extra__custom_token__inject_as` it masks `header` itself.
    Not the provider's doing, and the next test must not see it (`test_the_next_test_does_not_see_it`)."""
    masker.add_mask({"extra__custom_token__inject_as": "isolation-probe-6a6a"})

    assert airflow_redact("isolation-probe-6a6a") == "***"


def test_the_next_test_does_not_see_it(masker: Any) -> None:
    """Runs after the test above (file order): tests/conftest.py's `isolated_masking` put the masker back."""
    assert airflow_redact("isolation-probe-6a6a") == "isolation-probe-6a6a"
    assert not [p for p in masker.patterns if "isolation" in p]
