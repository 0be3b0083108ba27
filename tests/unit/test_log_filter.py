"""The HTTP clients' log lines and Airflow's masker see every form of a secret (issue 15, item 6). No server:
records are logged the way urllib3 logs them."""

from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus

import pytest

from airflow_custom_token import redaction

TOKEN = "tk+5f0c1d2e/=="
SECRET = "cl+ient/secret=="


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh worker process: no secret known yet."""
    monkeypatch.setattr(redaction, "_known", {})


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
