"""The HTTP clients' log lines and Airflow's masker see every form of a secret (issue 15, item 6). No server:
records are logged the way urllib3 logs them."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from airflow_custom_token import redaction

TOKEN = "tk+5f0c1d2e/=="
SECRET = "cl+ient/secret=="


def log_request_line(url: str) -> None:
    """What urllib3's connection pool logs at DEBUG for each request (its format, its arguments)."""
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s', "http", "127.0.0.1", 8080, "GET", url, "HTTP/1.1", 200, 2
    )


def test_a_request_line_of_urllib3_is_masked_in_every_form(caplog: pytest.LogCaptureFixture) -> None:
    redaction.register(TOKEN, SECRET)
    caplog.set_level(logging.DEBUG, logger="urllib3")

    log_request_line(f"/token?client_id=dev&client_secret={quote_plus(SECRET)}")
    log_request_line(f"/api/{quote(TOKEN, safe='')}/items?tk={quote_plus(TOKEN)}&raw={TOKEN}")

    assert caplog.messages == [
        'http://127.0.0.1:8080 "GET /token?client_id=dev&client_secret=*** HTTP/1.1" 200 2',
        'http://127.0.0.1:8080 "GET /api/***/items?tk=***&raw=*** HTTP/1.1" 200 2',
    ]


def test_a_line_without_a_secret_is_left_as_it_was_logged(caplog: pytest.LogCaptureFixture) -> None:
    redaction.register(TOKEN)
    caplog.set_level(logging.DEBUG, logger="urllib3")

    log_request_line("/api/items?page=2")

    (record,) = caplog.records
    assert record.args == ("http", "127.0.0.1", 8080, "GET", "/api/items?page=2", "HTTP/1.1", 200, 2)


@pytest.mark.parametrize("name", redaction.HTTP_LOGGERS)
def test_the_filter_is_on_every_http_client_logger_once(name: str) -> None:
    for _ in range(3):
        redaction.register(f"{TOKEN}-{_}")

    assert logging.getLogger(name).filters.count(redaction._FILTER) == 1


def test_airflows_masker_is_told_every_form_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_custom_token import compat

    told: list[str] = []
    monkeypatch.setattr(compat, "mask_secret", told.append)

    redaction.register(TOKEN, "Bearer " + TOKEN, "plain-token-123")
    redaction.register(TOKEN)  # known already: not told again

    assert sorted(told) == sorted(
        {
            TOKEN,
            quote(TOKEN, safe=""),
            quote(TOKEN),
            quote_plus(TOKEN),
            *(TOKEN.replace("/", slash) for slash in ("\\/", "\\u002f", "\\u002F")),  # JSON-escaped
            "Bearer " + TOKEN,
            quote("Bearer " + TOKEN, safe=""),
            quote("Bearer " + TOKEN),
            quote_plus("Bearer " + TOKEN),
            *("Bearer " + TOKEN.replace("/", slash) for slash in ("\\/", "\\u002f", "\\u002F")),
            "plain-token-123",
        }
    )
    assert len(told) == len(set(told))


# -- escaped forms, short values, ordinary words (issue 19, items 9, 10, 15) ---------------------------------

COOKIE = "sess/AbCd+Gh=="  # as a session API sets it: `/`, `+` and `=`, all escaped by some JSON encoder


@pytest.mark.parametrize(
    "echoed",
    [
        "sess\\/AbCd+Gh==",  # PHP's json_encode, and many others
        "sess\\u002fAbCd+Gh==",
        "sess\\u002FAbCd\\u002BGh==",  # .NET's System.Text.Json escapes `+`
        "\\u0073\\u0065\\u0073\\u0073\\u002f\\u0041\\u0062\\u0043\\u0064\\u002b\\u0047\\u0068\\u003d\\u003d",
    ],
    ids=["slash", "u002f", "dotnet", "every-char"],
)
def test_a_json_escaped_echo_of_a_secret_is_redacted(echoed: str) -> None:
    redaction.register(COOKIE)
    answer = '{"you_sent": {"Cookie": "' + echoed + '"}, "page": 1}'

    assert redaction.redact_string(answer) == '{"you_sent": {"Cookie": "***"}, "page": 1}'
    assert redaction.redact({"text": answer}) == {"text": '{"you_sent": {"Cookie": "***"}, "page": 1}'}


def test_json_escapes_of_quotes_backslashes_and_non_ascii_are_redacted() -> None:
    secret = 'pä"ss\\wörd/1'
    redaction.register(secret)

    for text in (json.dumps({"p": secret}), json.dumps({"p": secret}, ensure_ascii=False)):
        assert redaction.redact_string(text) == '{"p": "***"}', text
    assert redaction.redact_string('{"p": "p\\u00E4\\"ss\\\\w\\u00f6rd\\/1"}') == '{"p": "***"}'


def test_airflows_masker_is_told_the_json_escaped_forms() -> None:
    from tests.airflow_names import redact as airflow_redact

    redaction.register(COOKIE)

    assert airflow_redact('{"Cookie": "sess\\/AbCd+Gh=="}') == '{"Cookie": "***"}'
    assert airflow_redact('{"Cookie": "sess\\u002fAbCd+Gh=="}') == '{"Cookie": "***"}'


def test_text_without_a_secret_keeps_its_escapes() -> None:
    redaction.register(COOKIE)
    text = '{"path": "\\/v1\\/items", "name": "caf\\u00e9", "quote": "\\"sess\\""}'

    assert redaction.redact_string(text) == text


def test_a_short_secret_is_redacted_as_a_whole_token_only() -> None:
    """Airflow's masker skips values under 5 characters; the provider's own redaction does not, but
    only where the value stands alone: a word that merely contains it is left as it is."""
    redaction.register("k9Z")
    text = 'csrf=k9Z&page=2 "k9Z" k9Z. \\u0022k9Z\\u0022 %22k9Z%22 | ak9Z k9Zx backk9Z'

    masked = 'csrf=***&page=2 "***" ***. \\u0022***\\u0022 %22***%22 | ak9Z k9Zx backk9Z'
    assert redaction.redact_string(text) == masked


def test_one_or_two_characters_are_not_kept() -> None:
    """They hide nothing, and as whole tokens they are everywhere: `/api/v2/`, `eu`, `1`."""
    redaction.register("v2", "1")

    assert redaction.known() == []
    assert redaction.redact_string("GET /api/v2/items?page=1") == "GET /api/v2/items?page=1"


def test_a_short_secret_is_not_sent_to_airflows_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_custom_token import compat

    told: list[str] = []
    monkeypatch.setattr(compat, "mask_secret", told.append)

    redaction.register("k9Z", "long-enough-secret-1b2c")

    assert told == ["long-enough-secret-1b2c"]
    assert "k9Z" in redaction.known()


@pytest.mark.parametrize("word", ["header", "url", "Authorization", "POST", "Bearer", "true"])
def test_an_ordinary_word_is_never_registered(word: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection field whose name sounds secret may hold a word of the provider's own vocabulary
    (Airflow masks every extra whose key contains `token`): registering it would mask the word in
    every log line and message."""
    from airflow_custom_token import compat
    from tests.airflow_names import redact as airflow_redact

    told: list[str] = []
    monkeypatch.setattr(compat, "mask_secret", told.append)

    redaction.register(word)
    redaction.register_token("slot", "live-token-8e8e", ["live-token-8e8e", word])

    assert word not in redaction.known() and word not in told
    assert redaction.redact_string(f"inject as {word}") == f"inject as {word}"
    assert airflow_redact(f"inject as {word}") == f"inject as {word}"


def test_reset_forgets_every_secret_and_takes_the_providers_masks_out() -> None:
    from tests.airflow_names import redact as airflow_redact

    redaction.register("account-secret-2f2f")
    redaction.register_token("slot", "live-token-2f2f", ["live-token-2f2f"])
    assert airflow_redact("live-token-2f2f account-secret-2f2f") == "*** ***"

    redaction.reset()

    assert redaction.known() == []
    assert redaction.masker_state() == {"live_tokens": 0, "superseded_kept": 0}
    assert redaction.redact_string("live-token-2f2f") == "live-token-2f2f"
    assert airflow_redact("live-token-2f2f account-secret-2f2f") == "live-token-2f2f account-secret-2f2f"
