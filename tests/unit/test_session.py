"""`AccountSession` prepares a plain request itself (issue #18: per-request cost): what it makes must be
exactly what requests' own `Session.prepare_request` makes of the same request."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_custom_token.auth import CustomTokenAuth
from airflow_custom_token.session import AccountSession
from tests.unit.test_account import EXTRA, HOST

PLAIN = [
    {"method": "GET", "url": f"{HOST}/api/v1/whoami"},
    {"method": "get", "url": f"{HOST}/api/v1/reports/a b/ü?x=1&y=%2F", "headers": {"X-Trace": "t1"}},
    {"method": "GET", "url": f"{HOST}/api", "headers": {"Accept": None, "User-Agent": "mine/1.0"}},
    {"method": "POST", "url": f"{HOST}/api/items", "json": {"name": "ä", "n": [1, 2]}},
    {"method": "POST", "url": f"{HOST}/api/form", "data": {"a": "1 2", "b": ["x", "y"]}},
    {"method": "PUT", "url": f"{HOST}/api/raw", "data": b"\x00\x01bytes", "headers": {"Content-Type": "x/y"}},
    {"method": "PATCH", "url": f"{HOST}/api/text", "data": "plain text"},
    {"method": "DELETE", "url": "https://other.example.org/not/ours"},
]


def prepared_both_ways(session: AccountSession, **request: Any) -> tuple[Any, Any]:
    ours = session.prepare_request(requests.Request(**request))
    theirs = requests.Session()
    theirs.trust_env = False
    return ours, theirs.prepare_request(requests.Request(**request))


@pytest.mark.parametrize("request_args", PLAIN, ids=[f"{r['method']} {r['url'][-18:]}" for r in PLAIN])
def test_a_plain_request_is_prepared_as_requests_prepares_it(request_args: dict[str, Any]) -> None:
    session = AccountSession(CustomTokenAuth.from_values(HOST, EXTRA, login="dev", password="dev-secret"))
    for _ in range(2):  # the second time from what the session remembered (URL, valid headers)
        ours, theirs = prepared_both_ways(session, **request_args)

        assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
        assert dict(ours.headers) == dict(theirs.headers)
        assert "Authorization" not in ours.headers  # the rules inject the token when the session sends it
    assert request_args["url"] in session._prepared_urls  # prepared by the session itself, not by requests


def test_a_header_value_requests_refuses_is_refused_as_requests_refuses_it() -> None:
    session = AccountSession(CustomTokenAuth.from_values(HOST, EXTRA, login="dev", password="dev-secret"))
    bad = {"method": "GET", "url": f"{HOST}/api", "headers": {"X-Bad": "a\r\nInjected: 1"}}

    with pytest.raises(requests.exceptions.InvalidHeader) as ours:
        session.prepare_request(requests.Request(**bad))
    with pytest.raises(requests.exceptions.InvalidHeader) as theirs:
        requests.Session().prepare_request(requests.Request(**bad))
    assert str(ours.value) == str(theirs.value)
