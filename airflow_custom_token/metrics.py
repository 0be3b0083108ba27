"""Metrics in Airflow's own metrics system: the `Stats` client that `[metrics]` configures (StatsD or
OpenTelemetry), on every release (`compat.stats_client`).

Every name starts with `custom_token.` (after Airflow's `[metrics] statsd_prefix`, `airflow` by default)
and ends with the integration key (`integration_key`, letters and digits), and carries the tag
`integration` too (for StatsD with tags, and OpenTelemetry). Never a value, a connection secret or an
account parameter: accounts of one integration add up.

- `custom_token.token_request.ok.<key>`, `.failed.<key>` (counters): each token or refresh request
  sent (login steps included), by outcome; `custom_token.token_request.duration.<key>` (timer, ms);
- `custom_token.cache.hit.<tier>.<key>` (tier `process`, `host` or `shared`), `custom_token.cache.miss.<key>`
  (no tier had a fresh token: this process renews it);
- `custom_token.refresh.<reason>.<key>`: a renewal and why: `expiry`, `status` (a `refresh_on`
  answer), `invalidation`; and `rotation`: an answer replaced the refresh token it was sent;
- `custom_token.refresh_rejected.<key>`: the token endpoint refused a refresh token;
- `custom_token.api_retry.<key>`: an API request sent again (`request_retries`).

Metrics off (`statsd_on` and `otel_on` false, the default) cost one check of a flag per event. Process
cache hits, one per API call, are counted in memory and sent at most once a second (and at exit).
Sending never fails a call: an error of the metrics client is logged at DEBUG.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from airflow_custom_token import compat

log = logging.getLogger(__name__)

PREFIX = "custom_token"
TIERS = ("process", "host", "shared")
REASONS = ("expiry", "status", "invalidation", "rotation")
FLUSH_EVERY = 1.0  # seconds between two sends of the process cache's hit counts

_OFF: Any = object()
_client: Any = None  # the metrics client once resolved, `_OFF` when metrics are off
_pending: dict[str, int] = {}  # integration -> process-cache hits not sent yet
_flushed = 0.0
_guard = threading.Lock()


def enabled() -> bool:
    """Are metrics on in this process (`[metrics]`)? Resolved once, on first use."""
    global _client
    if _client is None:
        try:
            _client = compat.stats_client() or _OFF
        except Exception as exc:  # an Airflow without a metrics backend: metrics off, said once
            log.warning("Custom token: metrics are off, Airflow's metrics client failed: %s", exc)
            _client = _OFF
    return _client is not _OFF


def integration(key: str) -> str:
    """The integration key of an account's cache key (`<integration_key>-<digest>`)."""
    return key.split("-", 1)[0]


def incr(name: str, key: str, count: int = 1) -> None:
    """Count `custom_token.<name>.<integration>` (tagged `integration`)."""
    if not enabled():
        return
    name_of = integration(key)
    try:
        _client.incr(f"{PREFIX}.{name}.{name_of}", count, tags={"integration": name_of})
    except Exception:
        log.debug("Custom token: metric %s not sent", name, exc_info=True)


def timing(name: str, key: str, seconds: float) -> None:
    """Time `custom_token.<name>.<integration>` in milliseconds."""
    if not enabled():
        return
    name_of = integration(key)
    try:
        _client.timing(f"{PREFIX}.{name}.{name_of}", seconds * 1000.0, tags={"integration": name_of})
    except Exception:
        log.debug("Custom token: metric %s not sent", name, exc_info=True)


def process_hit(key: str) -> None:
    """A process-cache hit: counted here, sent with the others at most once a second."""
    global _flushed
    name_of = integration(key)
    with _guard:
        _pending[name_of] = _pending.get(name_of, 0) + 1
        now = time.monotonic()
        if now - _flushed < FLUSH_EVERY:
            return
        _flushed = now
    flush()


def flush() -> None:
    """Send the process-cache hits counted so far."""
    with _guard:
        pending = dict(_pending)
        _pending.clear()
    for name_of, count in pending.items():
        incr("cache.hit.process", name_of, count)


def reset() -> None:
    """Forget the resolved client and the counts (tests, after `[metrics]` changed)."""
    global _client, _flushed
    with _guard:
        _client, _flushed = None, 0.0
        _pending.clear()


atexit.register(flush)
