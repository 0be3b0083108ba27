"""Per-request cost of an authenticated GET, client by client, against the same server in the same run.

Every client sends `GET /api/v1/whoami` with a valid bearer token and checks the answer is 200. For each
client: a warm-up, then `rounds` rounds of N requests, and the median round reported: wall µs and client
CPU µs (`time.process_time()`: the server runs in its own process) per request, and each client's CPU
against the floor's in the same round (the median of those per-round ratios is what the targets read:
a machine's load moves both alike). Within a round the
clients take turns in blocks of N/10 requests (the order rotating from block to block), so that a burst
of load from elsewhere on the machine falls on every client alike.

A second pass (no timing) counts, per request, the environment lookups requests makes (proxy variables,
`.netrc`) by wrapping its helpers, and a third, in a process with `HTTP_PROXY` pointing at the loopback
bench server (which counts requests in proxy form), checks that the proxy is honoured.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import API_PATH, CONN_ID, HTTP_CONN_ID, ScenarioConfig, median, scenario_main

FLOOR = "requests.Session, fixed header"


@dataclass(frozen=True)
class Client:
    name: str
    call: Callable[[], None]
    uses_env: bool  # does this client read proxy variables / .netrc at all?


def build_clients(server_url: str, token: str) -> list[Client]:
    """The clients, each a zero-argument callable sending one authenticated GET."""
    import http.client
    from urllib.parse import urlsplit

    import requests
    import urllib3
    from airflow.providers.http.hooks.http import HttpHook

    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    url = server_url + API_PATH
    header = {"Authorization": f"Bearer {token}"}

    def expect_200(status: int) -> None:
        if status != 200:
            raise RuntimeError(f"expected 200 from {url}, got {status}")

    floor = requests.Session()
    floor.headers.update(header)

    env_once = requests.Session()
    env_once.headers.update(header)
    env_once.trust_env = False
    env_once.proxies.update(requests.utils.get_environ_proxies(url))

    http_hook = HttpHook(method="GET", http_conn_id=HTTP_CONN_ID)
    hook = CustomTokenHook(CONN_ID)
    session = CustomTokenHook(CONN_ID).get_conn()
    pool = urllib3.PoolManager(maxsize=1)
    parts = urlsplit(server_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    def plain_http() -> None:
        connection.request("GET", API_PATH, headers=header)
        response = connection.getresponse()
        response.read()
        expect_200(response.status)

    return [
        Client(FLOOR, lambda: expect_200(floor.get(url).status_code), True),
        Client("requests.Session, env read once", lambda: expect_200(env_once.get(url).status_code), True),
        Client(
            "HttpHook.run, header passed",
            lambda: expect_200(http_hook.run(API_PATH, headers=header).status_code),
            True,
        ),
        Client("CustomTokenHook.run", lambda: expect_200(hook.run(API_PATH).status_code), True),
        Client("CustomTokenHook.get_conn() session", lambda: expect_200(session.get(url).status_code), True),
        Client(
            "urllib3.PoolManager", lambda: expect_200(pool.request("GET", url, headers=header).status), False
        ),
        Client("http.client, one connection", plain_http, False),
    ]


BLOCKS = 10


def measure(call: Callable[[], None], n: int) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of n calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_round(clients: list[Client], n: int, round_number: int) -> dict[str, tuple[float, float]]:
    """One round: n requests per client in interleaved blocks; (wall µs, CPU µs) per request."""
    totals = {c.name: [0.0, 0.0] for c in clients}
    sizes = [n // BLOCKS + (1 if i < n % BLOCKS else 0) for i in range(BLOCKS)]
    gc.collect()
    for block, size in enumerate(s for s in sizes if s):
        shift = (round_number + block) % len(clients)
        for client in clients[shift:] + clients[:shift]:
            wall, cpu = measure(client.call, size)
            totals[client.name][0] += wall
            totals[client.name][1] += cpu
    return {name: (wall / n * 1e6, cpu / n * 1e6) for name, (wall, cpu) in totals.items()}


def count_env_lookups(clients: list[Client], n: int) -> dict[str, float]:
    """Environment lookups (proxy variables, .netrc) per request, counted by wrapping requests' helpers."""
    import requests.sessions
    import requests.utils

    calls = {"count": 0}
    names = ("get_environ_proxies", "get_netrc_auth", "should_bypass_proxies")
    originals = {(m, name): getattr(m, name) for m in (requests.sessions, requests.utils) for name in names}

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls["count"] += 1
            return original(*args, **kwargs)

        return wrapper

    for (module, name), original in originals.items():
        setattr(module, name, counting(original))
    try:
        out: dict[str, float] = {}
        for client in clients:
            calls["count"] = 0
            for _ in range(n):
                client.call()
            out[client.name] = calls["count"] / n
        return out
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)


def proxy_check(config: ScenarioConfig, token: str) -> dict[str, Any]:
    """With HTTP_PROXY set to the bench server, which clients send their requests through the proxy?"""
    import json
    import urllib.request

    n = 10
    stats_url = config.server_url + "/_control/stats"

    def proxied() -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via the proxy
        with opener.open(stats_url, timeout=30) as answer:
            return int(json.loads(answer.read()).get("proxied", 0))

    out: dict[str, Any] = {"requests": n}
    for client in build_clients(config.server_url, token):
        before = proxied()
        for _ in range(n):
            client.call()
        out[client.name] = proxied() - before
    return out


def run(config: ScenarioConfig) -> dict[str, Any]:
    from bench.servers import fetch_token

    if config.options.get("proxy_check"):
        token = config.options["token"]
        return proxy_check(config, token)

    n = int(config.options["n"])
    rounds = int(config.options["rounds"])
    warmup = int(config.options["warmup"])
    token = fetch_token(config.server_url)
    clients = build_clients(config.server_url, token)
    for client in clients:
        for _ in range(warmup):
            client.call()
    samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in clients}
    for round_number in range(rounds):
        for name, sample in measure_round(clients, n, round_number).items():
            samples[name].append(sample)
    lookups = count_env_lookups(clients, max(10, min(n, 50)))
    rows: list[dict[str, Any]] = []
    for client in clients:
        walls = [w for w, _ in samples[client.name]]
        cpus = [c for _, c in samples[client.name]]
        rows.append(
            {
                "client": client.name,
                "wall_us": median(walls),
                "cpu_us": median(cpus),
                "wall_us_rounds": walls,
                "cpu_us_rounds": cpus,
                "env_lookups_per_request": lookups[client.name] if client.uses_env else None,
            }
        )
    floor = next(r for r in rows if r["client"] == FLOOR)
    for row in rows:
        row["cpu_ratio"] = row["cpu_us"] / floor["cpu_us"]
        row["wall_ratio"] = row["wall_us"] / floor["wall_us"]
        # the target's figure: each round against the floor in the same round, then the median
        row["cpu_ratio_rounds"] = [
            c / f for c, f in zip(row["cpu_us_rounds"], floor["cpu_us_rounds"], strict=True)
        ]
        row["cpu_ratio_median_of_rounds"] = median(row["cpu_ratio_rounds"])
    return {"n": n, "rounds": rounds, "warmup": warmup, "pid": os.getpid(), "rows": rows}


if __name__ == "__main__":
    raise SystemExit(scenario_main(run))
