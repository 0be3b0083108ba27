"""Fixtures of the browser tests: a real ``airflow api-server`` and headless Chromium.

Everything listens on 127.0.0.1 only. The api-server runs in a temporary ``AIRFLOW_HOME`` with a SQLite
metadata database; it runs the hook's ``test_connection()`` in its own process, so the Test button talks
to the demo API (the ``demo`` fixture of ``tests/conftest.py``) exactly as a deployed Airflow would.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.processes import airflow_command, clean_env, reap_group, terminate_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
API_SERVER_START_TIMEOUT = 240.0  # seconds; a cold api-server on 2 busy cores can take a minute or more


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so that fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow_env(home: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = clean_env()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        }
    )
    return env


@dataclass(frozen=True)
class AirflowHome:
    path: Path
    env: dict[str, str]


@dataclass(frozen=True)
class ApiServer:
    url: str
    log: Path


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """A fresh ``AIRFLOW_HOME`` with a migrated SQLite metadata database."""
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    env = _airflow_env(home)
    result = subprocess.run(
        airflow_command("db", "migrate"),
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"airflow db migrate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return AirflowHome(home, env)


@pytest.fixture(scope="session")
def api_server(airflow_home: AirflowHome) -> Iterator[ApiServer]:
    """``airflow api-server`` on 127.0.0.1, started once per session and stopped at teardown."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = airflow_home.path / "api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            airflow_command("api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            env=airflow_home.env,
            cwd=airflow_home.path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: teardown stops its workers too
        )
    try:
        _wait_until_healthy(url, process, log)
        yield ApiServer(url, log)
    finally:
        _stop(process)


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + API_SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    _stop(process)
    pytest.fail(
        f"airflow api-server did not answer on {url} within {API_SERVER_START_TIMEOUT:.0f} s:\n{_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    terminate_group(process)
    reap_group(process, timeout=30)


def _tail(log: Path, lines: int = 200) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright.

    Module-scoped: Playwright's sync API keeps an asyncio loop running in this thread while it is
    started, so it must stop before the next module's tests call `asyncio.run()`.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page that reaches only 127.0.0.1; saves a screenshot and the HTML on failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    blocked: list[str] = []

    def loopback_only(route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme not in ("http", "https", "ws", "wss") or _is_loopback(url.hostname or ""):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    page = context.new_page()
    try:
        yield page
    finally:
        failed = any(
            getattr(getattr(request.node, f"report_{when}", None), "failed", False)
            for when in ("setup", "call")
        )
        if failed:
            save_artifacts(page, f"{request.node.name}-failure")
            if "api_server" in request.fixturenames:
                server: ApiServer = request.getfixturevalue("api_server")
                print(f"--- airflow api-server log ({server.log}), last lines:\n{_tail(server.log, 80)}")
        if blocked:
            print(f"blocked requests to non-loopback hosts: {blocked}")
        context.close()


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def save_artifacts(page: Any, name: str) -> None:
    """Save a full-page screenshot and the page's HTML under tests/artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.html").write_text(page.content())
        print(f"saved {ARTIFACTS / name}.png and .html")
    except Exception as exc:  # the page may be gone; the test's own error matters more
        print(f"could not save artifacts {name}: {exc}")
