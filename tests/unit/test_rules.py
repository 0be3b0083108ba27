"""The request rules (`rules.request_rules`), driven by hand: no server, no transport.

Each test plays the transport: it answers `GetToken` with a token, `Send` with a `Head` (or
throws a transport error), and checks what the rules ask for next.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_custom_token import rules
from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.errors import RequestError
from airflow_custom_token.retry import RetryPolicy
from airflow_custom_token.rules import (
    NOT_RESENT,
    ApiRequest,
    Discard,
    GetToken,
    Head,
    Result,
    Send,
    Wait,
)
from airflow_custom_token.token import Token

HOST = "https://api.example.test"
OTHER = "https://elsewhere.example.test"
TENANT = "tenant-5d1c9e"

INJECTIONS: dict[str, dict[str, Any]] = {
    "bearer": {"inject_as": "header", "inject_name": "Authorization", "inject_template": "Bearer {token}"},
    "url": {"inject_as": "url", "inject_name": "tk", "inject_template": "{token}"},
}


def make_account(injection: str = "url", **extra: Any) -> ConnectedAccount:
    fields = {
        "integration_key": "acme",
        "access_endpoint": f"{HOST}/oauth2/token",
        "access_verb": "POST",
        "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
        "request_parameters": {"header": {"X-Tenant": TENANT}, "url": {"tenant": TENANT}},
        **INJECTIONS[injection],
        **extra,
    }
    raw = RawConnection("acme", "custom_token", host=HOST, login="dev", password="pw-secret", extra=fields)
    return build_account([raw])


def token(value: str) -> Token:
    return Token(value=value, expires_at=2e9, obtained_at=1e9)


T1, T2, T3 = token("tok-one-111"), token("tok-two-222"), token("tok-three-333")


class Drive:
    """Plays the transport for one flow: holds the last command and, once done, the result."""

    def __init__(self, flow: rules.Rules) -> None:
        self.flow = flow
        self.result: Result | None = None
        self.command: rules.Command | None = next(flow)

    def send(self, value: Any = None) -> rules.Command | None:
        try:
            self.command = self.flow.send(value)
        except StopIteration as stop:
            self.result, self.command = stop.value, None
        return self.command

    def throw(self, error: BaseException) -> rules.Command | None:
        try:
            self.command = self.flow.throw(error)
        except StopIteration as stop:
            self.result, self.command = stop.value, None
        return self.command

    def request(self) -> ApiRequest:
        """The request of the current Send command."""
        assert isinstance(self.command, Send), self.command
        return self.command.request


def start(account: ConnectedAccount, request: ApiRequest, first: Token = T1, **kwargs: Any) -> Drive:
    """Start the flow and answer its first GetToken; the current command is then the first send."""
    drive = Drive(rules.request_rules(account, request, **kwargs))
    assert drive.command == GetToken()
    drive.send(first)
    assert isinstance(drive.command, Send)
    return drive


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def headers(request: ApiRequest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.headers:
        out.setdefault(name.lower(), []).append(value)
    return out


def get(path: str = "/api/items?page=2", **kwargs: Any) -> ApiRequest:
    return ApiRequest("GET", HOST + path, **kwargs)


# -- injection ------------------------------------------------------------------------------------------


def test_header_injection_adds_the_token_and_the_request_parameters() -> None:
    drive = start(make_account("bearer"), get())

    sent = drive.request()
    assert headers(sent)["authorization"] == [f"Bearer {T1.value}"]
    assert headers(sent)["x-tenant"] == [TENANT]
    assert query(sent.url) == {"page": ["2"], "tenant": [TENANT]}
    assert T1.value in sent.secrets and T1.value not in repr(sent)


def test_url_injection_adds_one_token_parameter_after_the_requests_own_query() -> None:
    drive = start(make_account("url"), get())

    sent = drive.request()
    assert sent.url == f"{HOST}/api/items?page=2&tenant={TENANT}&tk={T1.value}"
    assert "authorization" not in headers(sent)
    assert sent.describe() == f"GET {HOST}/api/items?page=2&tenant={TENANT}&tk=***"


def test_own_headers_win_over_request_parameters_but_not_over_the_token_header() -> None:
    request = get(headers=(("x-tenant", "mine"), ("Authorization", "Basic abc")))

    sent = start(make_account("bearer"), request).request()

    assert headers(sent)["x-tenant"] == ["mine"]
    assert headers(sent)["authorization"] == [f"Bearer {T1.value}"]


def test_a_request_to_another_origin_takes_no_token_and_is_left_as_it_is() -> None:
    request = ApiRequest("GET", f"{OTHER}/x?tk=theirs")
    drive = Drive(rules.request_rules(make_account("url"), request))

    assert drive.command == Send(request)  # no GetToken: nothing of the account is needed
    assert drive.request().secrets == ()
    assert not rules.concerns(make_account("url"), request.url)


def test_uninjected_removes_what_the_account_adds_by_name() -> None:
    account = make_account("url")
    injected = start(account, get()).request()

    assert rules.uninjected(account, injected).url == f"{HOST}/api/items?page=2"


# -- refresh once on refresh_on -------------------------------------------------------------------------


@pytest.mark.parametrize("injection", INJECTIONS)
def test_the_refresh_retry_carries_the_new_token_only(injection: str) -> None:
    """Issue 15, item 1: with inject_as=url the retry went out as `?tk=OLD&tk=NEW`."""
    drive = start(make_account(injection), get())

    assert drive.send(Head(401)) == Discard(T1)
    assert drive.send() == GetToken()
    drive.send(T2)

    retry = drive.request()
    assert isinstance(drive.command, Send)
    assert T1.value not in repr(retry.headers) + retry.url
    if injection == "url":
        assert query(retry.url) == {"page": ["2"], "tenant": [TENANT], "tk": [T2.value]}
    else:
        assert headers(retry)["authorization"] == [f"Bearer {T2.value}"]
        assert headers(retry)["x-tenant"] == [TENANT]
    assert drive.send(Head(200)) is None
    assert drive.result == Result(refreshed=True)


def test_a_token_rejected_on_the_refresh_retry_is_discarded_too() -> None:
    """Issue 15, item 9: the retry's token stayed cached and was sent again on the next call."""
    drive = start(make_account("url"), get())
    drive.send(Head(401))
    drive.send()
    drive.send(T2)

    assert drive.send(Head(401)) == Discard(T2)
    assert drive.send() is None  # no second refresh
    assert drive.result == Result(refreshed=True)


def test_a_stream_body_is_not_resent_after_a_refresh() -> None:
    request = ApiRequest("POST", f"{HOST}/upload", body=object(), replayable=False)
    drive = start(make_account("bearer"), request)

    assert drive.send(Head(401)) == Discard(T1)  # the token is dropped all the same
    assert drive.send() is None  # but no new token is fetched for a request that cannot be sent again
    assert drive.result == Result(note=NOT_RESENT)


def test_without_refresh_a_rejected_token_is_kept() -> None:
    drive = start(make_account("url"), get(), refresh=False)

    assert drive.send(Head(401)) is None
    assert drive.result == Result()


def test_a_status_outside_refresh_on_is_the_answer() -> None:
    drive = start(make_account("url", refresh_on=[401, 419]), get())

    assert drive.send(Head(403)) is None
    assert drive.result == Result()
    drive = start(make_account("url", refresh_on=[401, 419]), get())
    assert drive.send(Head(419)) == Discard(T1)


# -- redirects ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_redirect_to_another_origin_carries_no_credentials(injection: str) -> None:
    drive = start(make_account(injection), get())
    echoed = drive.request().url.split("?", 1)[1]  # a Location that repeats our query

    follow = drive.send(Head(302, {"location": f"{OTHER}/landing?{echoed}"}))

    assert isinstance(follow, Send)
    assert follow.request.url == f"{OTHER}/landing?page=2"
    assert "authorization" not in headers(follow.request) and "x-tenant" not in headers(follow.request)
    assert drive.send(Head(401)) is None  # another origin's 401 says nothing about our token
    assert drive.result == Result()


def test_a_same_origin_redirect_that_repeats_the_query_carries_it_once() -> None:
    drive = start(make_account("url"), get())
    echoed = drive.request().url.split("?", 1)[1]

    assert drive.send(Head(302, {"location": f"/api/next?{echoed}"})) == GetToken()
    follow = drive.send(T1)

    assert isinstance(follow, Send)
    assert query(follow.request.url) == {"page": ["2"], "tenant": [TENANT], "tk": [T1.value]}


def test_https_to_http_on_the_same_host_carries_no_credentials() -> None:
    drive = start(make_account("bearer"), get())

    follow = drive.send(Head(301, {"location": HOST.replace("https:", "http:") + "/api/items"}))

    assert isinstance(follow, Send)
    assert "authorization" not in headers(follow.request) and "tenant" not in query(follow.request.url)


def test_an_allowed_host_receives_the_credentials_after_a_redirect() -> None:
    drive = start(make_account("bearer", allowed_hosts=[OTHER]), get())
    assert drive.send(Head(307, {"location": f"{OTHER}/api"})) == GetToken()  # fresh for every send

    follow = drive.send(T1)

    assert isinstance(follow, Send)
    assert headers(follow.request)["authorization"] == [f"Bearer {T1.value}"]


def test_a_redirect_back_from_another_origin_with_its_own_parameters_keeps_them() -> None:
    """Only a hop that carried our parameters has them stripped from its Location."""
    drive = Drive(rules.request_rules(make_account("url"), ApiRequest("GET", f"{OTHER}/start")))
    assert isinstance(drive.command, Send)

    assert drive.send(Head(302, {"location": f"{OTHER}/next?tenant=theirs"})) is not None

    assert isinstance(drive.command, Send)
    assert query(drive.request().url) == {"tenant": ["theirs"]}


def test_303_turns_a_post_into_a_get_without_body() -> None:
    request = ApiRequest(
        "POST", f"{HOST}/jobs", headers=(("Content-Type", "application/json"), ("X-Own", "1")), body=b"{}"
    )
    drive = start(make_account("bearer"), request)
    drive.send(Head(303, {"location": "/jobs/1"}))
    follow = drive.send(T1)

    assert isinstance(follow, Send)
    assert (follow.request.method, follow.request.body) == ("GET", None)
    assert "content-type" not in headers(follow.request) and headers(follow.request)["x-own"] == ["1"]


def test_307_keeps_the_method_and_the_body() -> None:
    request = ApiRequest("POST", f"{HOST}/jobs", body=b"{}")
    drive = start(make_account("bearer"), request)
    drive.send(Head(307, {"location": "/jobs-v2"}))
    follow = drive.send(T1)

    assert isinstance(follow, Send)
    assert (follow.request.method, follow.request.body) == ("POST", b"{}")


def test_too_many_redirects_is_an_error_without_the_token() -> None:
    drive = start(make_account("url"), get(), max_redirects=2)
    for hop in range(2):
        drive.send(Head(302, {"location": f"/hop{hop}"}))
        drive.send(T1)

    with pytest.raises(
        RequestError, match=r"GET https://api\.example\.test/hop2: more than 2 redirects"
    ) as e:
        drive.send(Head(302, {"location": "/hop2"}))
    assert T1.value not in str(e.value)


# -- API retries (a policy; None: none) -----------------------------------------------------------------

POLICY = RetryPolicy(retries=2, wait_base=0.5, wait_max=1.0, retry_after_max=5.0)


def test_without_a_policy_a_503_is_the_answer() -> None:
    drive = start(make_account("url"), get())

    assert drive.send(Head(503)) is None


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_an_idempotent_request_is_retried_with_a_fresh_token(status: int) -> None:
    drive = start(make_account("url"), get(), retry=POLICY)

    wait = drive.send(Head(status))

    assert isinstance(wait, Wait) and 0.25 <= wait.seconds <= 0.5
    assert drive.send() == GetToken()
    assert query(drive.send(T2).request.url)["tk"] == [T2.value]  # type: ignore[union-attr]
    assert drive.send(Head(200)) is None


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    drive = start(make_account("url"), get(), retry=POLICY)

    assert drive.send(Head(429, {"retry-after": "2"})) == Wait(2.0)
    drive.send()
    drive.send(T1)
    assert drive.send(Head(503, {"retry-after": "120"})) == Wait(5.0)


def test_retries_are_bounded_by_the_policy() -> None:
    drive = start(make_account("url"), get(), retry=POLICY)
    for _ in range(POLICY.retries):
        assert isinstance(drive.send(Head(503)), Wait)
        drive.send()
        drive.send(T1)

    assert drive.send(Head(503)) is None


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_and_patch_are_never_retried(method: str) -> None:
    drive = start(make_account("url"), ApiRequest(method, f"{HOST}/jobs", body=b"{}"), retry=POLICY)

    assert drive.send(Head(503)) is None
    drive = start(make_account("url"), ApiRequest(method, f"{HOST}/jobs", body=b"{}"), retry=POLICY)
    with pytest.raises(ConnectionResetError, match="reset by peer"):
        drive.throw(ConnectionResetError("reset by peer"))


def test_a_transport_error_is_retried_then_raised_once_the_policy_is_spent() -> None:
    drive = start(make_account("url"), get(), retry=POLICY)
    for _ in range(POLICY.retries):
        assert isinstance(drive.throw(TimeoutError("read timed out")), Wait)
        assert drive.send() == GetToken()
        assert isinstance(drive.send(T1), Send)

    with pytest.raises(TimeoutError, match="read timed out"):
        drive.throw(TimeoutError("read timed out"))


def test_without_a_policy_a_transport_error_is_raised_at_once() -> None:
    drive = start(make_account("url"), get())

    with pytest.raises(ConnectionRefusedError, match="refused"):
        drive.throw(ConnectionRefusedError("refused"))


def test_a_body_that_cannot_be_sent_twice_is_not_retried() -> None:
    drive = start(
        make_account("url"), ApiRequest("PUT", f"{HOST}/f", body=object(), replayable=False), retry=POLICY
    )

    assert drive.send(Head(503)) is None


def test_a_transport_error_after_a_redirect_resends_that_hop() -> None:
    drive = start(make_account("url"), get(), retry=POLICY)
    drive.send(Head(302, {"location": "/moved"}))
    assert isinstance(drive.send(T1), Send)

    assert isinstance(drive.throw(ConnectionResetError("reset")), Wait)
    drive.send()
    resent = drive.send(T2)

    assert isinstance(resent, Send)  # the transport sends it itself this time
    assert urlsplit(resent.request.url).path == "/moved" and query(resent.request.url)["tk"] == [T2.value]


def test_a_hop_to_another_host_drops_the_requests_own_authorization_header() -> None:
    """As requests and httpx do: the caller's own Authorization never follows to another host."""
    request = get(headers=(("Authorization", "Basic mine"), ("X-Own", "1")))
    drive = start(make_account("url"), request)

    hop = drive.send(Head(302, {"location": f"{OTHER}/landing"}))

    assert isinstance(hop, Send)
    assert "authorization" not in headers(hop.request) and headers(hop.request)["x-own"] == ["1"]


def test_without_following_a_redirect_is_the_answer_and_names_the_next_hop() -> None:
    drive = start(make_account("url"), get(), follow_redirects=False)

    assert drive.send(Head(302, {"location": "/moved?x=1"})) is None

    assert drive.result is not None and drive.result.redirect is not None
    assert drive.result.redirect.url == f"{HOST}/moved?x=1"  # un-injected: the token is added per hop


def test_credentials_are_rendered_once_per_token_and_never_cross_tokens_or_accounts() -> None:
    """`inject` remembers the rendered credentials of a token: the same values for the same token, a
    new token's (or another account's) never the last one's."""
    account, other = make_account("bearer"), make_account("bearer", inject_template="Token {token}")
    request = ApiRequest("GET", f"{HOST}/v1/items")
    first, again = rules.inject(account, request, T1), rules.inject(account, request, T1)
    assert first == again and first.secrets == again.secrets
    assert first.header("Authorization") == "Bearer tok-one-111"
    assert rules.inject(account, request, T2).header("Authorization") == "Bearer tok-two-222"
    assert rules.inject(other, request, T1).header("Authorization") == "Token tok-one-111"
    assert rules.inject(account, request, token("tok-one-111")).secrets == first.secrets  # equal, not same
