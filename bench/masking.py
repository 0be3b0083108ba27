"""Airflow's secrets masker over thousands of token refreshes in one process (issue 15, item 10).

Each refresh is what a trigger does when its token is rejected: `TokenSource.aget` fetches a new token
from the bench server (aiohttp, on the event loop) and registers it with the masker, then the token is
discarded. A ticker task sleeps 10 ms in a loop and records how late it wakes: the loop's lag. At the
end: the masker's size (patterns), how many of the issued tokens it still holds, and what registering
one more token costs (sync, the median of a few).

`behaviour`:

- `bounded` (this release): each token is registered per account (`redaction.register_token`); the
  masker keeps the live token and the last `redaction.MASKER_OLD_TOKENS` superseded ones, compiles its
  regex once per registration, and, from async code, in a worker thread;
- `legacy` (0.1): every form of every token told to Airflow's masker with `mask_secret` /
  `amask_secret`, each a compile of everything held so far, on the event loop, nothing ever removed.

0.1 cannot do 2,000 refreshes in a bench: each of its registrations compiles a regex of every form it
holds, about 1 s at 2,000 tokens, four times per token (hours in all). So the legacy run refreshes
`real` times for real, then is *fast-forwarded*: the masker is given, in one go, the forms of the
tokens the remaining refreshes would have registered (synthetic tokens of the server's shape: what
0.1's masker holds after them), and the last `tail` refreshes are measured there. The bounded run does
every refresh for real; its last `tail` refreshes are measured the same way.
"""

from __future__ import annotations

import asyncio
import gc
import re
import secrets
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.common import CONN_ID, ScenarioConfig, percentile, scenario_main
from bench.deferrable import CallbackTimer

TICK = 0.010
REGISTRATIONS = 3  # one more token registered this many times at the end (sync), median reported
LOOP_FIGURES = (
    "max_lag_ms",
    "p99_lag_ms",
    "tail_max_lag_ms",
    "max_lag_outside_full_gc_ms",
    "full_gcs",
    "longest_full_gc_ms",
    "longest_callback_ms",
    "longest_callback",
)


# ---------------------------------------------------------------------------------------------------
# 0.1's registration, for the comparison


def use_legacy_registration() -> None:
    """Make the token source register tokens as 0.1 did: each new form told to Airflow's masker."""
    from airflow_custom_token import compat, redaction

    def register_token(slot: str, token: str, values: Sequence[str]) -> None:
        for form in redaction.masker_forms(redaction._remember(values, permanent=False)):
            compat.mask_secret(form)

    async def aregister_token(slot: str, token: str, values: Sequence[str]) -> None:
        for form in redaction.masker_forms(redaction._remember(values, permanent=False)):
            await compat.amask_secret(form)  # 3.3: Airflow's add_mask, on the event loop

    redaction.register_token = register_token  # type: ignore[assignment]
    redaction.aregister_token = aregister_token  # type: ignore[assignment]


def fast_forward(count: int, account_secrets: Sequence[str]) -> list[str]:
    """What 0.1's masker (and registry) hold after `count` more refreshes, given in one compile."""
    from airflow_custom_token import compat, redaction

    tokens = ["tok_" + secrets.token_urlsafe(24) for _ in range(count)]
    values = [v for t in tokens for v in (t, f"Bearer {t}")]
    redaction._remember([*values, *account_secrets], permanent=False)
    compat.update_masker(redaction.masker_forms(values))
    return tokens


# ---------------------------------------------------------------------------------------------------
# The run


class FullCollections:
    """Times the full (oldest generation) garbage collections: each stops every thread, the loop too,
    for as long as it walks the heap (over 100 ms with Airflow imported), whoever's allocation set it off."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0

    def __call__(self, stage: str, info: Mapping[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if stage == "start":
            self._start = time.perf_counter()
        else:
            self.spans.append((self._start, time.perf_counter()))

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def during(self, start: float, end: float) -> bool:
        return any(s < end and e > start for s, e in self.spans)


async def refreshes(config: Mapping[str, Any]) -> dict[str, Any]:
    from airflow_custom_token.aio import AsyncCustomTokenClient
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    total, real, tail = int(config["refreshes"]), int(config["real"]), int(config["tail"])
    hook = CustomTokenHook(CONN_ID)
    source = hook.source  # the account built, its secrets registered, before the clock starts
    lags: list[tuple[str, float, float]] = []  # (phase, tick started, lag)
    phase = {"name": "start"}
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append((phase["name"], before, time.perf_counter() - before - TICK))

    issued: list[str] = []
    synthetic: list[str] = []
    async with AsyncCustomTokenClient(source) as client:
        await client.get_token()  # aiohttp imported, one token: the process as a running triggerer
        await source.adiscard(None)
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(3 * TICK)
        began = time.perf_counter()
        callbacks = CallbackTimer().__enter__()
        collections = FullCollections().__enter__()
        filled = False
        for number in range(total):
            if real <= number < total - tail:  # fast-forwarded (legacy): given at once, not measured
                if not filled:
                    phase["name"] = "fill"
                    synthetic = await asyncio.to_thread(
                        fast_forward, total - tail - real, source.account.secrets
                    )
                    filled = True
                    await asyncio.sleep(3 * TICK)
                continue
            phase["name"] = "tail" if number >= total - tail else "real"
            token = await source.aget(client._send_token)
            issued.append(token.value)
            await source.adiscard(token)
        elapsed = time.perf_counter() - began
        callbacks.__exit__()
        collections.__exit__()
        done.set()
        await ticking
        live = await source.aget(client._send_token)  # the live token, after the ticker stopped
        issued.append(live.value)

    measured = [(at, lag) for name, at, lag in lags if name in ("real", "tail")]
    values = [lag for _, lag in measured]
    tail_lags = [lag for name, _, lag in lags if name == "tail"]
    outside = [lag for at, lag in measured if not collections.during(at, at + TICK + lag)]
    pauses = [
        end - start
        for start, end in collections.spans
        if any(s <= start < s + TICK + lag for s, lag in measured)
    ]
    return {
        "hook": hook,
        "issued": issued,
        "synthetic": synthetic,
        "live": live.value,
        "elapsed_s": elapsed,
        "max_lag_ms": max(values, default=0.0) * 1e3,
        "p99_lag_ms": percentile(values, 0.99) * 1e3 if values else 0.0,
        "max_lag_outside_full_gc_ms": max(outside, default=0.0) * 1e3,
        "full_gcs": len(pauses),
        "longest_full_gc_ms": max(pauses, default=0.0) * 1e3,
        "tail_max_lag_ms": max(tail_lags, default=0.0) * 1e3,
        "longest_callback_ms": callbacks.longest * 1e3,
        "longest_callback": callbacks.where,
    }


def registration_cost(hook: Any) -> list[float]:
    """Register one more token (sync) `REGISTRATIONS` times: milliseconds each."""
    from airflow_custom_token import redaction

    source = hook.source
    costs = []
    for _ in range(REGISTRATIONS):
        token = "tok_" + secrets.token_urlsafe(24)
        values = (token, f"Bearer {token}", *source.account.secrets)
        start = time.perf_counter()
        redaction.register_token(source.key, token, values)
        costs.append((time.perf_counter() - start) * 1e3)
    return costs


def run(config: ScenarioConfig) -> dict[str, Any]:
    from airflow_custom_token import compat, redaction

    behaviour = str(config.options["behaviour"])
    total = int(config.options["refreshes"])
    tail = min(int(config.options["tail"]), total)
    real = total if behaviour == "bounded" else min(int(config.options.get("real", total)), total - tail)
    if behaviour == "legacy":
        use_legacy_registration()
    elif behaviour != "bounded":
        raise ValueError(f"behaviour: bounded or legacy, not {behaviour!r}")
    started = time.perf_counter()
    result = asyncio.run(refreshes({"refreshes": total, "real": real, "tail": tail}))
    masker = compat.local_masker()
    patterns = set() if masker is None else set(masker.patterns)
    held = [t for t in [*result["issued"], *result["synthetic"]] if re.escape(t) in patterns]
    live_masked = re.escape(result["live"]) in patterns
    costs = registration_cost(result["hook"])
    return {
        "behaviour": behaviour,
        "refreshes": total,
        "real_refreshes": real if behaviour == "legacy" else total,
        "fast_forwarded": total - tail - real if behaviour == "legacy" and real < total - tail else 0,
        "tail": tail,
        "masker_old_tokens": redaction.MASKER_OLD_TOKENS if behaviour == "bounded" else None,
        "elapsed_s": result["elapsed_s"],
        "wall_s": time.perf_counter() - started,
        **{key: result[key] for key in LOOP_FIGURES},
        "masker_patterns": compat.masker_size(),
        "tokens_in_masker": len(held),
        "live_token_masked": live_masked,
        "known": len(redaction.known()),
        "registration_ms": statistics.median(costs),
        "registration_ms_each": costs,
    }


# ---------------------------------------------------------------------------------------------------
# In the orchestrator's report (no Airflow imported there)


def targets(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's: the loop never waits for the masker; the masker holds a bounded number of tokens."""
    found = {row["behaviour"]: row for row in rows}
    bounded = found.get("bounded")
    if not bounded:
        return []
    legacy = found.get("legacy")
    lag = (
        f"max {bounded['max_lag_ms']:.0f} ms ({bounded['max_lag_outside_full_gc_ms']:.0f} outside "
        f"{bounded['full_gcs']} full GC), longest callback {bounded['longest_callback_ms']:.0f} ms"
    )
    if legacy:
        lag += f"; 0.1 at the end: {legacy['tail_max_lag_ms']:.0f} ms"
    held = f"{bounded['tokens_in_masker']} tokens, {bounded['masker_patterns']} patterns"
    if legacy:
        held += f"; 0.1: {legacy['tokens_in_masker']}, {legacy['masker_patterns']}"
    return [
        {
            "name": f"Masking: {bounded['refreshes']} async token refreshes, event loop lag",
            "target": "max < 50 ms (outside full garbage collections)",
            "measured": lag,
            "met": bounded["max_lag_outside_full_gc_ms"] < 50 and bounded["longest_callback_ms"] < 50,
        },
        {
            "name": f"Masking: masker after {bounded['refreshes']} refreshes",
            "target": f"at most {bounded['masker_old_tokens'] + 1} of the tokens, the live one masked",
            "measured": held,
            "met": bounded["tokens_in_masker"] <= bounded["masker_old_tokens"] + 1
            and bool(bounded["live_token_masked"]),
        },
    ]


def render(rows: Sequence[Mapping[str, Any]], table: Callable[..., str]) -> list[str]:
    """Section 7 of the printed report (`table` is `bench.report.table`)."""
    if not rows:
        return []
    first = rows[0]
    out = [
        f"7. Masking: {first['refreshes']} token refreshes in one process (TokenSource.aget + discard, "
        "aiohttp, bench server), Airflow's masker at the end"
    ]
    body = []
    for r in rows:
        how = "this release" if r["behaviour"] == "bounded" else "0.1"
        if r["fast_forwarded"]:
            how += f": {r['real_refreshes']} real, {r['fast_forwarded']} fast-forwarded, {r['tail']} real"
        body.append(
            [
                how,
                f"{r['max_lag_ms']:.0f}",
                f"{r['max_lag_outside_full_gc_ms']:.0f}",
                f"{r['full_gcs']} / {r['longest_full_gc_ms']:.0f}",
                f"{r['tail_max_lag_ms']:.0f}",
                f"{r['longest_callback_ms']:.0f}",
                r["masker_patterns"],
                r["tokens_in_masker"],
                "yes" if r["live_token_masked"] else "NO",
                f"{r['registration_ms']:.1f}",
                r["known"],
                f"{r['wall_s']:.0f}",
            ]
        )
    headers = [
        "run",
        "max lag ms",
        "outside full GC",
        "full GCs / ms",
        f"last {first['tail']}: max lag",
        "longest callback ms",
        "masker patterns",
        "tokens in masker",
        "live masked",
        "register 1 more ms",
        "known",
        "run s",
    ]
    out.append(table(headers, body, "lrrrrrrrlrrr"))
    out += [
        "   lag: a 10 ms ticker during the refreshes done for real; last N: the last refreshes (for 0.1,",
        "   its masker as it is after all of them). Full GC: a collection of the oldest generation stops",
        "   every thread. register 1 more: one more token (sync). known: the provider's own registry.",
        "",
    ]
    return out


if __name__ == "__main__":
    raise SystemExit(scenario_main(run))
