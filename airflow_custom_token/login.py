"""Multi-step logins, run: the steps of `access_steps` sent in order before the token request, each
step's outputs filled into the later requests, the cookies each answer sets carried to the later
requests on the same host. Free of I/O: `run` is a generator that yields each request to send (with the
secrets to register before it is sent) and receives its answer; `TokenSource` drives it, sync or async,
as one attempt of the token request.

Cookies are kept for one login only (never cached: the next login starts without them), by host name,
as a browser keeps them for a host: sent to every later step and to the token request on that host,
never to another host; their attributes (Path, Domain, Expires) are not read. A step's answer is read
whatever its status below 400 (a 3xx is not followed: its `Location` is readable as
`header:Location`); 400 and above fail the login, naming the step by its position and endpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_custom_token import templating
from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.errors import TokenResponseError
from airflow_custom_token.token import TokenLimits, read_step_outputs, status_error
from airflow_custom_token.wire import HttpRequest, HttpResponse

#: What the flows yield: a request to send, and the secrets to register before sending it.
Outgoing = tuple[HttpRequest, tuple[str, ...]]


@dataclass
class Login:
    """What a login produced: the outputs read (by name) and the cookies received (by host name)."""

    values: dict[str, str] = field(default_factory=dict, repr=False)
    cookies: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """Every value the login read or received: as secret as the token."""
        received = [v for jar in self.cookies.values() for v in jar.values()]
        return tuple(dict.fromkeys(v for v in (*self.values.values(), *received) if v))

    def prepare(self, request: HttpRequest, late: Mapping[str, str]) -> HttpRequest:
        """`request` with the late values and the outputs filled, and the cookies of its host added."""
        request = templating.fill_late(request, {**late, **self.values})
        jar = self.cookies.get(_host(request.url))
        if not jar:
            return request
        sent = "; ".join(f"{name}={value}" for name, value in jar.items())
        headers = [(n, v) for n, v in request.headers if n.lower() != "cookie"]
        own = [v for n, v in request.headers if n.lower() == "cookie"]
        headers.append(("Cookie", "; ".join([*own, sent])))
        redact = (*request.redact, *(v for v in jar.values() if v))
        return dataclasses.replace(request, headers=tuple(headers), redact=redact)


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def run(
    account: ConnectedAccount, late: Mapping[str, str], limits: TokenLimits
) -> Generator[Outgoing, HttpResponse, Login]:
    """Send the account's login steps in order; return what they produced (`Login`).

    Raises `TokenRequestError` (retryable for 408/425/429/5xx) for a step answered 400 or more, and
    `TokenResponseError` for an output its answer lacks; both name the step, never a secret.
    """
    login = Login()
    for step in account.steps:
        request = login.prepare(step.request, late)
        fresh = tuple(dict.fromkeys(v for v in (*late.values(), *login.secrets()) if v))
        response = yield request, fresh
        secrets = (*account.secrets, *fresh)
        where = step.describe(secrets)
        if response.status >= 400:
            raise status_error(f"Login failed: {where} answered", response, secrets)
        key = f"access_steps[{step.position - 1}].outputs"
        try:
            found = read_step_outputs(account, response, step.outputs, limits, key, where)
        except TokenResponseError as exc:
            raise TokenResponseError(f"Login failed: {where}: {exc}") from None
        login.values.update(found)
        if response.cookies:
            login.cookies.setdefault(_host(request.url), {}).update(response.cookies)
    return login
