"""Token requests for many data requests over T threads x P processes, with a short token lifetime.

Each process is a fresh interpreter with the host cache on; each thread has its own `CustomTokenHook`
and sends `hook.run()` in a loop. Per configuration (refresh margin, and a new, empty host cache
directory) the processes forget their tokens, build new hooks and say `ready`; the orchestrator resets
the server's counters and tells them all to `go` at once, for `duration` seconds. The server counts the
token requests and when they came. The processes are started once and serve every configuration.

One token per lifetime is the best a cache can do, less its refresh margin: a token is replaced
`min(refresh_margin, lifetime / 2)` seconds before it expires, so over `duration` seconds the fewest
token requests possible is `ceil(duration / (lifetime - effective margin))`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from bench.common import API_PATH, CONN_ID, ROOT
from bench.servers import ServerProcess

DEFAULT_MARGIN = 60.0  # [custom_token] refresh_margin's default
MARGIN_VARIABLE = "AIRFLOW__CUSTOM_TOKEN__REFRESH_MARGIN"
CACHE_VARIABLE = "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR"


# ---------------------------------------------------------------------------------------------------
# In each load process


def _send_until(end: float, threads: int) -> dict[str, int]:
    """Build one hook per thread (new settings, no cached token), say ready, wait for go, send."""
    from airflow_custom_token.cache import PROCESS_CACHE
    from airflow_custom_token.errors import CustomTokenError
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    PROCESS_CACHE.clear()
    hooks = [CustomTokenHook(CONN_ID) for _ in range(threads)]
    for hook in hooks:
        _ = hook.account, hook.settings  # connection lookup and settings before the clock starts
    results: list[Counter[str]] = [Counter() for _ in hooks]

    def loop(hook: CustomTokenHook, counts: Counter[str]) -> None:
        while time.time() < end:
            try:
                status = hook.run(API_PATH, extra_options={"check_response": False}).status_code
                counts[str(status)] += 1
            except CustomTokenError as exc:
                counts[f"error: {type(exc).__name__}"] += 1

    pool = [threading.Thread(target=loop, args=(h, c)) for h, c in zip(hooks, results, strict=True)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    total: Counter[str] = Counter()
    for counts in results:
        total.update(counts)
    return dict(total)


def worker(threads: int) -> None:
    """Serve configurations from stdin: `prepare <margin|default> <cache dir>`, `go <end>`, `exit`."""
    import airflow_custom_token.hooks.custom_token  # noqa: F401 - import before the first `ready`

    print("started", flush=True)
    while command := sys.stdin.readline().split():
        if command[0] == "exit":
            return
        if command[0] != "prepare" or len(command) != 3:
            raise SystemExit(f"expected 'prepare <margin|default> <cache dir>', got {command!r}")
        if command[1] == "default":
            os.environ.pop(MARGIN_VARIABLE, None)
        else:
            os.environ[MARGIN_VARIABLE] = command[1]
        os.environ[CACHE_VARIABLE] = command[2]
        print("ready", flush=True)
        go = sys.stdin.readline().split()
        if not go or go[0] != "go":
            raise SystemExit(f"expected 'go <end>', got {go!r}")
        print("result " + json.dumps(_send_until(float(go[1]), threads)), flush=True)


# ---------------------------------------------------------------------------------------------------
# In the orchestrator


class LoadProcesses:
    """P load processes of T threads each, started once, run once per configuration."""

    def __init__(self, server: ServerProcess, env: Mapping[str, str], processes: int, threads: int) -> None:
        self.server = server
        self.env = dict(env)
        self.processes = processes
        self.threads = threads
        self._procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Self:
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.tokens", "--threads", str(self.threads)],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(self.processes)
        ]
        self._wait_for("started")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    self._tell(proc, "exit")
                    proc.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()

    @staticmethod
    def _tell(proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def _wait_for(self, word: str) -> list[str]:
        """The line starting with `word` from every process (other output is skipped)."""
        lines = []
        for proc in self._procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and not line.startswith(word):
                pass
            if not line:
                raise RuntimeError(f"a load process exited (code {proc.wait()}) before saying {word!r}")
            lines.append(line.strip())
        return lines

    def run(
        self, *, duration: float, lifetime: float, margin: float | None, cache_dir: Path
    ) -> dict[str, Any]:
        """One configuration; `margin=None` keeps the default refresh margin."""
        self.server.set_lifetime(lifetime)
        for proc in self._procs:
            self._tell(proc, f"prepare {'default' if margin is None else margin} {cache_dir}")
        self._wait_for("ready")
        self.server.reset()
        start = time.time()
        for proc in self._procs:
            self._tell(proc, f"go {start + duration}")
        statuses: Counter[str] = Counter()
        for line in self._wait_for("result "):
            statuses.update(json.loads(line.removeprefix("result ")))
        return summarize(self.server.stats(), statuses, start, self, duration, lifetime, margin)


def summarize(
    stats: Mapping[str, Any],
    statuses: Mapping[str, int],
    start: float,
    load: LoadProcesses,
    duration: float,
    lifetime: float,
    margin: float | None,
) -> dict[str, Any]:
    times = sorted(float(t) for t in stats.get("token_request_times", []))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    configured = DEFAULT_MARGIN if margin is None else margin
    interval = lifetime - min(configured, lifetime / 2)
    token_requests = int(stats["token_requests"])
    fewest = math.ceil(duration / interval)
    return {
        "processes": load.processes,
        "threads": load.threads,
        "duration_s": duration,
        "lifetime_s": lifetime,
        "refresh_margin_s": configured,
        "effective_margin_s": lifetime - interval,
        "refresh_interval_s": interval,
        "data_requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "server_rejected": stats.get("rejected"),
        "token_requests": token_requests,
        "lifetimes_elapsed": duration / lifetime,
        "token_requests_per_lifetime": token_requests / (duration / lifetime),
        "fewest_possible": fewest,
        "min_gap_s": min(gaps) if gaps else None,
        "token_request_offsets_s": [round(t - start, 3) for t in times],
        "met": token_requests <= fewest,
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.tokens")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    worker(args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
