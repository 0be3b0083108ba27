"""Deferrable mode: many sensor triggers waiting at once in one event loop.

`triggers` copies of `CustomTokenHttpSensorTrigger` poll `GET /api/v1/reports/<name>?ready_after=K`
(404 "not yet" until K seconds after the server's clock was reset, then 200) every `poke_interval`
seconds, all in one event loop, as in a triggerer. When the trigger class is not importable, the same
pattern is driven with `AsyncCustomTokenClient` directly (`driver: client`). With `driver: airflow`,
the same number of the http provider's `HttpSensorTrigger` poll the same API over a plain `http`
connection with a fixed `Authorization` header (no token work): Airflow's own figure, for comparison.

Client CPU per poke is the process's CPU time (every thread: the loop's, aiohttp's resolver, the worker
threads of `asyncio.to_thread`) while the triggers run, divided by the API requests the server saw.

A ticker task sleeps 10 ms in a loop and records how late it wakes up: the event loop's lag. Anything
that blocks the loop (file locks, imports, CPU-heavy work on the loop thread) shows up there. It also
samples the process's resident memory: the peak while the triggers wait, less the memory before they
started, divided by their number, is the memory per waiting trigger (imports the run does on its own,
such as aiohttp when it is not preimported, count too).

When the environment names a Redis connection in `[custom_token] shared_cache_conn_id` (the shared-cache
scenario of bench.run does, with its own redis-server), the triggers read the token through the shared
cache's async client; the result says so (`shared_cache`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from types import CodeType, FrameType
from typing import Any

from bench.common import CONN_ID, HTTP_CONN_ID, ScenarioConfig, median, percentile, scenario_main

TICK = 0.010
STALL = 0.020  # the loop is "stalled" when the ticker is this much later than its 10 ms
SAMPLE = 0.002
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's resident memory (Linux: /proc/self/statm), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class StallSampler(threading.Thread):
    """Samples the event loop thread's stack while the loop is stalled: what blocks it, and for how long.

    The ticker stamps `heartbeat` each time it wakes; when the stamp is older than the tick plus
    `STALL`, this thread records where the loop thread is (a sampling profiler of the stalls only).
    """

    def __init__(self, loop_thread: int) -> None:
        super().__init__(daemon=True)
        self.loop_thread = loop_thread
        self.heartbeat = time.perf_counter()
        self.seconds: dict[str, float] = {}  # where -> seconds stalled there
        self.stop = threading.Event()

    def run(self) -> None:
        last = time.perf_counter()
        while not self.stop.wait(SAMPLE):
            now = time.perf_counter()
            # the sampler needs the GIL too, so samples are uneven: weigh each by the time it stands for
            weight, last = min(now - last, 0.05), now
            if now - self.heartbeat > TICK + STALL:
                frame = sys._current_frames().get(self.loop_thread)
                if frame is not None:
                    where = describe(frame)
                    self.seconds[where] = self.seconds.get(where, 0.0) + weight

    def total_ms(self) -> float:
        return sum(self.seconds.values()) * 1e3

    def top(self, limit: int = 8) -> list[dict[str, Any]]:
        top = sorted(self.seconds.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [{"where": where, "ms": round(s * 1e3, 1)} for where, s in top]


def describe(frame: FrameType) -> str:
    """The deepest frame of this project, and what it is doing below (an import, or the innermost call)."""
    frames: list[FrameType] = []
    current: FrameType | None = frame
    while current is not None:
        frames.append(current)
        current = current.f_back
    frames.reverse()  # outermost first
    if frames[-1].f_code is CallbackTimer.timed_code:
        return "asyncio callback with no Python frame (C code: a task step, a transport callback)"
    ours = [f for f in frames if "airflow_custom_token" in f.f_code.co_filename]
    anchor = ours[-1] if ours else frames[-1]
    label = f"{_short(anchor.f_code.co_filename)}:{anchor.f_lineno} {anchor.f_code.co_name}"
    below = frames[frames.index(anchor) + 1 :]
    imports = [f.f_locals.get("name") for f in below if f.f_code.co_name == "_find_and_load"]
    if imports:
        return f"{label} -> import {imports[0]}"
    if below:
        inner = below[-1]
        return f"{label} -> {_short(inner.f_code.co_filename)}:{inner.f_lineno} {inner.f_code.co_name}"
    return label


class CallbackTimer:
    """Times every callback the event loop runs (`asyncio.Handle._run`): the longest is the worst block.

    The ticker's lag is how long any ready callback waits (every callback ahead of it in the loop's
    queue, and any time the OS gives the CPU to another process); the longest single callback is how
    long one piece of code held the loop. Each is also measured in the loop thread's CPU time, which
    a busy machine does not inflate.
    """

    timed_code: CodeType | None = None  # the wrapper's code: a stack ending there is in C code

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_cpu = 0.0
        self.where = ""
        self.where_cpu = ""
        self.over_50ms = 0
        self._original = asyncio.events.Handle._run

    def __enter__(self) -> CallbackTimer:
        original = self._original
        timer = self

        def timed(handle: asyncio.events.Handle) -> None:
            start, start_cpu = time.perf_counter(), time.thread_time()
            original(handle)
            took, took_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
            if took > 0.05:
                timer.over_50ms += 1
            if took > timer.longest:
                timer.longest, timer.where = took, _callback_name(handle)
            if took_cpu > timer.longest_cpu:
                timer.longest_cpu, timer.where_cpu = took_cpu, _callback_name(handle)

        CallbackTimer.timed_code = timed.__code__
        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


def _callback_name(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return getattr(coro, "__qualname__", repr(coro))
    return getattr(callback, "__qualname__", repr(callback))


def _short(filename: str) -> str:
    """A file name from its package on (site-packages, src, or the standard library)."""
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", filename)


def _control(server_url: str, path: str, method: str = "GET") -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        server_url + path, data=b"{}" if method == "POST" else None, method=method
    )
    with opener.open(request, timeout=30) as answer:
        return json.loads(answer.read())


def trigger_waiters(
    count: int, ready_after: float, poke_interval: float
) -> list[Callable[[], Awaitable[Any]]]:
    """One waiter per sensor trigger: runs the trigger until its first event."""
    from airflow_custom_token.triggers.http import CustomTokenHttpSensorTrigger

    def waiter(i: int) -> Callable[[], Awaitable[Any]]:
        trigger = CustomTokenHttpSensorTrigger(
            CONN_ID,
            endpoint=f"/api/v1/reports/r{i}",
            query_params={"ready_after": ready_after},
            poke_interval=poke_interval,
        )

        async def wait() -> Any:
            async for event in trigger.run():
                return event.payload
            return None

        return wait

    return [waiter(i) for i in range(count)]


def airflow_waiters(
    count: int, ready_after: float, poke_interval: float, token: str
) -> list[Callable[[], Awaitable[Any]]]:
    """One waiter per `HttpSensorTrigger` of the http provider (a fixed bearer header, no token work)."""
    from airflow.providers.http.triggers.http import HttpSensorTrigger

    header = {"Authorization": f"Bearer {token}"}

    def waiter(i: int) -> Callable[[], Awaitable[Any]]:
        trigger = HttpSensorTrigger(
            endpoint=f"/api/v1/reports/r{i}?ready_after={ready_after}",
            http_conn_id=HTTP_CONN_ID,
            headers=header,
            poke_interval=poke_interval,
        )

        async def wait() -> Any:
            async for event in trigger.run():  # it fires with True on the first answer that is not 404
                return {"status": "success", "response": {"status": 200}} if event.payload is True else None
            return None

        return wait

    return [waiter(i) for i in range(count)]


def client_waiters(
    count: int, ready_after: float, poke_interval: float
) -> list[Callable[[], Awaitable[Any]]]:
    """The same pattern with `AsyncCustomTokenClient` (before the trigger class exists)."""
    from airflow_custom_token.aio import AsyncCustomTokenClient
    from airflow_custom_token.hooks.custom_token import CustomTokenHook
    from airflow_custom_token.settings import load_settings
    from airflow_custom_token.source import TokenSource

    account = CustomTokenHook(CONN_ID).account

    def waiter(i: int) -> Callable[[], Awaitable[Any]]:
        async def wait() -> Any:
            async with AsyncCustomTokenClient(TokenSource(account, load_settings())) as client:
                while True:
                    response = await client.request(
                        "GET", f"/api/v1/reports/r{i}", params={"ready_after": ready_after}
                    )
                    if response.status != 404:
                        return {"status": "success", "response": {"status": response.status}}
                    await asyncio.sleep(poke_interval)

        return wait

    return [waiter(i) for i in range(count)]


async def measure(waiters: list[Callable[[], Awaitable[Any]]], stagger: float = 0.0) -> dict[str, Any]:
    """Run every waiter in one loop; with `stagger`, waiter i starts i * stagger / len(waiters) s late
    (triggers arriving one after another, as tasks defer), else all start at once (a triggerer that
    restarts and picks up all of them)."""
    lags: list[tuple[float, float]] = []  # (seconds since start, lag)
    busy: list[float] = []  # the loop thread's CPU time over each tick, less nothing: work done meanwhile
    done = asyncio.Event()
    start = time.perf_counter()
    rss = {"peak": 0}

    async def ticker() -> None:
        ticks = 0
        while not done.is_set():
            before, before_cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            sampler.heartbeat = now
            lags.append((before - start, now - before - TICK))
            busy.append(time.thread_time() - before_cpu)
            ticks += 1
            if ticks % 5 == 0:  # about every 50 ms
                rss["peak"] = max(rss["peak"], rss_bytes())

    gc.collect()  # every run starts from a collected heap (as bench.clients' rounds do)
    sampler = StallSampler(threading.get_ident())
    sampler.start()
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # the ticker is running before the first trigger starts
    rss_before = rss["peak"] = rss_bytes()
    began, began_cpu, began_process = time.perf_counter(), time.thread_time(), time.process_time()
    with CallbackTimer() as callbacks:
        events = await asyncio.gather(
            *(_after(i * stagger / len(waiters), wait) for i, wait in enumerate(waiters)),
            return_exceptions=True,
        )
    elapsed, loop_cpu = time.perf_counter() - began, time.thread_time() - began_cpu
    process_cpu = time.process_time() - began_process
    done.set()
    await tick
    sampler.stop.set()
    sampler.join()
    worst_at, worst = max(lags, key=lambda item: item[1])
    values = [lag for _, lag in lags]
    outcomes: dict[str, int] = {}
    for event in events:
        if isinstance(event, BaseException):
            key = f"exception: {type(event).__name__}: {event}"[:200]
        elif isinstance(event, dict) and event.get("status") == "success":
            key = f"success {event['response']['status']}"
        else:
            key = f"error: {event.get('message') if isinstance(event, dict) else event}"[:200]
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "elapsed_s": elapsed,
        "loop_cpu_s": loop_cpu,
        "process_cpu_s": process_cpu,
        "max_lag_ms": worst * 1e3,
        "max_lag_at_s": worst_at,
        "p99_lag_ms": percentile(values, 0.99) * 1e3,
        "median_lag_ms": median(values) * 1e3,
        "ticks": len(values),
        "max_lag_first_second_ms": max((lag for at, lag in lags if at < 1.0), default=0.0) * 1e3,
        "max_lag_after_first_second_ms": max((lag for at, lag in lags if at >= 1.0), default=0.0) * 1e3,
        "max_busy_tick_cpu_ms": max(busy, default=0.0) * 1e3,
        "longest_callback_ms": callbacks.longest * 1e3,
        "longest_callback": callbacks.where,
        "longest_callback_cpu_ms": callbacks.longest_cpu * 1e3,
        "longest_callback_cpu": callbacks.where_cpu,
        "callbacks_over_50ms": callbacks.over_50ms,
        "stalled_ms": sampler.total_ms(),
        "rss_before_mib": rss_before / 2**20,
        "rss_peak_mib": rss["peak"] / 2**20,
        "memory_per_trigger_kib": (rss["peak"] - rss_before) / max(1, len(waiters)) / 1024,
        "stalls": sampler.top(),
        "outcomes": outcomes,
    }


async def _after(delay: float, wait: Callable[[], Awaitable[Any]]) -> Any:
    if delay:
        await asyncio.sleep(delay)
    return await wait()


def run(config: ScenarioConfig) -> dict[str, Any]:
    count = int(config.options["triggers"])
    ready_after = float(config.options["ready_after"])
    poke_interval = float(config.options["poke_interval"])
    driver = str(config.options.get("driver", "auto"))
    for module in config.options.get("preimport", []):
        __import__(module)
    if driver == "auto":
        try:
            import airflow_custom_token.triggers.http as triggers

            driver = "trigger" if hasattr(triggers, "CustomTokenHttpSensorTrigger") else "client"
        except ImportError:
            driver = "client"
    if driver == "airflow":
        from bench.servers import fetch_token

        waiters = airflow_waiters(count, ready_after, poke_interval, fetch_token(config.server_url))
    else:
        build = trigger_waiters if driver == "trigger" else client_waiters
        waiters = build(count, ready_after, poke_interval)
    _control(config.server_url, "/_control/reset", "POST")  # starts the reports' clock
    stagger = float(config.options.get("stagger", 0.0))
    result = asyncio.run(measure(waiters, stagger))
    stats = _control(config.server_url, "/_control/stats")
    shared = os.environ.get("AIRFLOW__CUSTOM_TOKEN__SHARED_CACHE_CONN_ID", "")
    return {
        "driver": driver,
        "shared_cache": bool(shared),
        "triggers": count,
        "ready_after_s": ready_after,
        "poke_interval_s": poke_interval,
        "preimported": list(config.options.get("preimport", [])),
        "stagger_s": stagger,
        **result,
        "token_requests": stats["token_requests"],
        "api_requests": stats["api_requests"],
        "loop_cpu_per_api_request_us": result["loop_cpu_s"] / max(1, stats["api_requests"]) * 1e6,
        "cpu_per_poke_us": result["process_cpu_s"] / max(1, stats["api_requests"]) * 1e6,
        "rejected": stats["rejected"],
    }


if __name__ == "__main__":
    raise SystemExit(scenario_main(run))
