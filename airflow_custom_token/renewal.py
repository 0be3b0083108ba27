"""Which request renews a token: the refresh request (with the stored refresh token, or the seed), the
token request, or the one after the other when a refresh token is refused. Free of I/O.

`TokenSource` asks `plan` for the steps, sends them in order (sync or async: the same plan), tells the plan
when one is refused (`Plan.refused`: a refused refresh token falls back to the token request, or raises
`RefreshRejected`) and completes the token it got (`Plan.completed`: an answer without a new refresh token
keeps the one it was sent, as APIs that do not rotate expect).

Refresh requests are retried only where the server said it did not take them (429, 503): after a
timeout or a reset connection the refresh token may have been used, and a single-use one must not be sent
twice; the next call sends it again, and a refusal then falls back or says how to re-seed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token.account.connected import ConnectedAccount
from airflow_custom_token.errors import TokenRequestError
from airflow_custom_token.token import Token
from airflow_custom_token.wire import HttpRequest

log = logging.getLogger(__name__)

REFUSED = frozenset({400, 401})  # a refresh request answered so: the refresh token is rejected
NOT_TAKEN = frozenset({429, 503})  # a refresh request answered so was not processed: sent again


class RefreshRejected(TokenRequestError):
    """The token endpoint refused the refresh token, and the connection has no other way to a token.

    `rejected`: the cache entry whose refresh token it was (None: the seed); `TokenSource` drops it from
    every tier, so that the next renewal does not send it again.
    """

    rejected: Token | None = None


@dataclass(frozen=True)
class Step:
    """One request of a plan; `consumes`: the refresh token it sends, filled into its `{refresh_token}`
    when it is sent (None: the token request)."""

    request: HttpRequest
    consumes: str | None = field(default=None, repr=False)


@dataclass
class Plan:
    account: ConnectedAccount
    steps: list[Step]
    previous: Token | None = None
    now: float = 0.0

    def refused(self, step: Step, error: TokenRequestError) -> None:
        """`step` failed with `error`: raise it, or (a refused refresh token) go on to the next step."""
        if step.consumes is None or error.status not in REFUSED:
            raise error
        where = f"the connection {self.account.conn_id!r}"
        if step is self.steps[-1]:
            rejected = RefreshRejected(
                f"{error}: the refresh token was rejected (it is not quoted) and {where} has no token "
                "request without one; set a new initial_refresh_token on it to re-seed",
                status=error.status,
            )
            rejected.rejected = self.previous
            raise rejected from None
        log.warning(
            "Custom token: the refresh request of %s was refused (%s); the refresh token is discarded and "
            "a new token requested",
            self.account.describe(),
            error.status,
        )

    def completed(self, step: Step, token: Token) -> Token:
        """The token `step` got: without a new refresh token, it keeps the one `step` sent."""
        if step.consumes is None or token.refresh is not None:
            return token
        previous = self.previous
        if previous is not None and previous.refresh == step.consumes:
            expires = previous.refresh_expires_at
        else:  # the seed: its life starts now
            expires = self.now + (self.account.refresh.lifetime if self.account.refresh else 0)
        return dataclasses.replace(token, refresh=step.consumes, refresh_expires_at=expires)


def plan(
    account: ConnectedAccount,
    token_request: HttpRequest,
    refresh_request: HttpRequest | None,
    previous: Token | None,
    now: float,
) -> Plan:
    """The steps that renew the token of `account`, whose caches last held `previous` (or nothing).

    :param refresh_request: the account's refresh request, `{refresh_token}` open (filled when it is
        sent: `Step.consumes`).
    """
    spec = account.refresh
    if spec is None or refresh_request is None:
        return Plan(account, [Step(token_request)], previous, now)
    refresh = previous.refresh_usable(now) if previous is not None else None
    stored = previous is not None and previous.refresh is not None
    if refresh is None and not stored:
        refresh = spec.seed  # nothing stored yet: the one-time consent's refresh token
    steps = [Step(refresh_request, refresh)] if refresh else []
    if spec.full_request:
        steps.append(Step(token_request))
    if not steps:
        expired = RefreshRejected(
            f"No usable refresh token for {account.describe()}: the stored one expired, and the connection "
            "has no token request without one; set a new initial_refresh_token on it to re-seed"
        )
        expired.rejected = previous
        raise expired
    return Plan(account, steps, previous, now)


def retry_refresh(state: Any) -> bool:
    """tenacity's `retry` for a refresh request: only a 429 or a 503 (the request was not taken)."""
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return False
    error = outcome.exception()
    return isinstance(error, TokenRequestError) and error.status in NOT_TAKEN
