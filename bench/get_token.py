"""`CustomTokenHook.get_token()` on warm caches, in µs.

- warm process cache: the token is in this process's memory (median of many batches);
- warm host cache: the process cache is cleared before each call and the encrypted host file is valid
  (median of many calls), with a profile of that path (the functions that cost the most);
- first call in a new process (`first_call` option): a fresh interpreter with a valid host file; the
  hook's account (connection lookup and validation) is built first and timed apart.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from typing import Any

from bench.common import CONN_ID, ScenarioConfig, median, percentile, scenario_main

NOTABLE = ("requests", "urllib3", "tenacity", "aiohttp", "cryptography")


def first_call(preimport_requests: bool) -> dict[str, Any]:
    """The first `get_token()` of a fresh process whose host cache holds a valid token."""
    import sys

    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    if preimport_requests:  # as in a task that uses requests anyway
        import airflow_custom_token.auth  # noqa: F401
    hook = CustomTokenHook(CONN_ID)
    t0 = time.perf_counter()
    _ = hook.account  # connection lookup and validation, timed apart
    before = set(sys.modules)
    t1 = time.perf_counter()
    hook.get_token()
    t2 = time.perf_counter()
    hook.get_token()
    t3 = time.perf_counter()
    imported = sorted(name for name in set(sys.modules) - before if name in NOTABLE)
    return {
        "account_us": (t1 - t0) * 1e6,
        "first_us": (t2 - t1) * 1e6,
        "second_us": (t3 - t2) * 1e6,
        "imported": imported,
    }


def profile_top(profile: cProfile.Profile, calls: int, limit: int = 12) -> list[dict[str, Any]]:
    """The functions with the most own time, per call of the profiled path."""
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.split("site-packages/")[-1].split("/src/")[-1].split("/lib/python3.11/")[-1]
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls_per_call": ncalls / calls,
                "own_us": tottime / calls * 1e6,
                "cumulative_us": cumtime / calls * 1e6,
            }
        )
    rows.sort(key=lambda r: r["own_us"], reverse=True)
    return rows[:limit]


def run(config: ScenarioConfig) -> dict[str, Any]:
    if config.options.get("first_call"):
        return first_call(bool(config.options.get("preimport_requests")))
    from airflow_custom_token.cache import PROCESS_CACHE
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    batches = int(config.options["batches"])
    batch = int(config.options["batch"])
    host_calls = int(config.options["host_calls"])
    hook = CustomTokenHook(CONN_ID)
    token = hook.get_token()  # one token request; writes the host file

    for _ in range(batch):
        hook.get_token()
    process_samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(batch):
            hook.get_token()
        process_samples.append((time.perf_counter_ns() - start) / batch / 1e3)

    host_samples = []
    for _ in range(host_calls):
        PROCESS_CACHE.clear()
        start = time.perf_counter_ns()
        value = hook.get_token()
        host_samples.append((time.perf_counter_ns() - start) / 1e3)
        if value != token:
            raise RuntimeError("the host cache returned another token: a token request happened")

    profile = cProfile.Profile()
    profiled = min(host_calls, 300)
    for _ in range(profiled):
        PROCESS_CACHE.clear()
        profile.enable()
        hook.get_token()
        profile.disable()
    return {
        "process_cache_us": median(process_samples),
        "process_cache_p90_us": percentile(process_samples, 0.9),
        "host_cache_us": median(host_samples),
        "host_cache_p90_us": percentile(host_samples, 0.9),
        "batches": batches,
        "batch": batch,
        "host_calls": host_calls,
        "host_cache_profile": profile_top(profile, profiled),
    }


if __name__ == "__main__":
    raise SystemExit(scenario_main(run))
