"""Airflow's command line as the tests run it: the `airflow` command of this environment, an environment
of the test's own (nothing of the caller's Airflow settings or proxies), and stopping what was started in
its own process group (`start_new_session=True`) with everything it forked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
LOOPBACK = "127.0.0.1,localhost"


def airflow_command(*args: str) -> list[str]:
    """`airflow ARGS` of this interpreter's environment (`python -m airflow` where no script is)."""
    script = Path(sys.executable).with_name("airflow")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "airflow", *args]


def clean_env(drop: tuple[str, ...] = ("AIRFLOW",)) -> dict[str, str]:
    """This process's environment without the variables starting with `drop` and without proxies:
    what a component starts from before the test's own settings; loopback bypasses any proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k.lower() not in PROXY_VARIABLES}
    env.update({"NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK, "PYTHONUNBUFFERED": "1"})
    return env


def terminate_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM to the process group of `process` (started with `start_new_session=True`), if it runs."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def reap_group(process: subprocess.Popen[Any], timeout: float) -> None:
    """Wait for `process` up to `timeout` seconds, then SIGKILL its process group and wait for it."""
    try:
        process.wait(timeout=max(0.1, timeout))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
