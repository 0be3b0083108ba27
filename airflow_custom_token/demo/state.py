"""What the demo API remembers, under one lock: issued tokens, sessions, counters, logs, faults, config.

`DemoState` is `DemoServer`'s base class: its public methods are the in-process controls (also served
under ``/_control/``), and the others are what the route modules (`tokens`, `session`, `api`,
`control`) read and change, each step under the lock.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow_custom_token.demo.httpd import Request

DEFAULT_ACCOUNTS = {"dev": "dev-secret", "qa": "qa-secret", "prod": "prod-secret", "demo": "demo-secret"}
EXPIRY_STYLES = ("seconds", "string", "epoch", "iso", "none", "jwt")
LOG_CAP = 1000
COUNTERS = (
    "token_requests", "api_requests", "authenticated", "rejected", "tokens_issued",
    "refreshes", "refreshes_rejected", "refresh_reuse", "login_pages", "logins", "logins_refused",
)  # fmt: skip


class Issued(NamedTuple):
    """A token just issued, with the lifetime and expiry style in force when it was."""

    token: str
    lifetime: int
    style: str
    expiry: float  # epoch seconds


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(account: str, now: float, expiry: float) -> str:
    """Build an unsigned JWT (alg "none"; the third segment is random filler)."""
    claims = {"sub": account, "iat": int(now), "exp": int(expiry), "jti": secrets.token_hex(8)}
    header, payload = _b64url(b'{"alg":"none","typ":"JWT"}'), _b64url(json.dumps(claims).encode())
    return f"{header}.{payload}.{secrets.token_urlsafe(16)}"


class DemoState:
    """The demo API's state; every method takes the lock for the whole of what it reads or changes."""

    def __init__(self, *, lifetime: int = 3600, accounts: Mapping[str, str] | None = None) -> None:
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
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._by_path: dict[str, int] = {}
        self._jobs: dict[str, tuple[float, float]] = {}  # id -> (created, seconds)
        self._csrf: dict[str, str] = {}  # session (a token of SESSION_LOGIN) -> its CSRF token
        # refresh token -> (account, family, used): `rotation`'s single-use refresh tokens
        self._refresh: dict[str, tuple[str, str, bool]] = {}
        # issuer -> (key, algorithms) trusted for `assertions`' JWTs; the jti seen; the JWTs accepted
        self._assertion_keys: dict[str, tuple[Any, list[str]]] = {}
        self._jtis: set[str] = set()
        self._assertions: list[dict[str, Any]] = []
        self._notes: dict[str, list[dict[str, Any]]] = {}  # account -> notes of the session API
        self._nonces: dict[str, str] = {}  # a login page's cookie -> its nonce (single use)
        self._sign_ins: dict[str, str] = {}  # a signed-in session's cookie -> its account (single use)
        self._clock_start = time.monotonic()

    # -- in-process controls (also under /_control/) ------------------------------------------------

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
            self._counts = dict.fromkeys(COUNTERS, 0)
            for state in (self._by_path, self._token_log, self._api_log, self._faults, self._jobs):
                state.clear()
            self._notes.clear()
            self._clock_start = time.monotonic()
            if config:
                self._lifetime, self._expiry_style = self._default_lifetime, "seconds"
                self._reject_all = False
                self._token_delay, self._single_active = 0.0, False

    def revoke_access(self) -> None:
        """Forget every access token and session; refresh tokens stay valid (an access token revoked)."""
        with self._lock:
            self._tokens.clear()
            self._csrf.clear()

    def revoke_all(self) -> None:
        """Invalidate every token issued so far (sessions and their CSRF tokens included)."""
        with self._lock:
            self._tokens.clear()
            self._csrf.clear()
            self._refresh.clear()

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
        self.push_faults([fault])

    def push_faults(self, faults: Iterable[Mapping[str, Any]]) -> None:
        """Queue faults for the next token requests, one each (FIFO)."""
        with self._lock:
            self._faults.extend(dict(fault) for fault in faults)

    # -- for the token routes ---------------------------------------------------------------------------

    def record_token_request(self, req: Request) -> tuple[dict[str, Any] | None, float]:
        """Count and log a token request; return the fault queued for it (if any) and the delay."""
        with self._lock:
            self._counts["token_requests"] += 1
            self._by_path[req.path] = self._by_path.get(req.path, 0) + 1
            self._token_log.append(req.record())
            fault = self._faults.popleft() if self._faults else None
            return fault, self._token_delay

    def login_page(self) -> tuple[str, str]:
        """A login page: ``(cookie, nonce)``; the sign-in must send both (the nonce in its form)."""
        cookie, nonce = "lp_" + secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        with self._lock:
            self._counts["login_pages"] += 1
            self._nonces[cookie] = nonce
        return cookie, nonce

    def sign_in(
        self, cookie: str | None, nonce: str, creds: tuple[str, str] | None
    ) -> tuple[str | None, str]:
        """Spend the login page's nonce: ``(session cookie, "")`` for good credentials with the nonce
        of the page whose cookie is sent, else ``(None, why)``."""
        with self._lock:
            expected = self._nonces.pop(cookie or "", None)
            account = self.client_account(creds)
            why = (
                "no login page cookie" if not cookie
                else "unknown or spent login page" if expected is None
                else "nonce does not match the login page" if not hmac.compare_digest(expected, nonce)
                else "wrong user name or password" if account is None
                else ""
            )  # fmt: skip
            if why:
                self._counts["logins_refused"] += 1
                return None, why
            session = "si_" + secrets.token_urlsafe(24)
            self._sign_ins[session] = str(account)
            self._counts["logins"] += 1
            return session, ""

    def signed_in(self, session: str | None) -> str | None:
        """The account a signed-in session cookie belongs to (spent: one token a sign-in), or None."""
        with self._lock:
            return self._sign_ins.pop(session or "", None)

    def client_account(self, creds: tuple[str, str] | None) -> str | None:
        """The account whose ``(client_id, secret)`` these are, or None."""
        secret = self.accounts.get(creds[0]) if creds else None
        if not creds or secret is None or not hmac.compare_digest(secret.encode(), creds[1].encode()):
            return None
        return creds[0]

    def issue(self, account: str) -> Issued:
        """Issue a token to ``account`` (a JWT in expiry style ``jwt``), honouring ``single_active``."""
        now = time.time()
        with self._lock:
            lifetime, style = self._lifetime, self._expiry_style
            expiry = now + lifetime
            token = _jwt(account, now, expiry) if style == "jwt" else "tok_" + secrets.token_urlsafe(24)
            if self._single_active:
                self._tokens = {t: e for t, e in self._tokens.items() if e[0] != account}
            self._tokens[token] = (account, expiry)
            self._counts["tokens_issued"] += 1
        return Issued(token, lifetime, style, expiry)

    def consent(self, account: str, family: str | None = None) -> str:
        """A new single-use refresh token for ``account`` (a one-time consent when ``family`` is None;
        else the next of that family's rotation)."""
        refresh = "rt_" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[refresh] = (account, family or secrets.token_hex(8), False)
        return refresh

    def redeem(self, refresh: str) -> tuple[str | None, str, str]:
        """Use ``refresh`` once: ``(account, family, "")``, or ``(None, family, why)`` when it is unknown or
        used already. A reused one revokes its whole family, as OAuth servers with reuse detection do."""
        with self._lock:
            entry = self._refresh.get(refresh)
            if entry is None:
                self._counts["refreshes_rejected"] += 1
                return None, "", "unknown refresh token"
            account, family, used = entry
            if used:
                self._counts["refreshes_rejected"] += 1
                self._counts["refresh_reuse"] += 1
                self._refresh = {r: e for r, e in self._refresh.items() if e[1] != family}
                return None, family, "refresh token reused: its family is revoked"
            self._refresh[refresh] = (account, family, True)
            self._counts["refreshes"] += 1
            return account, family, ""

    def trust_assertion_key(self, issuer: str, key: Any, algorithms: list[str]) -> None:
        """Verify the JWT assertions of ``issuer`` with ``key`` (a public key in PEM, or an HMAC secret)."""
        with self._lock:
            self._assertion_keys[issuer] = (key, list(algorithms))

    def assertion_key(self, issuer: str) -> tuple[Any, list[str]]:
        """The key (and algorithms) that verifies ``issuer``'s assertions: a trusted one, else the demo key
        for a known account; ``(None, [])`` for an unknown issuer."""
        from airflow_custom_token.demo.assertions import DEMO_PUBLIC_KEY

        with self._lock:
            if issuer in self._assertion_keys:
                return self._assertion_keys[issuer]
        return (DEMO_PUBLIC_KEY, ["EdDSA"]) if issuer in self.accounts else (None, [])

    def first_use_of_jti(self, jti: str, claims: dict[str, Any], header: dict[str, Any]) -> bool:
        """Record an accepted assertion; False if its ``jti`` was seen before."""
        with self._lock:
            if jti in self._jtis:
                return False
            self._jtis.add(jti)
            self._assertions.append({"claims": dict(claims), "header": dict(header)})
            return True

    @property
    def assertions(self) -> list[dict[str, Any]]:
        """The claims and header of every assertion accepted, oldest first."""
        with self._lock:
            return list(self._assertions)

    def open_session(self, session: str) -> str:
        """Give ``session`` (a token just issued) a new CSRF token, and return it."""
        csrf = "csrf_" + secrets.token_urlsafe(24)
        with self._lock:
            self._csrf[session] = csrf
        return csrf

    # -- for the API routes -----------------------------------------------------------------------------

    def authenticate_api(
        self, req: Request, candidates: list[str], *, in_session: bool, is_open: bool
    ) -> tuple[str | None, str | None, bool]:
        """Find the live token among ``candidates``; count and log the request.

        Returns ``(account, token, stale)``: ``stale`` when a session's cookie came without its
        CSRF token (or with another session's), and then ``account`` is None.
        """
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
        return account, token, stale

    def add_note(self, account: str, text: str) -> dict[str, Any]:
        """Add a note to ``account``'s notes (the session API); return it."""
        with self._lock:
            notes = self._notes.setdefault(account, [])
            note = {"id": len(notes) + 1, "text": text}
            notes.append(note)
        return note

    def notes(self, account: str) -> list[dict[str, Any]]:
        """``account``'s notes, oldest first."""
        with self._lock:
            return list(self._notes.get(account, []))

    def add_job(self, seconds: float) -> str:
        """Start a job that runs ``seconds``; return its id."""
        with self._lock:
            job_id = f"job-{len(self._jobs) + 1}"
            self._jobs[job_id] = (time.monotonic(), seconds)
        return job_id

    def job(self, job_id: str) -> tuple[float, float] | None:
        """``(started, seconds)`` of a job, monotonic clock, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def since_reset(self) -> float:
        """Seconds since the server started or was last reset (the reports' clock)."""
        return time.monotonic() - self._clock_start
