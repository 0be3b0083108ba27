"""The token flow without a server: what `read_token` accepts, and the bounded reading of an answer.

The same cases against a real misbehaving server, through every surface, are in
tests/servers/test_hostile_token_endpoint.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from airflow_custom_token.account.build import build_account
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.account.raw import RawConnection
from airflow_custom_token.bounded import BoundedBody
from airflow_custom_token.errors import TokenRequestError, TokenResponseError
from airflow_custom_token.expiry import CLOCK_TOLERANCE
from airflow_custom_token.settings import Settings
from airflow_custom_token.token import TokenLimits, read_token
from airflow_custom_token.wire import ERROR_BODY_BYTES, HttpRequest, HttpResponse

NOW = 1_800_000_000.0


def account(**extra: Any) -> ConnectedAccount:
    fields = {
        "integration_key": "unit",
        "access_endpoint": "https://auth.example.com/token",
        "access_verb": "POST",
        "inject_as": "header",
        "inject_name": "Authorization",
        "inject_template": "Bearer {token}",
        **extra,
    }
    return build_account(
        [RawConnection("unit", "custom_token", host="https://api.example.com", extra=fields)]
    )


def answer(body: str | bytes, status: int = 200, **headers: str) -> HttpResponse:
    data = body.encode() if isinstance(body, str) else body
    return HttpResponse(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=data
    )


def tokens(token: str, expires_in: Any = None, **headers: str) -> HttpResponse:
    """A JSON answer with `access_token` (and `expires_in` when given)."""
    payload = (
        {"access_token": token} if expires_in is None else {"access_token": token, "expires_in": expires_in}
    )
    return answer(json.dumps(payload), 200, **headers)


# -- the token itself -------------------------------------------------------------------------------------


def test_limits_default_to_the_option_table_and_follow_settings() -> None:
    assert TokenLimits() == TokenLimits(1024 * 1024, 16 * 1024, 86400.0)
    settings = Settings(max_token_response_bytes=4096, max_token_bytes=64, max_token_lifetime=60.0)
    assert TokenLimits.from_settings(settings) == TokenLimits(4096, 64, 60.0)
    assert TokenLimits.from_settings(object()) == TokenLimits()  # anything lacking them: the defaults


@pytest.mark.parametrize(
    "token", ["a\r\nb", "a\nb", "a\rb", "a\x00b", "a\tb", "a\x85b", "a\u2028b", "a\ud800b"]
)
def test_an_unsendable_token_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(TokenResponseError) as caught:
        read_token(account(), answer(json.dumps({"access_token": f"SECRET-{token}-END"})), NOW)

    message = str(caught.value)
    assert message.startswith("The token location 'access_token' (access_response_path) holds a token that")
    assert "SECRET" not in message and "END" not in message


def test_leading_and_trailing_whitespace_is_still_stripped() -> None:
    assert read_token(account(), answer('{"access_token": "\\r\\n tok \\n"}'), NOW).value == "tok"


@pytest.mark.parametrize("inject_as", ["header", "url"])
def test_non_ascii_is_refused_in_a_header_only(inject_as: str) -> None:
    response = answer('{"access_token": "t\\u00f6k"}')
    if inject_as == "url":
        assert read_token(account(inject_as="url", inject_name="key"), response, NOW).value == "tök"
        return
    with pytest.raises(TokenResponseError, match="other than ASCII"):
        read_token(account(), response, NOW)


def test_the_token_size_limit_counts_utf8_bytes() -> None:
    limits = TokenLimits(max_token_bytes=16)
    url = account(inject_as="url", inject_name="key")
    assert read_token(url, tokens("é" * 8), NOW, limits).value == "é" * 8
    with pytest.raises(TokenResponseError, match=r"a token of 18 bytes, more than .*max_token_bytes \(16;"):
        read_token(url, tokens("é" * 9), NOW, limits)


@pytest.mark.parametrize("location", ["header:X-Token", "cookie:sid", "text"])
def test_every_token_location_is_checked(location: str) -> None:
    response = HttpResponse(200, {"x-token": "SECRET\x01"}, b"SECRET\x01 body", cookies={"sid": "SECRET\x7f"})

    with pytest.raises(TokenResponseError, match="control character") as caught:
        read_token(account(access_response_path=location), response, NOW)

    assert "SECRET" not in str(caught.value)


# -- the size and shape of the answer ----------------------------------------------------------------------


def test_an_answer_over_the_limit_is_refused_for_a_body_location() -> None:
    limits = TokenLimits(max_token_response_bytes=100)
    big = json.dumps({"access_token": "tok", "pad": "p" * 100})

    with pytest.raises(
        TokenResponseError, match=r"more than 100 bytes \(\[custom_token\] max_token_response"
    ):
        read_token(account(), answer(big), NOW, limits)
    assert read_token(account(), answer(big[:80] + '"}'), NOW, limits).value == "tok"


def test_a_header_location_does_not_care_about_the_body() -> None:
    limits = TokenLimits(max_token_response_bytes=100)
    response = HttpResponse(200, {"x-token": "tok"}, b"x" * (limits.max_token_response_bytes + 1))

    assert read_token(account(access_response_path="header:X-Token"), response, NOW, limits).value == "tok"


def test_json_too_deep_for_the_decoder_is_a_token_location_error() -> None:
    with pytest.raises(TokenResponseError, match=r"'access_token' is a JSON path.*nested too deeply"):
        read_token(account(), answer("[" * 100_000 + "]" * 100_000), NOW)


def test_a_jwt_with_deeply_nested_claims_is_just_not_a_jwt() -> None:
    import base64

    claims = base64.urlsafe_b64encode(b"[" * 10_000).decode().rstrip("=")
    token = f"e30.{claims}.sig"  # 13 KiB: within max_token_bytes

    assert read_token(account(), tokens(token), NOW).expiry_source.startswith("default lifetime")


# -- expiries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [(3600, 3600), (1, 1), (0.2, 1), (0, 1), (-10, 1), (86400, 86400), (86401, 86400), (10**8, 86400)],
)
def test_a_lifetime_is_kept_between_one_second_and_max_token_lifetime(
    expires_in: float, lifetime: float
) -> None:
    token = read_token(account(), tokens("t", expires_in), NOW)

    assert token.expires_at - NOW == lifetime


def test_an_absolute_expiry_in_the_past_lives_one_second() -> None:
    token = read_token(account(), tokens("t", int(NOW - 60)), NOW)

    assert token.lifetime == 1 and "raised to the minimum" in token.expiry_source


@pytest.mark.parametrize(
    "raw", ["1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity", '"NaN"', '"-Infinity"']
)
def test_an_expiry_that_is_not_a_finite_number_is_refused(raw: str) -> None:
    with pytest.raises(TokenResponseError, match=r"'expires_in' \(access_expiry_path\) holds") as caught:
        read_token(account(), answer(f'{{"access_token": "t", "expires_in": {raw}}}'), NOW)

    assert "0000000000" not in str(caught.value)  # a huge number is described, not printed


@pytest.mark.parametrize("style", ["epoch", "iso"])
@pytest.mark.parametrize("server_minus_local", [-7200.0, 2_592_000.0, -CLOCK_TOLERANCE - 1])
def test_an_absolute_expiry_is_read_against_the_date_header(style: str, server_minus_local: float) -> None:
    from datetime import UTC, datetime

    server_now = NOW + server_minus_local
    expiry: Any = int(server_now) + 600
    if style == "iso":
        expiry = datetime.fromtimestamp(expiry, UTC).isoformat()
    response = tokens("t", expiry, date=formatdate(server_now, usegmt=True))

    token = read_token(account(), response, NOW)

    assert token.lifetime == pytest.approx(600, abs=1)
    assert "read against the server's clock" in token.expiry_source


def test_a_server_clock_within_the_tolerance_is_taken_as_ours() -> None:
    """The Date header has a one-second resolution: near our clock, the absolute time is used as is."""
    date = formatdate(NOW + CLOCK_TOLERANCE - 1, usegmt=True)
    token = read_token(account(), tokens("t", int(NOW + 600), date=date), NOW)

    assert token.expires_at == NOW + 600 and token.expiry_source == "expiry location 'expires_in'"


@pytest.mark.parametrize("date", ["", "yesterday", "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_a_missing_or_broken_date_header_means_our_clock(date: str) -> None:
    response = tokens("t", int(NOW + 600), date=date)

    assert read_token(account(), response, NOW).expires_at == NOW + 600


def test_a_relative_lifetime_ignores_the_date_header() -> None:
    date = formatdate(NOW - 7200, usegmt=True)
    token = read_token(account(), tokens("t", 600, date=date), NOW)

    assert token.expires_at == NOW + 600 and token.expiry_source == "expiry location 'expires_in'"


# -- reading an answer, bounded ---------------------------------------------------------------------------


def request(timeout: float | None = 5.0) -> HttpRequest:
    return HttpRequest("POST", "https://auth.example.com/token?client_secret=s3cr3t", timeout=timeout)


def chunks(count: int, size: int = 1000, every: float = 0.0) -> Iterator[bytes]:
    for _ in range(count):
        if every:
            time.sleep(every)
        yield b"x" * size


def test_a_successful_answer_is_read_to_one_byte_past_the_limit() -> None:
    bounded = BoundedBody(request(), TokenLimits(max_token_response_bytes=2500))
    source = chunks(100)

    body = bounded.read(200, source)

    assert len(body) == 2501
    assert len(list(source)) == 97  # three chunks read, the rest left on the wire


def test_an_error_answer_is_read_only_as_far_as_its_excerpt() -> None:
    body = BoundedBody(request()).read(500, chunks(100))

    assert len(body) == ERROR_BODY_BYTES


def test_a_whole_answer_under_the_limit_is_read_whole() -> None:
    assert BoundedBody(request()).read(200, chunks(5)) == b"x" * 5000


def test_the_deadline_bounds_the_whole_answer_not_each_chunk() -> None:
    bounded = BoundedBody(request(timeout=0.3), secrets=("s3cr3t",))

    started = time.monotonic()
    with pytest.raises(TokenRequestError, match=r"timed out .*within the 0\.3 s timeout") as caught:
        bounded.read(200, chunks(1000, size=1, every=0.05))

    assert time.monotonic() - started < 0.6
    assert caught.value.retryable and "s3cr3t" not in str(caught.value)


def test_no_timeout_means_no_deadline() -> None:
    assert BoundedBody(request(timeout=None)).deadline == math.inf


def test_the_async_reader_keeps_the_same_bounds() -> None:
    async def produce(count: int, every: float = 0.0) -> AsyncIterator[bytes]:
        for _ in range(count):
            await asyncio.sleep(every)
            yield b"x" * 1000

    limits = TokenLimits(max_token_response_bytes=2500)
    assert len(asyncio.run(BoundedBody(request(), limits).aread(200, produce(100)))) == 2501
    assert len(asyncio.run(BoundedBody(request(), limits).aread(404, produce(100)))) == ERROR_BODY_BYTES
    with pytest.raises(TokenRequestError, match="timed out"):
        asyncio.run(BoundedBody(request(timeout=0.2)).aread(200, produce(100, every=0.05)))
