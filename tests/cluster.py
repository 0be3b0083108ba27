"""A cluster on one machine: a real `redis-server` on 127.0.0.1, and hosts simulated by processes.

- `RedisServer`: Debian's `redis-server` (scripts/install-redis) on a free loopback port, with a password,
  no persistence; `connection()` is the `AIRFLOW_CONN_...` JSON a user would write.
- `Cluster`: H hosts x P processes, each with its host's own `AIRFLOW_HOME`; the processes of a host
  share its host cache directory. Importing Airflow takes seconds, so the processes are forked from
  multiprocessing's fork server, which imports the provider once (as Celery's prefork pool and the task
  runner fork theirs), and are then told what to do over a pipe: `prepare` (environment, empty
  caches), `run` (hook.run in a loop from a given start time, in one thread or several) or `token`
  (get_token).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from tests.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_PASSWORD = "redis-pass-7f3a9c"
SHARED_CONN_ID = "redis_shared"
SHARED_ENV = "AIRFLOW__CUSTOM_TOKEN__SHARED_CACHE_CONN_ID"


def hosts_env(connection: str) -> dict[str, str]:
    """What every host is configured with: the account `acme`, and the shared cache on `connection`."""
    return {
        "AIRFLOW_CONN_ACME": os.environ["AIRFLOW_CONN_ACME"],
        f"AIRFLOW_CONN_{SHARED_CONN_ID.upper()}": connection,
        SHARED_ENV: SHARED_CONN_ID,
    }


class RedisServer:
    """`redis-server --port P --bind 127.0.0.1 --requirepass PW --save "" --appendonly no --dir DIR`."""

    def __init__(
        self,
        directory: Path,
        password: str = REDIS_PASSWORD,
        port: int | None = None,
        args: Sequence[str] = (),
        config: Path | None = None,
    ) -> None:
        """`args`: more options, after the usual ones (a later option wins); `config`: a configuration
        file, first on the command line (a sentinel needs one it can write)."""
        self.directory = directory
        self.password = password
        self.port = port or free_port()
        self.args = tuple(args)
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.access(REDIS_SERVER, os.X_OK)

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *([] if self.config is None else [str(self.config)]),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--requirepass", self.password,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--loglevel", "warning",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except Exception:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

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

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db, socket_timeout=5)

    def connection(self, *, password: str | None = None, port: int | None = None, db: int = 0) -> str:
        """The `AIRFLOW_CONN_<ID>` JSON of a `redis` connection to this server."""
        return json.dumps(
            {
                "conn_type": "redis",
                "host": "127.0.0.1",
                "port": port or self.port,
                "password": self.password if password is None else password,
                "extra": {"db": db},
            }
        )

    def scan(self) -> dict[bytes, tuple[bytes | None, int]]:
        """Every key with its value and its TTL in ms (-1: none)."""
        client = self.client()
        return {key: (client.get(key), client.pttl(key)) for key in client.scan_iter("*")}


class Worker:
    """One process of a host; what it logs goes to `log` (Airflow logs to stdout)."""

    def __init__(self, host: int, index: int, home: Path) -> None:
        self.host = host
        self.index = index
        self.log = home / f"process-{index}.log"
        self.log.touch()
        context = multiprocessing.get_context("forkserver")
        self.pipe, child = context.Pipe()
        self.proc = context.Process(target=serve, args=(child, str(home), str(self.log)), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.is_alive()

    def send(self, command: Mapping[str, Any]) -> None:
        self.pipe.send(dict(command))

    def receive(self, timeout: float = 120) -> dict[str, Any]:
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"host {self.host} process {self.index}: no answer in {timeout:g} s")
        try:
            answer: dict[str, Any] = self.pipe.recv()
        except EOFError:
            raise RuntimeError(
                f"host {self.host} process {self.index} exited: {self.log_since(0)[-2000:]}"
            ) from None
        return answer

    def ask(self, command: Mapping[str, Any]) -> dict[str, Any]:
        self.send(command)
        return self.receive()

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.send({"op": "exit"})

    def join(self) -> None:
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.pipe.close()

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the process logged since `log_size()` returned `offset`."""
        with self.log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")


class Cluster:
    """`hosts` x `processes` workers; a dead worker is replaced when next asked for."""

    def __init__(self, directory: Path, hosts: int, processes: int) -> None:
        self.directory = directory
        self.hosts = hosts
        self.processes = processes
        self._workers: dict[tuple[int, int], Worker] = {}
        self._started = False
        self._runs = 0

    def start(self) -> Self:
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            ["airflow_custom_token.hooks.custom_token", "redis", "tests.cluster"]
        )
        for host in range(self.hosts):
            for index in range(self.processes):
                self.worker(host, index)
        for worker in self._workers.values():
            worker.receive()  # "started"
        self._started = True
        return self

    def worker(self, host: int, index: int) -> Worker:
        worker = self._workers.get((host, index))
        if worker is None or not worker.alive():
            if worker is not None:
                worker.join()
            home = self.directory / f"host-{host}"
            home.mkdir(parents=True, exist_ok=True)
            worker = Worker(host, index, home)
            self._workers[(host, index)] = worker
            if self._started:  # a replacement: wait for it here
                worker.receive()
        return worker

    def workers(self, hosts: int | None = None, processes: int | None = None) -> list[Worker]:
        return [
            self.worker(h, p) for h in range(hosts or self.hosts) for p in range(processes or self.processes)
        ]

    def prepare(self, workers: list[Worker], env: Mapping[str, str | None]) -> None:
        """New environment and empty caches: each host gets a new, empty host cache directory."""
        self._runs += 1
        for worker in workers:
            cache = self.directory / f"host-{worker.host}" / f"cache-{self._runs}"
            worker.send({"op": "prepare", "env": {**env, "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(cache)}})
        for worker in workers:
            worker.receive()

    def ask_all(self, workers: list[Worker], command: Mapping[str, Any]) -> list[dict[str, Any]]:
        for worker in workers:
            worker.send(command)
        return [worker.receive() for worker in workers]

    def stop(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for worker in self._workers.values():
            worker.join()
        self._workers.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------
# In each worker process


def _run(command: Mapping[str, Any]) -> dict[str, Any]:
    """`_run_one` in `threads` threads at once (each with its own hook), their results added up."""
    threads = int(command.get("threads", 1))
    if threads == 1:
        return _run_one(command)
    import threading

    results: list[dict[str, Any]] = []
    workers = [threading.Thread(target=lambda: results.append(_run_one(command))) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    statuses: dict[str, int] = {}
    tokens: list[str] = []
    for result in results:
        for key, count in result["statuses"].items():
            statuses[key] = statuses.get(key, 0) + count
        tokens += [token for token in result["tokens"] if token not in tokens]
    return {
        "statuses": statuses,
        "tokens": tokens,
        "elapsed": max(r["elapsed"] for r in results),
        "slowest": max(r["slowest"] for r in results),
    }


def _run_one(command: Mapping[str, Any]) -> dict[str, Any]:
    from airflow_custom_token.errors import CustomTokenError
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    hook = CustomTokenHook(command.get("conn", "acme"))
    _ = hook.account, hook.settings
    time.sleep(max(0.0, float(command.get("start", 0)) - time.time()))
    began = time.monotonic()
    statuses: dict[str, int] = {}
    tokens: list[str] = []
    slowest = 0.0
    until = command.get("until")
    for number in range(int(command.get("count", 1_000_000))):
        if until is not None and time.time() >= until:
            break
        if number and command.get("pause"):
            time.sleep(float(command["pause"]))
        sent = time.monotonic()
        try:
            path = command.get("path", "/api/v1/whoami")
            response = hook.run(path, extra_options={"check_response": False})
            key = str(response.status_code)
            if response.history:
                key += " after " + ",".join(str(r.status_code) for r in response.history)
        except CustomTokenError as exc:
            key = f"error: {type(exc).__name__}: {exc}"[:300]
        slowest = max(slowest, time.monotonic() - sent)
        statuses[key] = statuses.get(key, 0) + 1
        try:
            token = hook.get_token()
        except CustomTokenError:  # counted above, as the call's error
            continue
        if token not in tokens:
            tokens.append(token)
    return {"statuses": statuses, "tokens": tokens, "elapsed": time.monotonic() - began, "slowest": slowest}


def _token(command: Mapping[str, Any]) -> dict[str, Any]:
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    hook = CustomTokenHook(command.get("conn", "acme"))
    _ = hook.account, hook.settings
    began = time.monotonic()
    token = hook.get_token()
    return {"token": token, "elapsed": time.monotonic() - began}


def serve(pipe: Any, home: str, log: str) -> None:
    """A host's process: its own AIRFLOW_HOME, no connections but those `prepare` defines."""
    import sys

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["AIRFLOW_HOME"] = home
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_") or n == SHARED_ENV]:
        del os.environ[name]
    from airflow_custom_token.cache import PROCESS_CACHE, shared_conn

    PROCESS_CACHE.clear()
    shared_conn.reset()
    pipe.send({"started": os.getpid()})
    while True:
        command = pipe.recv()
        op = command["op"]
        if op == "exit":
            return
        if op == "prepare":
            for name, value in command["env"].items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            PROCESS_CACHE.clear()
            shared_conn.reset()
            answer: dict[str, Any] = {"ready": True}
        elif op == "run":
            answer = _run(command)
        elif op == "token":
            answer = _token(command)
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.flush()
        sys.stderr.flush()
        pipe.send(answer)
