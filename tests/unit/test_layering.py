"""The layout's promise, checked on every import statement (module level and inside functions).

- The core never imports an Airflow surface (`hooks`, `operators`, `sensors`, `triggers`, `notifications`,
  `cli` and its `__main__`).
- Only `compat` imports Airflow itself: every version difference lives there.
- Surfaces do not borrow from each other: each may use `hooks` (which owns the connection), and the
  operator and the sensor may use the triggers they defer to.
- `fields` and `get_provider_info` import the standard library only (provider discovery imports them).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_custom_token.demo.connections import environment

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_custom_token"
SURFACES = ("hooks", "operators", "sensors", "triggers", "notifications", "cli")


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "demo" not in p.relative_to(PACKAGE).parts)


def layer(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    if part == "__main__.py":  # `python -m airflow_custom_token`: the admin command's entry point
        return "cli"
    return part if part in SURFACES else "core"


def imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """Every absolute module name `path` imports, at any depth (relative imports resolved)."""
    found: list[str] = []
    package = ".".join(("airflow_custom_token", *path.relative_to(root).parts[:-1]))
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.append(name)
            found += [f"{name}.{alias.name}" for alias in node.names]
    return found


def ours(name: str) -> str | None:
    """The first part of our module path (`hooks`, `spec`, ...), or None for another package."""
    parts = name.split(".")
    return parts[1] if parts[0] == "airflow_custom_token" and len(parts) > 1 else None


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    mine = layer(path)
    wrong: list[str] = []
    for name in imports(path):
        target = ours(name)
        if mine == "core" and target in SURFACES:
            wrong.append(f"core module imports the surface {name}")
        allowed = {mine, "hooks", *(("triggers",) if mine in ("operators", "sensors") else ())}
        if mine in SURFACES and target in SURFACES and target not in allowed:
            wrong.append(f"surface {mine} borrows from {name}")
        top = name.split(".")[0]
        if top == "airflow" and path.name != "compat.py":
            wrong.append(f"imports Airflow directly ({name}); go through airflow_custom_token.compat")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", ["fields.py", "get_provider_info.py"])
def test_discovery_modules_import_the_standard_library_only(name: str) -> None:
    outside = [
        n
        for n in imports(PACKAGE / name)
        if n.split(".")[0] not in sys.stdlib_module_names and ours(n) != "fields"
    ]
    assert not outside, outside


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """A core module importing a hook inside a function, or relatively, would be caught."""
    fake = tmp_path / "core_module.py"
    fake.write_text(
        "def f():\n"
        "    from airflow_custom_token.hooks.custom_token import CustomTokenHook\n"
        "    from .operators import http\n"
    )
    names = imports(fake, root=tmp_path)
    assert [ours(n) for n in names if ours(n) in SURFACES] == ["hooks", "hooks", "operators", "operators"]


DEMO = sorted((PACKAGE / "demo").rglob("*.py"))


@pytest.mark.parametrize("path", DEMO, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_demo_api_imports_no_airflow_and_no_provider_code(path: Path) -> None:
    """`python -m airflow_custom_token.demo` runs without Airflow: the demo is the service, not a client."""
    wrong = [
        name
        for name in imports(path)
        if name.split(".")[0] == "airflow" or (ours(name) not in (None, "demo"))
    ]
    assert not wrong, f"{path.name} imports {wrong}"


TRIGGERER_IMPORTS = """
import asyncio, json, sys, threading
OURS = {"airflow_custom_token", "aiohttp", "requests"}  # the provider and its transports
import airflow.jobs.triggerer_job_runner  # what the triggerer has loaded before it imports a trigger
from airflow_custom_token.triggers import http

loaded = lambda: [m for m in ("aiohttp", http.HOOKS_MODULE) if m in sys.modules]
after_import = loaded()
classpath, kwargs = http.CustomTokenHttpTrigger("acme_dev", "/api/v1/echo").serialize()
trigger = getattr(http, classpath.rsplit(".", 1)[1])(**kwargs)  # as the triggerer makes it
after_create = loaded()
importers = {}
sys.addaudithook(
    lambda event, args: event == "import" and importers.setdefault(args[0], threading.get_ident())
)

async def first_run():
    hook = await trigger._hook()  # the first thing a trigger's run() does
    async with hook.session():  # its aiohttp session
        return threading.get_ident()

loop_thread = asyncio.run(first_run())
print(json.dumps({
    "after_import": after_import,
    "after_create": after_create,
    "after_run": loaded(),
    "first imports on the loop": sorted(
        {m.split(".")[0] for m, t in importers.items() if t == loop_thread} & OURS
    ),
    "first imports in threads": sorted(
        {m.split(".")[0] for m, t in importers.items() if t != loop_thread} & OURS
    ),
}))
"""


def test_the_triggerer_imports_the_transport_off_its_event_loop() -> None:
    """The triggerer imports a trigger's module, and makes the trigger, in its event loop: that import
    must not bring aiohttp and the core (about 0.3 s on a busy triggerer, which stalls every trigger of
    the loop); the first trigger to run imports them in a worker thread."""
    result = subprocess.run(
        [sys.executable, "-c", TRIGGERER_IMPORTS],
        env={**os.environ, **environment("http://127.0.0.1:9")},  # the example accounts; nothing is sent
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen == {
        "after_import": [],
        "after_create": [],
        "after_run": ["aiohttp", "airflow_custom_token.hooks.custom_token"],
        "first imports on the loop": [],
        "first imports in threads": ["aiohttp", "airflow_custom_token", "requests"],
    }
