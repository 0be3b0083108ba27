"""The shared token cache (Redis): token requests and 401s across hosts, and a warm get_token().

Run by `bench.run` (`Bench.shared_cache`), which starts a `redis-server` on 127.0.0.1 (`RedisProcess`)
and runs this module in a fresh interpreter (`python -m bench.shared_cache --config <json>`):

1. Token requests: H hosts x P processes send `hook.run()` in a loop for `duration` seconds with a
   `lifetime`-second token, without and with the shared cache. Without it each host has its own token;
   with it the cluster has one. The fewest token requests possible is one per refresh interval
   (lifetime less min(refresh_margin, lifetime / 2)).
2. The same against a single-active-token API (issuing a token revokes the account's earlier ones), as
   platform teams meet it: the 401 answers the API sent, and the requests that failed after the
   refresh-once retry.
3. Warm `get_token()` from the shared cache: the process cache and the host cache file are cleared
   before each call, so each call reads Redis, decrypts, and fills both again. Also the same with the
   host cache off, and one Redis GET round trip for comparison.

The load processes are forked from this interpreter once it has imported the hook (as Celery's prefork
pool forks its workers); each is one process of one host: its host's cache directory, its own memory.
This scenario runs its own demo API (`airflow_custom_token.demo`, in a subprocess): the lean bench
server has no single-active mode.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from bench.common import API_PATH, CONN_ID, ScenarioConfig, median, percentile, scenario_main

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CONN_ID = "bench_redis"
SHARED_VARIABLE = "AIRFLOW__CUSTOM_TOKEN__SHARED_CACHE_CONN_ID"
CACHE_VARIABLE = "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR"
MARGIN_VARIABLE = "AIRFLOW__CUSTOM_TOKEN__REFRESH_MARGIN"


class RedisProcess:
    """`redis-server` on a free loopback port with a password and no persistence (bench orchestrator)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.password = "bench-" + os.urandom(8).hex()
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.access(REDIS_SERVER, os.X_OK)

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                "--save", "", "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """PING (after AUTH) over a raw socket: the orchestrator imports no client library."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while b"PONG" not in answer and len(answer) < 100:
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    answer += chunk
                return b"PONG" in answer
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment that turns the shared cache on: a `redis` connection, named in the option."""
        return {
            f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": json.dumps(
                {"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "password": self.password}
            ),
            SHARED_VARIABLE: REDIS_CONN_ID,
        }


# ---------------------------------------------------------------------------------------------------
# In the scenario process


def _host_process(pipe: Any, env: Mapping[str, str | None], duration: float) -> None:
    """One process of one host (forked): new caches and hook, `ready`; then hook.run() in a loop from
    the start time the orchestrator sends, for `duration` seconds."""
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from airflow_custom_token.cache import PROCESS_CACHE, shared_conn
    from airflow_custom_token.errors import CustomTokenError
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    PROCESS_CACHE.clear()
    shared_conn.reset()
    hook = CustomTokenHook(CONN_ID)
    _ = hook.account, hook.settings, hook.auth
    counts: Counter[str] = Counter()
    pipe.send("ready")
    start = float(pipe.recv())
    late = time.time() - start
    time.sleep(max(0.0, -late))
    while time.time() < start + duration:
        try:
            response = hook.run(API_PATH, extra_options={"check_response": False})
            key = str(response.status_code)
            if response.history:
                key += " after " + ",".join(str(r.status_code) for r in response.history)
        except CustomTokenError as exc:
            key = f"error: {type(exc).__name__}"
        counts[key] += 1
    pipe.send((dict(counts), late))
    pipe.close()


def load(
    demo: Any, workdir: Path, hosts: int, processes: int, duration: float, shared: Mapping[str, str] | None
) -> dict[str, Any]:
    """H x P forked processes for `duration` s; what the clients saw and what the API counted."""
    context = multiprocessing.get_context("fork")
    run_dir = workdir / f"load-{time.monotonic_ns()}"
    procs = []
    for host in range(hosts):
        env: dict[str, str | None] = {CACHE_VARIABLE: str(run_dir / f"host-{host}"), SHARED_VARIABLE: None}
        env.update(shared or {})
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_host_process, args=(child, env, duration))
            proc.start()
            child.close()
            procs.append((proc, parent))
    statuses: Counter[str] = Counter()
    alive = []
    for proc, pipe in procs:  # every process has built its hook: they start together
        try:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise EOFError
            alive.append((proc, pipe))
        except EOFError:
            statuses["error: the process did not start"] += 1
    demo.reset()
    start = time.time() + 0.2
    for _, pipe in alive:
        pipe.send(start)
    latest = 0.0
    for proc, pipe in alive:
        try:
            if not pipe.poll(duration + 60):
                raise EOFError
            counts, late = pipe.recv()
        except EOFError:  # it died or hung: say so in the figures
            statuses["error: the process gave no result"] += 1
        else:
            statuses.update(counts)
            latest = max(latest, late)
    for proc, _ in procs:
        proc.join(timeout=30)
    stats = demo.stats()
    requests = sum(statuses.values())
    return {
        "shared_cache": shared is not None,
        "hosts": hosts,
        "processes": processes,
        "data_requests": requests,
        "statuses": dict(statuses),
        "failed": sum(n for status, n in statuses.items() if not status.startswith("200")),
        "retried_after_401": sum(n for status, n in statuses.items() if status.startswith("200 after")),
        "api_401s": stats["rejected"],
        "token_requests": stats["token_requests"],
        "latest_start_s": latest,  # > 0: a process started sending that much after the others could
    }


def warm_get_token(calls: int, shared: Mapping[str, str]) -> dict[str, Any]:
    """`get_token()` with the process cache and the host file cleared before each call (Redis warm)."""
    os.environ.update(shared)
    from airflow_custom_token.cache import PROCESS_CACHE
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    hook = CustomTokenHook(CONN_ID)
    token = hook.get_token()  # one token request; fills every layer
    key, store, redis = hook.account.cache_key, hook.source.store, hook.source.shared()
    if redis is None or store is None:
        raise RuntimeError("the shared cache or the host cache is off: nothing to measure")

    cpu: dict[bool, list[float]] = {True: [], False: []}

    def timed(clear_host: bool, n: int = calls) -> list[float]:
        samples = []
        for _ in range(n):
            PROCESS_CACHE.clear()
            if clear_host:
                store.delete(key)
            began, began_cpu = time.perf_counter_ns(), time.process_time_ns()
            value = hook.get_token()
            samples.append((time.perf_counter_ns() - began) / 1e3)
            cpu[clear_host].append((time.process_time_ns() - began_cpu) / 1e3)
            if value != token:
                raise RuntimeError("the shared cache returned another token: a token request happened")
        return samples

    timed(True, max(1, calls // 10))  # warm-up: the connection, the code paths
    cpu[True].clear()
    with_host = timed(True)
    hook.source._store = None  # the host cache off: Redis only
    shared_only = timed(False)
    client = redis.client()
    name = redis.name(key)
    gets = []
    for _ in range(calls):
        began = time.perf_counter_ns()
        client.get(name)
        gets.append((time.perf_counter_ns() - began) / 1e3)
    return {
        "calls": calls,
        "shared_cache_us": median(with_host),
        "shared_cache_p90_us": percentile(with_host, 0.9),
        "shared_cache_cpu_us": median(cpu[True]),
        "shared_only_us": median(shared_only),
        "shared_only_p90_us": percentile(shared_only, 0.9),
        "shared_only_cpu_us": median(cpu[False]),
        "redis_get_us": median(gets),
    }


def run(config: ScenarioConfig) -> dict[str, Any]:
    from bench.common import custom_token_connection
    from bench.servers import ServerProcess

    options = config.options
    hosts, processes = int(options["hosts"]), int(options["processes"])
    duration, lifetime, margin = (
        float(options["duration"]),
        int(options["lifetime"]),
        float(options["margin"]),
    )
    redis_env = {str(k): str(v) for k, v in options["redis_env"].items()}
    workdir = Path(config.result_path).with_suffix(".d")
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ[MARGIN_VARIABLE] = str(margin)
    os.environ.pop(SHARED_VARIABLE, None)
    with ServerProcess("demo") as demo:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(custom_token_connection(demo.url))
        import redis  # imported before forking, as a worker that has run tasks has them
        import tenacity  # noqa: F401

        import airflow_custom_token.auth
        import airflow_custom_token.hooks.custom_token  # noqa: F401

        interval = lifetime - min(margin, lifetime / 2)
        rows = []
        for single_active in (False, True):
            demo._call("POST", "/_control/config", {"lifetime": lifetime, "single_active": single_active})
            for shared in (None, redis_env):
                row = load(demo, workdir, hosts, processes, duration, shared)
                row.update(
                    single_active=single_active,
                    duration_s=duration,
                    lifetime_s=lifetime,
                    refresh_interval_s=interval,
                    fewest_possible=math.ceil(duration / interval),
                )
                rows.append(row)
        demo._call("POST", "/_control/config", {"lifetime": 3600, "single_active": False})
        demo.reset()
        warm = warm_get_token(int(options["calls"]), redis_env)
    server = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout.split()
    version = next((part.removeprefix("v=") for part in server if part.startswith("v=")), None)
    return {"load": rows, "warm": warm, "redis_server": version, "redis_py": redis.__version__}


if __name__ == "__main__":
    raise SystemExit(scenario_main(run))
