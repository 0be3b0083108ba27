"""Quick checks of the bundled demo API (``demo`` fixture from conftest), with a stdlib-only client."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import airflow_custom_token.demo
from airflow_custom_token.demo import DemoServer

TOKEN_URL = "/oauth2/v1/token"


def call(
    demo: DemoServer,
    path: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(demo.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(demo: DemoServer, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = call(demo, path, **kwargs)
    return status, json.loads(body)


def fetch_token(demo: DemoServer, client: str = "dev") -> str:
    form = urllib.parse.urlencode({"client_id": client, "client_secret": f"{client}-secret"})
    status, payload = get_json(demo, TOKEN_URL, method="POST", data=form.encode())
    assert status == 200
    return str(payload["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_oauth2_token_and_whoami(demo: DemoServer) -> None:
    status, payload = get_json(
        demo, TOKEN_URL, method="POST", json_body={"client_id": "qa", "client_secret": "qa-secret"}
    )
    assert status == 200
    assert payload["token_type"] == "Bearer" and payload["expires_in"] == 3600
    token = payload["access_token"]

    status, me = get_json(demo, "/api/v1/whoami?x=1", headers={**bearer(token), "X-Trace": "t1"})
    assert status == 200
    assert me["account"] == "qa" and me["query"] == {"x": "1"}
    assert me["request_headers"] == {"X-Trace": "t1"} and me["host"].startswith("127.0.0.1:")

    status, me = get_json(demo, f"/api/v1/whoami?access_token={token}", headers={"X-Key": f"Token {token}"})
    assert status == 200 and token not in json.dumps(me)
    assert me["query"] == {"access_token": "<token>"} and me["request_headers"] == {"X-Key": "<token>"}

    assert get_json(demo, "/api/v1/whoami") == (401, {"error": "invalid_token"})
    stats = demo.stats()
    assert stats["token_requests"] == 1 and stats["tokens_issued"] == 1
    assert stats["token_requests_by_path"] == {TOKEN_URL: 1}
    assert (stats["api_requests"], stats["authenticated"], stats["rejected"]) == (3, 2, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json_body": {"username": "prod", "password": "prod-secret"}},
        {
            "data": b"apiKey=prod%3Aprod-secret",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"prod:prod-secret").decode()}},
    ],
    ids=["json-username", "form-apikey", "basic"],
)
def test_credential_sources(demo: DemoServer, kwargs: dict[str, Any]) -> None:
    status, payload = get_json(demo, TOKEN_URL, method="POST", **kwargs)
    assert status == 200
    assert get_json(demo, "/api/v1/whoami", headers=bearer(payload["access_token"]))[1]["account"] == "prod"
    assert get_json(demo, f"{TOKEN_URL}?client_id=prod&client_secret=prod-secret")[0] == 200


def test_bad_credentials_are_rejected_without_echoing_the_secret(demo: DemoServer) -> None:
    status, _, body = call(demo, f"{TOKEN_URL}?client_id=dev&client_secret=sup3r-wrong")
    assert status == 401 and b"sup3r-wrong" not in body
    assert json.loads(body)["error"] == "invalid_client"
    assert get_json(demo, TOKEN_URL, method="POST", data=b"")[0] == 401
    assert demo.stats()["token_requests"] == 2 and demo.stats()["tokens_issued"] == 0


def test_token_shapes_and_carriers(demo: DemoServer) -> None:
    creds = "?client_id=demo&client_secret=demo-secret"
    status, payload = get_json(demo, "/auth/v1/session" + creds)
    session = payload["data"]["session"]
    assert status == 200 and session["ttl"] == 3600
    status, headers, _ = call(demo, "/auth/v1/header" + creds)
    header_token = headers["X-Session-Token"]
    status, headers, _ = call(demo, "/auth/v1/cookie" + creds)
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("sid=") and cookie.endswith("; Path=/; HttpOnly")
    status, headers, body = call(demo, "/auth/v1/text" + creds)
    assert headers["Content-Type"].startswith("text/plain") and body.decode().startswith("tok_")

    carriers = [
        {"X-Session": session["id"]},
        {"X-Api-Token": f"Token {header_token}"},
        {"Cookie": "theme=dark; " + cookie.split(";")[0]},
        {"Authorization": f"Bearer {body.decode()}"},
    ]
    for headers_ in carriers:
        assert get_json(demo, "/api/v1/whoami", headers=headers_)[1]["account"] == "demo"


@pytest.mark.parametrize("style", ["seconds", "string", "epoch", "iso", "none", "jwt"])
def test_expiry_styles(demo: DemoServer, style: str) -> None:
    demo.set_expiry_style(style)
    before = int(time.time())
    payload = get_json(demo, f"{TOKEN_URL}?client_id=dev&client_secret=dev-secret")[1]
    expected = {"seconds": 3600, "string": "3600"}
    if style in expected:
        assert payload["expires_in"] == expected[style]
    elif style == "epoch":
        assert before + 3599 <= payload["expires_in"] <= int(time.time()) + 3600
    elif style == "iso":
        assert payload["expires_in"].endswith("Z") and payload["expires_in"][:4].isdigit()
    else:
        assert "expires_in" not in payload
    if style == "jwt":
        claims_part = payload["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
        assert claims["sub"] == "dev" and claims["exp"] >= before + 3599
    assert get_json(demo, "/api/v1/items", headers=bearer(payload["access_token"]))[0] == 200


def test_revoke_reject_all_and_expiry(demo: DemoServer) -> None:
    token = fetch_token(demo)
    assert get_json(demo, "/_control/revoke", method="POST", data=b"") == (200, {"ok": True})
    assert get_json(demo, "/api/v1/items", headers=bearer(token))[0] == 401

    token = fetch_token(demo)
    status, config = get_json(demo, "/_control/config", method="POST", json_body={"reject_all": True})
    assert status == 200 and config["reject_all"] is True
    assert get_json(demo, "/api/v1/items", headers=bearer(token))[0] == 401
    demo.set_reject_all(False)
    assert get_json(demo, "/api/v1/items", headers=bearer(token))[0] == 200

    assert get_json(demo, "/_control/config", method="POST", json_body={"expiry_style": "nope"})[0] == 400
    demo.set_lifetime(0)
    assert get_json(demo, "/api/v1/items", headers=bearer(fetch_token(demo)))[0] == 401


def test_faults_are_consumed_in_order(demo: DemoServer) -> None:
    faults = [
        {"status": 500},
        {"status": 429, "retry_after": 1},
        {"html": True},
        {"body": "oops", "content_type": "text/plain", "status": 200},
        {"json": {"token": "odd"}, "status": 201},
    ]
    assert get_json(demo, "/_control/faults", method="POST", json_body=faults) == (200, {"queued": 5})
    path = f"{TOKEN_URL}?client_id=dev&client_secret=dev-secret"
    assert call(demo, path)[0] == 500
    status, headers, _ = call(demo, path)
    assert status == 429 and headers["Retry-After"] == "1"
    status, headers, _ = call(demo, path)
    assert status == 502 and headers["Content-Type"] == "text/html"
    assert call(demo, path)[::2] == (200, b"oops")
    assert get_json(demo, path) == (201, {"token": "odd"})
    assert "access_token" in get_json(demo, path)[1]
    assert demo.stats()["token_requests"] == 6


def test_hanging_token_request_does_not_block_others(demo: DemoServer) -> None:
    demo.push_fault({"hang": 1.0})
    results: list[int] = []
    worker = threading.Thread(
        target=lambda: results.append(call(demo, f"{TOKEN_URL}?client_id=dev&client_secret=dev-secret")[0])
    )
    worker.start()
    time.sleep(0.1)
    started = time.monotonic()
    fetch_token(demo)
    assert time.monotonic() - started < 0.5
    worker.join(5)
    assert results == [200]


def test_api_endpoints(demo: DemoServer) -> None:
    auth = bearer(fetch_token(demo))
    pages, page = [], 1
    while page is not None:
        payload = get_json(demo, f"/api/v1/items?page={page}&per_page=4", headers=auth)[1]
        pages.append([item["id"] for item in payload["items"]])
        page = payload["next_page"]
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert get_json(demo, "/api/v1/items?page=x", headers=auth)[0] == 400

    status, echo = get_json(demo, "/api/v1/echo?a=1", method="POST", data=b"hi", headers=auth)
    assert (status, echo["method"], echo["query"], echo["body"]) == (200, "POST", {"a": "1"}, "hi")
    assert echo["headers"]["Authorization"] == auth["Authorization"]

    status, job = get_json(demo, "/api/v1/jobs", method="POST", json_body={"seconds": 0.2}, headers=auth)
    assert status == 201 and job == {"id": "job-1", "status": "running"}
    assert get_json(demo, "/api/v1/jobs/job-1", headers=auth)[1]["status"] == "running"
    time.sleep(0.25)
    assert get_json(demo, "/api/v1/jobs/job-1", headers=auth)[1]["status"] == "done"
    assert get_json(demo, "/api/v1/jobs/job-9", headers=auth)[0] == 404

    assert get_json(demo, "/api/v1/reports/daily?ready_after=60", headers=auth)[0] == 404
    assert get_json(demo, "/api/v1/reports/daily?ready_after=0", headers=auth) == (
        200,
        {"name": "daily", "ready": True},
    )
    assert get_json(demo, "/api/v1/status/503", headers=auth) == (503, {"status": 503})
    assert call(demo, "/api/v1/status/204", headers=auth)[::2] == (204, b"")
    assert get_json(demo, "/api/v1/nope", headers=auth)[0] == 404
    assert get_json(demo, "/nope")[0] == 404


def test_redirect_needs_no_token_and_keep_alive_works(demo: DemoServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    target = f"{demo.url}/api/v1/whoami"
    conn.request("GET", "/api/v1/redirect?" + urllib.parse.urlencode({"to": target}))
    response = conn.getresponse()
    response.read()
    assert response.status == 302 and response.getheader("Location") == target
    first_socket = conn.sock
    for _ in range(50):
        conn.request("GET", "/_control/stats")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["api_requests"] == 1
    assert conn.sock is first_socket  # one connection served everything
    assert demo.stats()["rejected"] == 0 and demo.api_log[-1]["path"] == "/api/v1/redirect"
    demo.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("GET", "/_control/stats")
        conn.getresponse()


def test_logs_reset_and_cap(demo: DemoServer) -> None:
    fetch_token(demo)
    entry = demo.token_log[0]
    assert set(entry) == {"method", "path", "query", "form", "json", "headers", "content_type"}
    assert entry["form"] == {"client_id": "dev", "client_secret": "dev-secret"} and entry["json"] is None
    assert entry["content_type"] == "application/x-www-form-urlencoded"
    conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    for _ in range(1005):
        conn.request("GET", "/api/v1/items")
        conn.getresponse().read()
    assert len(demo.api_log) == 1000 and demo.api_log[-1]["account"] is None
    assert get_json(demo, "/_control/api_log")[1][-1]["path"] == "/api/v1/items"
    token = fetch_token(demo)
    assert get_json(demo, "/_control/reset", method="POST", data=b"") == (200, {"ok": True})
    assert demo.stats()["api_requests"] == 0 and demo.token_log == [] and demo.api_log == []
    assert get_json(demo, "/api/v1/items", headers=bearer(token))[0] == 200  # reset revokes nothing


def test_refuses_non_loopback_hosts() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            DemoServer(host)


def test_command_line_prints_url_and_exits_cleanly_on_sigterm() -> None:
    src = str(Path(airflow_custom_token.demo.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "airflow_custom_token.demo", "--port", "0", "--lifetime", "60"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("demo API listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(f"{url}{TOKEN_URL}?client_id=dev&client_secret=dev-secret") as response:
            assert json.loads(response.read())["expires_in"] == 60
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    refused = subprocess.run([*cmd[:3], "--host", "0.0.0.0"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "non-loopback" in refused.stderr
