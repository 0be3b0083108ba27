"""Run the bench: `python -m bench [--quick] [--server lean|demo] [--only ...] [--results-dir DIR]`.

Starts the loopback API and token server in its own process, runs each scenario in fresh interpreters,
prints one table and writes the results as JSON (`<results-dir>/run-<timestamp>.json`; a full run
against the default results directory also replaces `bench/results/latest.json`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import imports, report, shared_cache, targets, tokens
from bench.common import ROOT, ScenarioConfig, fernet_key, run_scenario, scenario_env
from bench.machine import describe
from bench.servers import ServerProcess

RESULTS = ROOT / "bench" / "results"
#: What a triggerer's trigger runner has imported before its first trigger runs: it is forked from the
#: triggerer's supervisor process (`airflow.jobs.triggerer_job_runner`); and aiohttp.
TRIGGERER_IMPORTS = ["aiohttp", "airflow.jobs.triggerer_job_runner"]
SCENARIOS = ("per_request", "token_requests", "get_token", "imports", "deferrable", "shared_cache", "masking")
SERVERS = {
    "lean": "bench/servers.py, asyncio, one thread",
    "demo": "airflow_custom_token.demo, ThreadingHTTPServer",
}


@dataclass(frozen=True)
class Parameters:
    n: int
    rounds: int
    warmup: int
    processes: int
    threads: int
    duration: float
    lifetime: float
    margin: float
    default_margin_row: bool
    batches: int
    batch: int
    host_calls: int
    first_calls: int
    import_runs: int
    import_modules: tuple[str, ...]
    context_modules: tuple[str, ...]  # measured too, with fewer runs: not targets
    context_runs: int
    triggers: int
    ready_after: float
    poke_interval: float
    deferrable_rounds: int  # ours, then the http provider's HttpSensorTrigger, this many times
    preimport_rows: bool
    shared_hosts: int
    shared_processes: int
    shared_duration: float
    shared_lifetime: int  # whole seconds: the demo API's unit
    shared_margin: float
    shared_calls: int
    masking_refreshes: int  # token refreshes in one process (this release: all for real)
    masking_legacy_real: int  # of which 0.1 does this many for real (then fast-forwarded: bench/masking.py)
    masking_tail: int  # refreshes measured at the end


FULL = Parameters(
    n=2000,
    rounds=9,
    warmup=200,
    processes=4,
    threads=4,
    duration=10.0,
    lifetime=2.0,
    margin=0.2,
    default_margin_row=True,
    batches=200,
    batch=100,
    host_calls=500,
    first_calls=3,
    import_runs=10,
    import_modules=(targets.OPERATORS, targets.SENSORS),
    context_modules=("airflow_custom_token.triggers.http",),
    context_runs=3,
    triggers=1000,  # the triggerer's default capacity
    ready_after=20.0,
    poke_interval=5.0,  # 1000 triggers poking every 5 s: 200 requests per second, 5 pokes each
    deferrable_rounds=2,
    preimport_rows=True,
    shared_hosts=4,
    shared_processes=4,
    shared_duration=10.0,
    shared_lifetime=2,
    shared_margin=0.2,
    shared_calls=500,
    masking_refreshes=2000,
    masking_legacy_real=200,
    masking_tail=3,
)
QUICK = Parameters(
    n=30,
    rounds=1,
    warmup=3,
    processes=2,
    threads=2,
    duration=2.0,
    lifetime=1.0,
    margin=0.1,
    default_margin_row=False,
    batches=10,
    batch=10,
    host_calls=10,
    first_calls=1,
    import_runs=1,
    import_modules=(targets.OPERATORS, targets.SENSORS),
    context_modules=(),
    context_runs=0,
    triggers=10,
    ready_after=1.0,
    poke_interval=0.2,
    deferrable_rounds=1,
    preimport_rows=False,
    shared_hosts=2,
    shared_processes=2,
    shared_duration=1.0,
    shared_lifetime=1,
    shared_margin=0.1,
    shared_calls=10,
    masking_refreshes=40,
    masking_legacy_real=10,
    masking_tail=2,
)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """One run: a server, a work directory, and the scenarios' results."""

    def __init__(self, server: ServerProcess, workdir: Path, params: Parameters, quick: bool) -> None:
        self.server = server
        self.workdir = workdir
        self.params = params
        self.quick = quick
        self.key = fernet_key()
        self._count = 0

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """A scenario's environment, with its own (empty) host cache directory."""
        return scenario_env(self.workdir, self.server.url, self.workdir / f"cache-{name}", self.key, **extra)

    def config(self, name: str, **options: Any) -> ScenarioConfig:
        self._count += 1
        path = self.workdir / f"{self._count:02d}-{name}.json"
        return ScenarioConfig(self.server.url, self.server.kind, self.quick, str(path), options)

    # -- scenarios ----------------------------------------------------------------------------------
    def per_request(self) -> dict[str, Any]:
        p = self.params
        say(f"per-request cost: every client, {p.rounds} rounds x {p.n} requests")
        options = {"n": p.n, "rounds": p.rounds, "warmup": p.warmup}
        result: dict[str, Any] = run_scenario(
            "bench.clients", self.config("clients", **options), self.env("clients")
        )
        if self.server.kind == "lean":  # the lean server counts requests sent to it as a proxy
            say("per-request cost: proxy check (HTTP_PROXY pointing at the bench server)")
            env = self.env("proxy", http_proxy=self.server.url)
            config = self.config("proxy", proxy_check=True, token=self.server.token())
            result["proxy_check"] = run_scenario("bench.clients", config, env)
        return result

    def token_requests(self) -> list[dict[str, Any]]:
        p = self.params
        margins: list[float | None] = [p.margin, None] if p.default_margin_row else [p.margin]
        rows = []
        say(f"token requests: starting {p.processes} processes x {p.threads} threads")
        with tokens.LoadProcesses(self.server, self.env("tokens"), p.processes, p.threads) as load:
            for number, margin in enumerate(margins):
                label = "default" if margin is None else f"{margin:g} s"
                say(f"token requests: {p.duration:g} s of hook.run(), refresh margin {label}")
                cache_dir = self.workdir / f"cache-tokens-{number}"
                row = load.run(duration=p.duration, lifetime=p.lifetime, margin=margin, cache_dir=cache_dir)
                row["is_target"] = margin is not None
                rows.append(row)
        self.server.set_lifetime(3600)
        return rows

    def get_token(self) -> dict[str, Any]:
        p = self.params
        say("get_token(): warm process cache, warm host cache")
        env = self.env("get-token")
        options = {"batches": p.batches, "batch": p.batch, "host_calls": p.host_calls}
        result: dict[str, Any] = run_scenario("bench.get_token", self.config("get-token", **options), env)
        for key, preimport in (("first_call", False), ("first_call_requests_imported", True)):
            say(
                f"get_token(): first call in {p.first_calls} new processes, requests preimported: {preimport}"
            )
            runs = [
                run_scenario(
                    "bench.get_token",
                    self.config("first-call", first_call=True, preimport_requests=preimport),
                    env,
                )
                for _ in range(p.first_calls)
            ]
            runs.sort(key=lambda r: r["first_us"])
            result[key] = {**runs[len(runs) // 2], "runs_us": [r["first_us"] for r in runs]}
        return result

    def imports(self) -> list[dict[str, Any]]:
        p = self.params
        say(f"import time: {len(p.import_modules)} modules x {p.import_runs} fresh interpreters")
        env = self.env("imports")
        rows = imports.run_all(list(p.import_modules), env, p.import_runs)
        if p.context_modules:
            say(f"import time: {len(p.context_modules)} more modules x {p.context_runs} fresh interpreters")
            rows += imports.run_all(list(p.context_modules), env, p.context_runs)
        return rows

    def deferrable(self) -> list[dict[str, Any]]:
        """Ours against the http provider's `HttpSensorTrigger`, turn about (`deferrable_rounds` each), both
        in a process that has imported what a triggerer's trigger runner has before its first trigger
        (it is forked from the supervisor, whose module `airflow.jobs.triggerer_job_runner` imports the
        task SDK's supervisor; and aiohttp, which the provider's trigger module imports); then ours with
        nothing preimported (issue #7's lag target: the import happens while they run)."""
        p = self.params
        rows: list[dict[str, Any]] = []
        options = {"triggers": p.triggers, "ready_after": p.ready_after, "poke_interval": p.poke_interval}
        pairs = (("CustomTokenHttpSensorTrigger", "trigger"), ("HttpSensorTrigger", "airflow"))
        for number in range(p.deferrable_rounds):
            for trigger, driver in pairs:
                say(f"deferrable: {p.triggers} {trigger}s in one event loop, round {number + 1}")
                config = self.config("deferrable", **options, preimport=TRIGGERER_IMPORTS, driver=driver)
                row: dict[str, Any] = run_scenario(
                    "bench.deferrable", config, self.env(f"deferrable-{len(rows)}")
                )
                row.update(trigger=trigger, round=number, is_target=True)
                rows.append(row)
        if p.preimport_rows:
            say(f"deferrable: {p.triggers} triggers in one event loop, nothing preimported")
            config = self.config("deferrable", **options, preimport=[])
            row = run_scenario("bench.deferrable", config, self.env(f"deferrable-{len(rows)}"))
            row.update(trigger="CustomTokenHttpSensorTrigger", is_target=True)
            rows.append(row)
        if p.preimport_rows:  # and as triggers arrive in a running triggerer: over one poke interval
            say(f"deferrable: {p.triggers} triggers in one event loop, started over {p.poke_interval:g} s")
            options = {
                "triggers": p.triggers,
                "ready_after": p.ready_after,
                "poke_interval": p.poke_interval,
                "preimport": [],
                "stagger": p.poke_interval,
            }
            row = run_scenario(
                "bench.deferrable", self.config("deferrable", **options), self.env(f"deferrable-{len(rows)}")
            )
            row.update(trigger="CustomTokenHttpSensorTrigger", is_target=False)
            rows.append(row)
        return rows

    def shared_cache(self) -> dict[str, Any]:
        p = self.params
        if not shared_cache.RedisProcess.available():
            say("shared cache: redis-server is not installed (scripts/install-redis); skipped")
            return {"skipped": "redis-server is not installed (scripts/install-redis)"}
        with shared_cache.RedisProcess(self.workdir / "redis") as redis:
            say(
                f"shared cache: {p.shared_hosts} hosts x {p.shared_processes} processes, "
                f"{p.shared_duration:g} s x 4 runs (without/with, then a single-active-token API)"
            )
            options = {
                "hosts": p.shared_hosts,
                "processes": p.shared_processes,
                "duration": p.shared_duration,
                "lifetime": p.shared_lifetime,
                "margin": p.shared_margin,
                "calls": p.shared_calls,
                "redis_env": redis.env(),
            }
            result: dict[str, Any] = run_scenario(
                "bench.shared_cache", self.config("shared-cache", **options), self.env("shared-cache"), 600
            )
            say(f"shared cache: deferrable, {p.triggers} triggers in one event loop, shared cache on")
            options = {
                "triggers": p.triggers,
                "ready_after": p.ready_after,
                "poke_interval": p.poke_interval,
                "preimport": [],
            }
            env = self.env("deferrable-shared", **redis.env())
            result["deferrable"] = run_scenario(
                "bench.deferrable", self.config("deferrable-shared", **options), env
            )
        return result

    def masking(self) -> list[dict[str, Any]]:
        p = self.params
        rows = []
        for behaviour in ("bounded", "legacy"):
            say(f"masking: {p.masking_refreshes} token refreshes in one process, {behaviour} registration")
            options = {
                "behaviour": behaviour,
                "refreshes": p.masking_refreshes,
                "real": p.masking_legacy_real,
                "tail": p.masking_tail,
            }
            env = self.env(f"masking-{behaviour}", AIRFLOW__CUSTOM_TOKEN__HOST_CACHE="False")
            config = self.config(f"masking-{behaviour}", **options)
            rows.append(run_scenario("bench.masking", config, env, 900))
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny N everywhere: proves the bench works")
    parser.add_argument("--server", choices=sorted(SERVERS), default="lean", help="API server (default lean)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)

    params = QUICK if args.quick else FULL
    wanted = args.only or list(SCENARIOS)
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="airflow-custom-token-bench-"))
    results: dict[str, Any] = {
        "schema": 1,
        "timestamp": stamp.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": describe(),
        "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()},
        "server": {"kind": args.server, "description": SERVERS[args.server]},
    }
    try:
        with ServerProcess(args.server) as server:
            say(f"{args.server} server on {server.url}; work directory {workdir}")
            bench = Bench(server, workdir, params, args.quick)
            steps: dict[str, Callable[[], Any]] = {
                "per_request": bench.per_request,
                "token_requests": bench.token_requests,
                "get_token": bench.get_token,
                "imports": bench.imports,
                "deferrable": bench.deferrable,
                "shared_cache": bench.shared_cache,
                "masking": bench.masking,
            }
            for name in SCENARIOS:
                if name in wanted:
                    results[name] = steps[name]()
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = targets.evaluate(results)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    kind = "quick" if args.quick else "full"
    path = args.results_dir / f"run-{stamp.strftime('%Y%m%dT%H%M%SZ')}-{kind}.json"
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    if not args.quick and args.results_dir.resolve() == RESULTS.resolve() and wanted == list(SCENARIOS):
        (RESULTS / "latest.json").write_text(text)
    print(report.render(results))
    print(f"\n{len(wanted)} scenarios in {results['duration_s']:.0f} s; results: {path}")
    return 0
