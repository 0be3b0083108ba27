"""The bench's own loopback API and token server, run in a separate process.

`LeanServer` is a single-threaded asyncio HTTP/1.1 keep-alive server with just what the bench needs,
speaking the demo API's dialect (same token endpoint, same `/api/...` token check, same `/_control/...`
endpoints), so that the bench can run against either and the two can be compared
(`python -m bench --server demo`). It serves a request in a few tens of microseconds, so the
per-request figures measure the client rather than the server.

Run it: `python -m bench.servers [--port 0] [--lifetime 3600]`; it prints `listening on <url>` once
ready. `ServerProcess` starts it (or the demo API) in a subprocess and talks to its control endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

HOST = "127.0.0.1"
ACCOUNTS = {"dev": "dev-secret", "qa": "qa-secret", "prod": "prod-secret", "demo": "demo-secret"}
TOKEN_PATH = "/oauth2/v1/token"
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
MAX_HEAD = 65536
_LISTENING = re.compile(r"listening on (http://\S+)")
ROOT = Path(__file__).resolve().parent.parent


def _response(status: int, payload: Any, extra: bytes = b"") -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


OK_BODY = _response(200, {"ok": True})
UNAUTHORIZED = _response(401, {"error": "invalid_token"}, b"WWW-Authenticate: Bearer\r\n")


class LeanServer:
    """Token endpoint plus token-protected API; counts what it sees."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.started = time.monotonic()
        self.counts: dict[str, int] = {}
        self.token_times: list[float] = []
        self.reset()

    def reset(self) -> None:
        self.counts = {
            "token_requests": 0,
            "api_requests": 0,
            "authenticated": 0,
            "rejected": 0,
            "proxied": 0,
        }
        self.token_times = []
        self.started = time.monotonic()

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "token_request_times": self.token_times}

    # -- routing ----------------------------------------------------------------------------------
    def respond(self, method: str, target: str, headers: dict[bytes, bytes], body: bytes) -> bytes:
        proxied = "://" in target  # absolute form: the request came through us as an HTTP proxy
        if proxied:
            target = urlsplit(target)._replace(scheme="", netloc="").geturl()
        path, _, query = target.partition("?")
        if proxied and path.startswith("/api/"):
            self.counts["proxied"] += 1
        if path.startswith("/api/"):
            return self.api(path, query, headers)
        if path == TOKEN_PATH:
            return self.token(method, headers, body)
        if path.startswith("/_control/"):
            return self.control(method, path.removeprefix("/_control/"), body)
        return _response(404, {"error": "not_found"})

    def api(self, path: str, query: str, headers: dict[bytes, bytes]) -> bytes:
        self.counts["api_requests"] += 1
        scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        expiry = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.time():
            self.counts["rejected"] += 1
            return UNAUTHORIZED
        self.counts["authenticated"] += 1
        if path.startswith("/api/v1/reports/"):
            ready_after = float(dict(parse_qsl(query)).get("ready_after", 2))
            name = path.removeprefix("/api/v1/reports/")
            if time.monotonic() - self.started < ready_after:
                return _response(404, {"error": "not_found", "name": name, "ready": False})
            return _response(200, {"name": name, "ready": True})
        return OK_BODY

    def token(self, method: str, headers: dict[bytes, bytes], body: bytes) -> bytes:
        self.counts["token_requests"] += 1
        self.token_times.append(time.time())
        form = dict(parse_qsl(body.decode())) if method == "POST" else {}
        if ACCOUNTS.get(form.get("client_id", "")) != form.get("client_secret"):
            return _response(401, {"error": "invalid_client"})
        token = "tok_" + secrets.token_urlsafe(24)
        now = time.time()
        self.tokens = {t: e for t, e in self.tokens.items() if e > now}
        self.tokens[token] = now + self.lifetime
        lifetime = int(self.lifetime) if float(self.lifetime).is_integer() else self.lifetime
        return _response(200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime})

    def control(self, method: str, name: str, body: bytes) -> bytes:
        if method == "GET" and name == "stats":
            return _response(200, self.stats())
        if method == "GET" and name == "config":
            return _response(200, {"lifetime": self.lifetime})
        if method == "POST" and name == "reset":
            self.reset()
            return _response(200, {"ok": True})
        if method == "POST" and name == "config":
            config = json.loads(body or b"{}")
            if "lifetime" in config:
                self.lifetime = float(config["lifetime"])
            return _response(200, {"lifetime": self.lifetime})
        return _response(404, {"error": "not_found"})


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; Content-Length bodies only (what the bench sends)."""

    def __init__(self, app: LeanServer) -> None:
        self.app = app
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        out: list[bytes] = []
        close = False
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    close = True
                break
            lines = self.buffer[:end].split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                break
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            try:
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                out.append(self.app.respond(method, target, headers, body))
            except (ValueError, TypeError):
                out.append(_response(400, {"error": "bad_request"}))
                close = True
            if close or headers.get(b"connection", b"").lower() == b"close":
                close = True
                break
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def serve(port: int, lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    app = LeanServer(lifetime)
    server = await loop.create_server(lambda: _Protocol(app), HOST, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"bench API listening on http://{HOST}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.lifetime))
    return 0


# ---------------------------------------------------------------------------------------------------
# Running a server in its own process


class ServerProcess:
    """The lean server (`kind="lean"`) or the demo API (`kind="demo"`) in a subprocess on 127.0.0.1."""

    def __init__(self, kind: str = "lean") -> None:
        if kind not in ("lean", "demo"):
            raise ValueError(f"server kind: expected lean or demo, found {kind!r}")
        self.kind = kind
        self.url = ""
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Self:
        module = "bench.servers" if self.kind == "lean" else "airflow_custom_token.demo"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        found = _LISTENING.search(line)
        if not found:
            self.stop()
            raise RuntimeError(f"{module} did not start: {line!r}")
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control endpoints (both servers) -----------------------------------------------------------
    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            body = None if payload is None else json.dumps(payload)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return json.loads(response.read())
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_control/stats"))

    def reset(self) -> None:
        self._call("POST", "/_control/reset", {})

    def set_lifetime(self, seconds: float) -> None:
        # the demo API takes whole seconds only
        self._call("POST", "/_control/config", {"lifetime": seconds if self.kind == "lean" else int(seconds)})

    def token(self, client: str = "dev") -> str:
        return fetch_token(self.url, client)


def fetch_token(server_url: str, client: str = "dev") -> str:
    """A token issued by the server at `server_url` (for clients that send a fixed header)."""
    parts = urlsplit(server_url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=30)
    try:
        form = f"client_id={client}&client_secret={ACCOUNTS[client]}"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", TOKEN_PATH, body=form, headers=headers)
        return str(json.loads(conn.getresponse().read())["access_token"])
    finally:
        conn.close()


@contextlib.contextmanager
def running(kind: str = "lean") -> Iterator[ServerProcess]:
    with ServerProcess(kind) as server:
        yield server


if __name__ == "__main__":
    raise SystemExit(main())
