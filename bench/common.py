"""What every scenario shares: the connections, the environment of a scenario process, and statistics.

Scenarios run in fresh interpreters (`python -m bench.<scenario> --config <json>`): each one starts with
empty caches and its own imports, and the orchestrator (`bench.run`) never imports Airflow itself.
A scenario writes its figures as JSON to the file named in its config.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONN_ID = "bench"  # the custom_token connection (account "dev" on the bench server)
HTTP_CONN_ID = "bench_http"  # a plain http connection to the same server, for Airflow's HttpHook
API_PATH = "/api/v1/whoami"
TOKEN_PATH = "/oauth2/v1/token"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


@dataclass(frozen=True)
class ScenarioConfig:
    """What the orchestrator hands a scenario process (as JSON)."""

    server_url: str
    server_kind: str
    quick: bool
    result_path: str
    options: dict[str, Any] = field(default_factory=dict)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str) -> ScenarioConfig:
        return cls(**json.loads(Path(path).read_text()))

    def write_result(self, result: Mapping[str, Any]) -> None:
        Path(self.result_path).write_text(json.dumps(result, indent=2))


def custom_token_connection(server_url: str) -> dict[str, Any]:
    """The connected account every scenario uses: client credentials, a bearer header."""
    return {
        "conn_type": "custom_token",
        "host": server_url,
        "login": "dev",
        "password": "dev-secret",
        "extra": {
            "integration_name": "Bench API",
            "integration_key": "bench",
            "access_endpoint": TOKEN_PATH,
            "access_verb": "POST",
            "access_parameters": {"client_id": "{login}", "client_secret": "{password}"},
            "inject_as": "header",
            "inject_name": "Authorization",
            "inject_template": "Bearer {token}",
        },
    }


def http_connection(server_url: str) -> dict[str, Any]:
    """The same server as a plain `http` connection (what an HttpHook user configures)."""
    return {"conn_type": "http", "host": server_url}


def fernet_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64), without importing cryptography."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def scenario_env(workdir: Path, server_url: str, cache_dir: Path, key: str, **extra: str) -> dict[str, str]:
    """Environment of a scenario process: isolated Airflow home, the connections, the host cache on.

    Proxy variables are removed so that no request can leave 127.0.0.0/8 through a proxy (scenarios
    that test proxy handling set their own, pointing at the loopback bench server).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in PROXY_VARIABLES and not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))
    }
    home = workdir / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__FERNET_KEY": key,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CUSTOM_TOKEN__HOST_CACHE": "True",
            "AIRFLOW__CUSTOM_TOKEN__CACHE_DIR": str(cache_dir),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(custom_token_connection(server_url)),
            f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": json.dumps(http_connection(server_url)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "PYTHONHASHSEED": "0",
        }
    )
    env.update(extra)
    return env


def run_python(args: list[str], env: Mapping[str, str], timeout: float = 240) -> str:
    """Run `python <args>` in ROOT with `env`; return its stdout, or raise with its output on failure."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"python {' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
    return done.stdout


def run_scenario(module: str, config: ScenarioConfig, env: Mapping[str, str], timeout: float = 240) -> Any:
    """Run `python -m <module> --config <file>` and return the JSON it wrote."""
    config_path = Path(config.result_path).with_suffix(".config.json")
    config.dump(config_path)
    run_python(["-m", module, "--config", str(config_path)], env, timeout)
    return json.loads(Path(config.result_path).read_text())


def scenario_main(run: Callable[[ScenarioConfig], Mapping[str, Any]]) -> int:
    """Entry point of a scenario module: read the config, run, write the result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = ScenarioConfig.load(args.config)
    config.write_result(run(config))
    return 0


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def fixed(value: float | None, digits: int = 0) -> str:
    """`value` with `digits` decimals, or `-` for a figure that is missing."""
    return "-" if value is None else f"{value:.{digits}f}"
