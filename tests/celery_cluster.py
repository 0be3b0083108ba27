"""A real Airflow cluster on one machine: CeleryExecutor with a Redis broker, two workers, a triggerer.

`CeleryCluster(root, shared=...)` starts, all on 127.0.0.1:

- a password-protected `redis-server` (db 0 the Celery broker, db 1 its result backend, db 2 the
  provider's shared token cache when `shared`);
- the bundled demo API (`python -m airflow_custom_token.demo`), whose `/_control/stats` counts the token
  requests;
- one Airflow home (a SQLite metadata database) with the DAG `custom_token_cluster`: 16 mapped
  `CustomTokenHttpOperator` tasks and 8 deferrable `CustomTokenHttpSensor`s, all on the connected account
  `acme_dev`;
- `airflow api-server`, `airflow scheduler`, `airflow dag-processor`, and three "hosts": two
  `airflow celery worker`s and an `airflow triggerer`, each with its own host-cache directory
  (`[custom_token] cache_dir`) and its own host name (`[core] hostname_callable` is `hostname` below),
  as if each ran on its own machine.

`run_dag()` triggers the DAG, waits for its end and returns what a platform team would look at: the
run's state, which host ran each task, and the demo API's count of token requests.

The tests use it (tests/integration/test_celery_cluster.py), and so does `scripts/cluster`, which starts
the same cluster by hand: `python -m tests.celery_cluster [--no-shared-cache]` runs it in the foreground
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from airflow_custom_token.demo.connections import ACCOUNTS
from tests.cluster import REDIS_PASSWORD, SHARED_CONN_ID, SHARED_ENV, RedisServer
from tests.paths import ROOT
from tests.processes import airflow_command, clean_env, reap_group, terminate_group
from tests.serving import free_port

DAG_ID = "custom_token_cluster"
CONN_ID = "acme_dev"
MAPPED_TASKS = 16
SENSORS = 8
WORKERS = ("worker-a", "worker-b")
TRIGGERER = "triggerer"
HOST_ENV = "CUSTOM_TOKEN_CLUSTER_HOST"  # the host name `hostname()` gives a component
START_TIMEOUT = 240.0  # a cold api-server on two busy cores can take a minute or more

DAG_FILE = textwrap.dedent(
    f'''\
    """{MAPPED_TASKS} mapped API calls and {SENSORS} deferrable sensors, all on one connected account."""

    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_custom_token.operators.http import CustomTokenHttpOperator
    from airflow_custom_token.sensors.http import CustomTokenHttpSensor

    with DAG(
        dag_id="{DAG_ID}",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_tasks=64,
        tags=["custom_token", "cluster"],
    ):
        CustomTokenHttpOperator.partial(
            task_id="call_api", custom_token_conn_id="{CONN_ID}", response_filter=lambda r: r.status_code
        ).expand(endpoint=[f"/api/v1/echo?call={{n}}" for n in range({MAPPED_TASKS})])
        for n in range({SENSORS}):
            CustomTokenHttpSensor(
                task_id=f"wait_{{n}}",
                custom_token_conn_id="{CONN_ID}",
                endpoint=f"/api/v1/whoami?sensor={{n}}",
                deferrable=True,
                poke_interval=1,
                timeout=300,
            )
    '''
)


def hostname() -> str:
    """`[core] hostname_callable` of the cluster's hosts: the name each was started with."""
    return os.environ.get(HOST_ENV) or "localhost"


@dataclass(frozen=True)
class RunResult:
    """What one DAG run did: its state, the host of each task instance, the demo API's counters."""

    state: str
    task_states: dict[str, str]  # "task_id[map_index]" -> state
    task_hosts: dict[str, str]  # "task_id[map_index]" -> host name
    token_requests: int
    authenticated: int
    seconds: float

    def hosts(self, prefix: str = "") -> set[str]:
        """The hosts that ran task instances whose id starts with `prefix`."""
        return {host for task, host in self.task_hosts.items() if task.startswith(prefix) and host}


class CeleryCluster:
    """The cluster described in the module's docstring; `with CeleryCluster(root, shared=True) as c:`."""

    def __init__(self, root: Path, *, shared: bool = True, concurrency: int = 4) -> None:
        self.root = root
        self.shared = shared
        self.concurrency = concurrency
        self.home = root / "airflow"
        self.logs = root / "logs"
        self.redis = RedisServer(root / "redis")
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.demo_url = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outs: list[IO[bytes]] = []

    # -- starting and stopping -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        for directory in (self.home / "dags", self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        (self.home / "dags" / f"{DAG_ID}.py").write_text(DAG_FILE)
        self.redis.start()
        self._start_demo()
        self._fernet_key, self._jwt_secret = _fernet_key(), secrets.token_urlsafe(32)
        self._run("db-migrate", "db", "migrate")
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        self._spawn("scheduler", "scheduler")
        self._spawn("dag-processor", "dag-processor")
        self._spawn(TRIGGERER, "triggerer", "--skip-serve-logs", host=TRIGGERER)
        for worker in WORKERS:
            self._spawn(
                worker,
                "celery", "worker",
                "--celery-hostname", f"{worker}@127.0.0.1",
                "--concurrency", str(self.concurrency),
                "--skip-serve-logs",
                host=worker,
            )  # fmt: skip
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs.values()):  # all at once, the last started first
            terminate_group(proc)
        deadline = time.monotonic() + 30
        for proc in self._procs.values():
            reap_group(proc, timeout=deadline - time.monotonic())
        self._procs.clear()
        for out in self._outs:
            out.close()
        self._outs.clear()
        self.redis.stop()

    # -- the environment ---------------------------------------------------------------------------
    def env(self, host: str | None = None) -> dict[str, str]:
        """What every component runs with; a host (`host`) also has its own name and host-cache directory."""
        from airflow_custom_token.demo.connections import environment

        redis = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.redis.port}"
        env = clean_env(drop=("AIRFLOW", "CUSTOM_TOKEN"))
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self._fernet_key,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW__API__SECRET_KEY": self._jwt_secret,
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
                "AIRFLOW__CELERY__BROKER_URL": f"{redis}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis}/1",
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                **environment(self.demo_url),
            }
        )
        if self.shared:
            env[f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}"] = self.redis.connection(db=2)
            env[SHARED_ENV] = SHARED_CONN_ID
        if host is not None:
            env[HOST_ENV] = host
            env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "tests.celery_cluster.hostname"
            env["AIRFLOW__CUSTOM_TOKEN__CACHE_DIR"] = str(self.root / host / "token-cache")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return env

    def _start_demo(self) -> None:
        log = self.logs / "demo-api.log"
        out = log.open("wb")
        self._outs.append(out)
        self._procs["demo-api"] = subprocess.Popen(
            [sys.executable, "-u", "-m", "airflow_custom_token.demo", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("demo API listening on "):
                    self.demo_url = line.removeprefix("demo API listening on ").strip()
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the demo API did not start: {self.tail('demo-api')}")

    def _run(self, name: str, *args: str) -> str:
        result = subprocess.run(
            airflow_command(*args), env=self.env(), capture_output=True, text=True, timeout=300, check=False
        )
        (self.logs / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({result.returncode}): {self.tail(name)}")
        return result.stdout

    def _spawn(self, name: str, *args: str, host: str | None = None) -> None:
        out = (self.logs / f"{name}.log").open("wb")
        self._outs.append(out)
        self._procs[name] = subprocess.Popen(
            airflow_command(*args),
            env=self.env(host),
            cwd=self.root,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends its children too
        )

    def _wait_until_ready(self) -> None:
        """The api-server answers, the DAG is parsed, both workers and the triggerer are up."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting: list[str] = []
        while time.monotonic() < deadline:
            self._check_alive()
            waiting = [name for name, ready in self._readiness().items() if not ready]
            if not waiting:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster was not ready in {START_TIMEOUT:.0f} s: waiting for {waiting}")

    def _readiness(self) -> dict[str, bool]:
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as answer:
                api = answer.status == 200
        except OSError:
            api = False
        ready = {
            "api-server": api,
            "dag parsed": bool(self._query("SELECT 1 FROM dag WHERE dag_id = ?", DAG_ID)),
        }
        for worker in WORKERS:
            ready[worker] = f"{worker}@127.0.0.1 ready." in self.tail(worker, lines=400)
        ready[TRIGGERER] = bool(self._query("SELECT 1 FROM job WHERE job_type = 'TriggererJob'"))
        return ready

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    # -- what it did ---------------------------------------------------------------------------------
    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        database = self.home / "airflow.db"
        if not database.exists():
            return []
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # a table not there yet, or the database busy
            return []

    def _control(self, name: str) -> Any:
        with urllib.request.urlopen(f"{self.demo_url}/_control/{name}", timeout=10) as answer:
            return json.load(answer)

    def stats(self) -> dict[str, Any]:
        """The demo API's counters (`token_requests`, `authenticated`, ...)."""
        stats: dict[str, Any] = self._control("stats")
        return stats

    def secrets(self) -> dict[str, str]:
        """What must never be written anywhere: each token the API accepted, and the client secret."""
        tokens = {
            value.removeprefix("Bearer "): None
            for entry in self._control("api_log")
            for name, value in entry["headers"].items()
            if name.lower() == "authorization" and value.startswith("Bearer ")
        }
        return {"client secret": ACCOUNTS["dev"]} | {f"token {n}": t for n, t in enumerate(tokens, 1)}

    def leaks(self) -> list[str]:
        """Where a secret of `secrets()` shows in clear text: every file the cluster wrote (the metadata
        database, each component's and each task's log, the host caches) and every key and value in
        Redis (the Celery broker, its results, the shared cache)."""
        secrets_ = {name: value.encode() for name, value in self.secrets().items()}
        found = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{name} in {path}" for name, value in secrets_.items() if value in data]
        for db in (0, 1, 2):
            client = self.redis.client(db)
            for key in client.scan_iter("*"):
                held = b"\0".join([key, *_values(client, key)])
                found += [
                    f"{name} in Redis db {db} {key!r}" for name, value in secrets_.items() if value in held
                ]
        return found

    def run_dag(self, timeout: float = 300) -> RunResult:
        """Trigger `custom_token_cluster`, wait for the run to end, and say what it did."""
        run_id = f"cluster_{int(time.time() * 1000)}"
        started = time.monotonic()
        self._run("dags-trigger", "dags", "trigger", DAG_ID, "--run-id", run_id)
        state = ""
        while time.monotonic() - started < timeout:
            self._check_alive()
            rows = self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", DAG_ID, run_id)
            state = rows[0][0] if rows else ""
            if state in ("success", "failed"):
                break
            time.sleep(1)
        else:
            raise TimeoutError(f"run {run_id} still {state or 'not created'} after {timeout:.0f} s")
        instances = self._query(
            "SELECT task_id, map_index, state, hostname FROM task_instance WHERE dag_id = ? AND run_id = ?",
            DAG_ID,
            run_id,
        )
        names = {(task, index): f"{task}[{index}]" if index >= 0 else task for task, index, _, _ in instances}
        stats = self.stats()
        return RunResult(
            state=state,
            task_states={names[task, index]: st for task, index, st, _ in instances},
            task_hosts={names[task, index]: host for task, index, _, host in instances},
            token_requests=int(stats["token_requests"]),
            authenticated=int(stats["authenticated"]),
            seconds=time.monotonic() - started,
        )

    def tail(self, name: str, lines: int = 60) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def tails(self, lines: int = 40) -> str:
        """The end of every component's log, for a failing test's message."""
        return "\n".join(f"---- {name} ----\n{self.tail(name, lines)}" for name in self._procs)


def _values(client: Any, key: bytes) -> list[bytes]:
    """Every value a Redis key holds, whatever its type (the broker's queues are lists, its unacked
    messages a hash, results strings)."""
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "hash":
        return [part for pair in client.hgetall(key).items() for part in pair]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    raise AssertionError(f"Redis key {key!r} is a {kind}, which the leak check cannot read")


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/cluster`: start the cluster, run the DAG once, print what it did, stay up until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-shared-cache", action="store_true", help="the workers share no Redis cache")
    parser.add_argument("--dir", type=Path, default=ROOT / ".airflow-cluster", help="where it all lives")
    parser.add_argument("--no-run", action="store_true", help="start the cluster, trigger nothing")
    args = parser.parse_args(argv)
    shutil.rmtree(args.dir, ignore_errors=True)
    cluster = CeleryCluster(args.dir, shared=not args.no_shared_cache)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    print(f"starting the cluster in {args.dir} (logs in {cluster.logs}) ...", flush=True)
    with cluster:
        print(f"Airflow UI:  {cluster.api_url}  (every user is an admin)")
        print(f"demo API:    {cluster.demo_url}")
        print(
            f"Redis:       127.0.0.1:{cluster.redis.port} (broker db 0, results db 1"
            + (", shared token cache db 2)" if cluster.shared else "; no shared token cache)")
        )
        print(f"hosts:       {', '.join(WORKERS)} (Celery workers) and {TRIGGERER}, each its own host cache")
        if not args.no_run:
            result = cluster.run_dag()
            print(
                f"DAG {DAG_ID}: {result.state} in {result.seconds:.0f} s; "
                f"{len(result.task_states)} task instances on {', '.join(sorted(result.hosts()))}; "
                f"the demo API issued {result.token_requests} token(s) "
                f"and authenticated {result.authenticated} requests"
            )
        trigger = f"AIRFLOW_HOME={cluster.home} {airflow_command()[0]} dags trigger {DAG_ID}"
        print(f"trigger it again in the UI, or: {trigger}")
        print(f"tokens issued so far: curl {cluster.demo_url}/_control/stats")
        print("Ctrl-C stops the cluster.", flush=True)
        try:
            while True:
                cluster._check_alive()
                time.sleep(2)
        except KeyboardInterrupt:
            print("\nstopping ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
