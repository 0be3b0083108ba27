"""Stdlib-only demo token server plus a token-protected API, bound to loopback only."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hmac
import ipaddress
import json
import secrets
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from email.message import Message

DEFAULT_ACCOUNTS = {"dev": "dev-secret", "qa": "qa-secret", "prod": "prod-secret", "demo": "demo-secret"}
EXPIRY_STYLES = ("seconds", "string", "epoch", "iso", "none", "jwt")
SESSION_LOGIN = "/session/v1/login"  # Basic client auth; a session cookie plus an X-CSRF-Token header
SESSION_API = "/api/session/"  # wants the session cookie and that session's X-CSRF-Token
TOKEN_PATHS = frozenset(
    {"/oauth2/v1/token", "/auth/v1/session", "/auth/v1/header", "/auth/v1/cookie", "/auth/v1/text"}
    | {SESSION_LOGIN}
)
ITEMS = [{"id": i, "name": f"item-{i}"} for i in range(1, 11)]
LOG_CAP = 1000
_COUNTERS = ("token_requests", "api_requests", "authenticated", "rejected", "tokens_issued")


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Response(NamedTuple):
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: Any, *headers: tuple[str, str]) -> _Response:
    return _Response(status, json.dumps(payload).encode(), "application/json", headers)


def _last_values(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(account: str, now: float, expiry: float) -> str:
    """Build an unsigned JWT (alg "none"; the third segment is random filler)."""
    claims = {"sub": account, "iat": int(now), "exp": int(expiry), "jti": secrets.token_hex(8)}
    header, payload = _b64url(b'{"alg":"none","typ":"JWT"}'), _b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{secrets.token_urlsafe(16)}"


def _expiry_value(style: str, lifetime: int, expiry: float) -> int | str:
    if style == "string":
        return str(lifetime)
    if style == "epoch":
        return int(expiry)
    if style == "iso":
        return datetime.datetime.fromtimestamp(expiry, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return lifetime


class _Request:
    """A parsed request, as seen by the router and recorded in the logs."""

    def __init__(self, method: str, target: str, message: Message, body: bytes) -> None:
        parts = urlsplit(target)
        self.method, self.path, self.query_string = method, parts.path, parts.query
        self.query = _last_values(parts.query)
        self.message, self.headers, self.body = message, dict(message.items()), body
        self.content_type: str | None = message.get("Content-Type")
        self.form: dict[str, str] | None = None
        self.json: Any = None
        if self.content_type and "x-www-form-urlencoded" in self.content_type:
            self.form = _last_values(body.decode("utf-8", "replace"))
        elif body:
            with contextlib.suppress(ValueError):
                self.json = json.loads(body)

    def record(self) -> dict[str, Any]:
        """Return the log entry for this request."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "form": self.form,
            "json": self.json,
            "headers": self.headers,
            "content_type": self.content_type,
        }

    def token_candidates(self) -> list[str]:
        """Return every header, cookie and query value, minus any leading scheme word."""
        values = [*self.headers.values(), *self.query.values()]
        for cookie in self.message.get_all("Cookie") or ():
            values.extend(part.partition("=")[2] for part in str(cookie).split(";"))
        return [value.strip().rpartition(" ")[2] for value in values]

    def client_credentials(self) -> tuple[str, str] | None:
        """Find ``(client_id, secret)`` in the JSON body, form, query or Basic auth."""
        for fields in (self.json if isinstance(self.json, dict) else None, self.form, self.query):
            for id_key, secret_key in (("client_id", "client_secret"), ("username", "password")):
                if fields and id_key in fields and secret_key in fields:
                    return str(fields[id_key]), str(fields[secret_key])
            if fields and "apiKey" in fields:
                client_id, _, secret = str(fields["apiKey"]).partition(":")
                return client_id, secret
        return self.basic_credentials()

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` the request sends, if any."""
        for header in self.message.get_all("Cookie") or ():
            for part in str(header).split(";"):
                key, sep, value = part.strip().partition("=")
                if sep and key == name:
                    return value
        return None

    def basic_credentials(self) -> tuple[str, str] | None:
        """Find ``(client_id, secret)`` in an ``Authorization: Basic`` header (RFC 7617, UTF-8)."""
        scheme, _, value = str(self.message.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):  # binascii.Error, UnicodeDecodeError
                client_id, sep, secret = base64.b64decode(value.strip()).decode().partition(":")
                return (client_id, secret) if sep else None
        return None


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 keep-alive handler: parse, route via the server, write once."""

    protocol_version = "HTTP/1.1"
    server_version = "airflow-custom-token-demo/1.0"
    disable_nagle_algorithm = True
    wbufsize = -1  # buffer headers + body into a single send per response
    server: _HTTPServer

    def log_message(self, *args: Any, **kwargs: Any) -> None:
        """Stay quiet: no per-request lines on stderr."""

    def do_GET(self) -> None:
        """Serve every supported method through the demo router."""
        try:
            body = self._read_body()
        except ValueError:
            self._write(_json(400, {"error": "bad_request"}, ("Connection", "close")))
            return
        self._write(self.server.respond(_Request(self.command, self.path, self.headers, body)))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in str(self.headers.get("Transfer-Encoding", "")).lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # skip trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, response: _Response) -> None:
        status, body, content_type, headers = response
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    """Threading server that tracks open connections so ``stop()`` can drop them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, respond: Callable[[_Request], _Response]) -> None:
        self.respond = respond
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer.server_bind`` does."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, remembering it while it is open."""
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore client disconnects; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class DemoServer:
    """Token server plus token-protected API on loopback; state readable in-process and over HTTP."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lifetime: int = 3600,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        if not is_loopback(host):
            msg = f"refusing to bind to non-loopback host {host!r} (use 127.0.0.1, ::1 or localhost)"
            raise ValueError(msg)
        self.host = host
        self.accounts = dict(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self._default_lifetime = self._lifetime = lifetime
        self._expiry_style = "seconds"
        self._reject_all = False
        self._token_delay = 0.0  # seconds the token endpoint waits before answering
        self._single_active = False  # issuing a token revokes the account's earlier tokens
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (account, expiry epoch)
        self._faults: deque[dict[str, Any]] = deque()
        self._token_log: deque[dict[str, Any]] = deque(maxlen=LOG_CAP)
        self._api_log: deque[dict[str, Any]] = deque(maxlen=LOG_CAP)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._by_path: dict[str, int] = {}
        self._jobs: dict[str, tuple[float, float]] = {}  # id -> (created, seconds)
        self._csrf: dict[str, str] = {}  # session (a token of SESSION_LOGIN) -> its CSRF token
        self._notes: dict[str, list[dict[str, Any]]] = {}  # account -> notes of the session API
        self._clock_start = time.monotonic()
        self._httpd = _HTTPServer(host, port, self._respond)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``)."""
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def start(self) -> Self:
        """Serve in a background daemon thread."""
        if self._thread is not None:
            msg = "DemoServer already started"
            raise RuntimeError(msg)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        with self._httpd.connections_lock:
            connections = list(self._httpd.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def token_log(self) -> list[dict[str, Any]]:
        """Recorded token requests, oldest first (last 1000)."""
        with self._lock:
            return list(self._token_log)

    @property
    def api_log(self) -> list[dict[str, Any]]:
        """Recorded API requests, oldest first (last 1000)."""
        with self._lock:
            return list(self._api_log)

    def stats(self) -> dict[str, Any]:
        """Snapshot of the request counters."""
        with self._lock:
            return {**self._counts, "token_requests_by_path": dict(self._by_path)}

    def config(self) -> dict[str, Any]:
        """Current ``lifetime``, ``expiry_style``, ``reject_all``, ``token_delay`` and ``single_active``."""
        with self._lock:
            return {
                "lifetime": self._lifetime,
                "expiry_style": self._expiry_style,
                "reject_all": self._reject_all,
                "token_delay": self._token_delay,
                "single_active": self._single_active,
            }

    def reset(self, *, config: bool = False) -> None:
        """Clear counters, logs, faults, jobs, notes and the reports clock; ``config=True`` also config."""
        with self._lock:
            self._counts = dict.fromkeys(_COUNTERS, 0)
            for state in (self._by_path, self._token_log, self._api_log, self._faults, self._jobs):
                state.clear()
            self._notes.clear()
            self._clock_start = time.monotonic()
            if config:
                self._lifetime, self._expiry_style = self._default_lifetime, "seconds"
                self._reject_all = False
                self._token_delay, self._single_active = 0.0, False

    def revoke_all(self) -> None:
        """Invalidate every token issued so far (sessions and their CSRF tokens included)."""
        with self._lock:
            self._tokens.clear()
            self._csrf.clear()

    def set_lifetime(self, seconds: int) -> None:
        """Set the lifetime of tokens issued from now on."""
        with self._lock:
            self._lifetime = int(seconds)

    def set_expiry_style(self, style: str) -> None:
        """Set how ``/oauth2/v1/token`` reports expiry (one of ``EXPIRY_STYLES``)."""
        if style not in EXPIRY_STYLES:
            msg = f"expiry_style must be one of {', '.join(EXPIRY_STYLES)}, not {style!r}"
            raise ValueError(msg)
        with self._lock:
            self._expiry_style = style

    def set_reject_all(self, reject: bool) -> None:
        """Make the API answer 401 to every request (or stop doing so)."""
        with self._lock:
            self._reject_all = bool(reject)

    def set_token_delay(self, seconds: float) -> None:
        """Make the token endpoint wait ``seconds`` before answering (a slow identity provider)."""
        with self._lock:
            self._token_delay = max(0.0, float(seconds))

    def set_single_active(self, single: bool) -> None:
        """One live token per account: issuing a token revokes the account's earlier tokens."""
        with self._lock:
            self._single_active = bool(single)

    def push_fault(self, fault: Mapping[str, Any]) -> None:
        """Queue a fault for the next token request (FIFO)."""
        with self._lock:
            self._faults.append(dict(fault))

    def _respond(self, req: _Request) -> _Response:
        try:
            if req.path in TOKEN_PATHS:
                return self._token_endpoint(req)
            if req.path.startswith("/api/"):
                return self._api_endpoint(req)
            if req.path.startswith("/_control/"):
                return self._control_endpoint(req)
        except (TypeError, ValueError) as exc:  # bad numbers or shapes in the request
            return _json(400, {"error": "bad_request", "error_description": str(exc)})
        return _json(404, {"error": "not_found"})

    def _token_endpoint(self, req: _Request) -> _Response:
        with self._lock:
            self._counts["token_requests"] += 1
            self._by_path[req.path] = self._by_path.get(req.path, 0) + 1
            self._token_log.append(req.record())
            fault = self._faults.popleft() if self._faults else None
            delay = self._token_delay
        if delay:
            time.sleep(delay)
        if fault is not None and (faulted := _fault_response(fault)) is not None:
            return faulted
        if req.method not in ("GET", "POST") or (req.path == SESSION_LOGIN and req.method != "POST"):
            return _json(405, {"error": "method_not_allowed"})
        creds = req.basic_credentials() if req.path == SESSION_LOGIN else req.client_credentials()
        secret = self.accounts.get(creds[0]) if creds else None
        if not creds or secret is None or not hmac.compare_digest(secret.encode(), creds[1].encode()):
            reason = "unknown client or wrong secret" if creds else "no client credentials found"
            return _json(401, {"error": "invalid_client", "error_description": reason})
        account, now = creds[0], time.time()
        with self._lock:
            lifetime, style = self._lifetime, self._expiry_style
            expiry = now + lifetime
            token = _jwt(account, now, expiry) if style == "jwt" else "tok_" + secrets.token_urlsafe(24)
            if self._single_active:
                self._tokens = {t: e for t, e in self._tokens.items() if e[0] != account}
            self._tokens[token] = (account, expiry)
            self._counts["tokens_issued"] += 1
        if req.path == "/oauth2/v1/token":
            payload: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
            if style not in ("none", "jwt"):
                payload["expires_in"] = _expiry_value(style, lifetime, expiry)
            return _json(200, payload)
        if req.path == "/auth/v1/session":
            return _json(200, {"data": {"session": {"id": token, "ttl": lifetime}}})
        if req.path == "/auth/v1/header":
            return _json(200, {"ok": True}, ("X-Session-Token", token))
        if req.path == "/auth/v1/cookie":
            return _json(200, {"ok": True}, ("Set-Cookie", f"sid={token}; Path=/; HttpOnly"))
        if req.path == SESSION_LOGIN:
            return self._session(account, token, style, lifetime, expiry)
        return _Response(200, token.encode(), "text/plain; charset=utf-8")

    def _session(self, account: str, session: str, style: str, lifetime: int, expiry: float) -> _Response:
        """A new session: its cookie, its CSRF token (a header), its lifetime (a header, in ``style``)."""
        csrf = "csrf_" + secrets.token_urlsafe(24)
        with self._lock:
            self._csrf[session] = csrf
        headers = [("Set-Cookie", f"session={session}; Path=/; HttpOnly"), ("X-CSRF-Token", csrf)]
        if style not in ("none", "jwt"):
            headers.append(("X-Session-Expires", str(_expiry_value(style, lifetime, expiry))))
        return _json(200, {"user": account}, *headers)

    def _api_endpoint(self, req: _Request) -> _Response:
        candidates, is_open = req.token_candidates(), req.path == "/api/v1/redirect"
        in_session = req.path.startswith(SESSION_API)
        if in_session:  # the session cookie only, and then its CSRF token
            candidates = [req.cookie("session") or ""]
        account = token = None
        stale = False
        now = time.time()
        with self._lock:
            for candidate in () if self._reject_all else candidates:
                entry = self._tokens.get(candidate)
                if entry is not None and entry[1] > now:
                    account, token = entry[0], candidate
                    break
            if in_session and token is not None:
                expected, sent = self._csrf.get(token, ""), req.message.get("X-CSRF-Token") or ""
                if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
                    account, stale = None, True  # no CSRF token, or another session's: a stale pair
            self._counts["api_requests"] += 1
            if account is not None:
                self._counts["authenticated"] += 1
            elif not is_open:
                self._counts["rejected"] += 1
            self._api_log.append({**req.record(), "account": account})
        if is_open:
            target = req.query.get("to", "")
            if not urlsplit(target).scheme:
                return _json(400, {"error": "bad_request", "error_description": "need ?to=<url>"})
            return _json(302, {"location": target}, ("Location", target))
        if stale:
            return _json(
                403, {"error": "csrf_mismatch", "error_description": "X-CSRF-Token is not the session's"}
            )
        if account is None or token is None:
            return _json(401, {"error": "invalid_token"}, ("WWW-Authenticate", "Bearer"))
        return self._api_route(req, account, token)

    def _session_route(self, req: _Request, account: str) -> _Response:
        """The session API (session cookie + CSRF token checked): ``notes`` (GET, POST) and ``echo``."""
        path = req.path.removeprefix(SESSION_API)
        if path == "v1/notes" and req.method == "POST":
            text = req.json.get("text") if isinstance(req.json, dict) else None
            if not isinstance(text, str):
                return _json(400, {"error": "bad_request", "error_description": 'need {"text": "..."}'})
            with self._lock:
                notes = self._notes.setdefault(account, [])
                note = {"id": len(notes) + 1, "text": text}
                notes.append(note)
            return _json(201, note)
        if path == "v1/notes":
            with self._lock:
                notes = list(self._notes.get(account, []))
            return _json(200, {"account": account, "notes": notes})
        if path == "v1/echo":  # the session's headers (Cookie, X-*); ?status=500: as an error answer
            headers = {k: v for k, v in req.headers.items() if k.lower() == "cookie" or k[:2].lower() == "x-"}
            echo = {"method": req.method, "path": req.path, "headers": headers, "query": req.query}
            status = int(req.query.get("status", 200))
            return _json(status, {**echo, "body": req.body.decode("utf-8", "replace")})
        return _json(404, {"error": "not_found"})

    def _api_route(self, req: _Request, account: str, token: str) -> _Response:
        path, query = req.path, req.query
        if path == "/api/v1/whoami":
            x_headers = {k: v for k, v in req.headers.items() if k.lower().startswith("x-")}
            seen = {
                part: {k: "<token>" if token in v else v for k, v in values.items()}
                for part, values in (("request_headers", x_headers), ("query", query))
            }
            return _json(200, {"account": account, "host": req.message.get("Host"), **seen})
        if path.startswith(SESSION_API):
            return self._session_route(req, account)
        if path == "/api/v1/echo":
            body = req.body.decode("utf-8", "replace")
            echo = {"method": req.method, "path": path, "headers": req.headers, "query": query}
            return _json(200, {**echo, "query_string": req.query_string, "body": body})
        if path == "/api/v1/items":
            page, per_page = int(query.get("page", 1)), int(query.get("per_page", 3))
            if page < 1 or per_page < 1:
                return _json(400, {"error": "bad_request", "error_description": "page >= 1"})
            start = (page - 1) * per_page
            more = start + per_page < len(ITEMS)
            items = ITEMS[start : start + per_page]
            return _json(200, {"items": items, "page": page, "next_page": page + 1 if more else None})
        if path == "/api/v1/jobs" and req.method == "POST":
            seconds = float(req.json.get("seconds", 3) if isinstance(req.json, dict) else 3)
            with self._lock:
                job_id = f"job-{len(self._jobs) + 1}"
                self._jobs[job_id] = (time.monotonic(), seconds)
            return _json(201, {"id": job_id, "status": "running"})
        if path.startswith("/api/v1/jobs/"):
            job_id = path.removeprefix("/api/v1/jobs/")
            with self._lock:
                job = self._jobs.get(job_id)
            if job is None:
                return _json(404, {"error": "not_found"})
            if time.monotonic() - job[0] < job[1]:
                return _json(200, {"id": job_id, "status": "running"})
            return _json(200, {"id": job_id, "status": "done", "result": {"rows": 42}})
        if path.startswith("/api/v1/reports/"):
            name = path.removeprefix("/api/v1/reports/")
            if time.monotonic() - self._clock_start < float(query.get("ready_after", 2)):
                return _json(404, {"error": "not_found", "name": name, "ready": False})
            return _json(200, {"name": name, "ready": True})
        if path.startswith("/api/v1/status/"):
            code = int(path.removeprefix("/api/v1/status/"))
            if not 200 <= code <= 599:
                return _json(400, {"error": "bad_request", "error_description": "status 200-599"})
            return _Response(code) if code in (204, 304) else _json(code, {"status": code})
        return _json(404, {"error": "not_found"})

    def _control_endpoint(self, req: _Request) -> _Response:
        name, body = req.path.removeprefix("/_control/"), req.json
        views: dict[str, Callable[[], Any]] = {
            "stats": self.stats,
            "config": self.config,
            "token_log": lambda: self.token_log,
            "api_log": lambda: self.api_log,
        }
        if req.method == "GET" and name in views:
            return _json(200, views[name]())
        if req.method != "POST":
            return _json(404, {"error": "not_found"})
        if name == "reset":
            self.reset(config=isinstance(body, dict) and bool(body.get("config")))
        elif name == "revoke":
            self.revoke_all()
        elif name == "config":
            if not isinstance(body, dict):
                return _json(400, {"error": "bad_request", "error_description": "need an object"})
            if "lifetime" in body:
                self.set_lifetime(body["lifetime"])
            if "expiry_style" in body:
                self.set_expiry_style(body["expiry_style"])
            if "reject_all" in body:
                self.set_reject_all(body["reject_all"])
            if "token_delay" in body:
                self.set_token_delay(body["token_delay"])
            if "single_active" in body:
                self.set_single_active(body["single_active"])
            return _json(200, self.config())
        elif name == "faults":
            faults = [dict(fault) for fault in (body if isinstance(body, list) else [body])]
            with self._lock:
                self._faults.extend(faults)
            return _json(200, {"queued": len(faults)})
        else:
            return _json(404, {"error": "not_found"})
        return _json(200, {"ok": True})


def _fault_response(fault: dict[str, Any]) -> _Response | None:
    """Apply an injected fault; None means "now answer normally" (e.g. after a hang)."""
    if "hang" in fault:
        time.sleep(float(fault["hang"]))
    status = int(fault.get("status", 200))
    headers = (("Retry-After", str(fault["retry_after"])),) if "retry_after" in fault else ()
    if "body" in fault:
        ctype = str(fault.get("content_type", "text/plain"))
        return _Response(status, str(fault["body"]).encode(), ctype, headers)
    if "json" in fault:
        return _json(status, fault["json"], *headers)
    if fault.get("html"):
        page = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        return _Response(int(fault.get("status", 502)), page, "text/html", headers)
    if "status" in fault:
        error = {"error": "server_error", "error_description": f"injected fault (HTTP {status})"}
        return _json(status, error, *headers)
    return None
