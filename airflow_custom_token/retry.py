"""The retry policy (one definition, for token requests and API retries) and `Retry-After`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import tenacity

from airflow_custom_token.errors import (
    TokenRequestError,
)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110: delta seconds or an HTTP date).

    Delta seconds are ASCII digits only (`str.isdigit()` also accepts `²` or `٣`, which `float` refuses);
    anything that is neither counts as absent, so an odd header never ends a retry loop with an error.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    wait_base: float = 0.5
    wait_max: float = 30.0
    retry_after_max: float = 60.0

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Exponential backoff with full jitter; a Retry-After is honoured up to its cap."""
        retry_after = error.retry_after if isinstance(error, TokenRequestError) else None
        return self.delay(attempt, retry_after)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `attempt` (from 1): Retry-After up to its cap, else backoff."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        ceiling = min(self.wait_max, self.wait_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def tenacity_options(self) -> dict[str, Any]:
        """Keyword arguments for `tenacity.Retrying` / `AsyncRetrying`."""

        def should_retry(state: tenacity.RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            error = outcome.exception()
            return isinstance(error, TokenRequestError) and error.retryable

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome and state.outcome.failed else None
            return self.wait(state.attempt_number, error)

        return {
            "stop": tenacity.stop_after_attempt(self.retries + 1),
            "wait": wait,
            "retry": should_retry,
            "reraise": True,
        }
