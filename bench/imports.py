"""Import time of the provider's Airflow surfaces on top of an already imported `airflow.sdk`.

For each module: `runs` fresh interpreters each run `import airflow.sdk`, then time `import <module>`
(median reported), and note which heavy modules it imports that `airflow.sdk` had not already imported.
One more interpreter runs with `-X importtime` to name the biggest new imports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from bench.common import ROOT, median

HEAVY = (
    "aiohttp",
    "cryptography",
    "tenacity",
    "requests",
    "urllib3",
    "httpx",
    "yarl",
    "airflow.providers.http",
)
MARK = "--- bench: airflow.sdk imported ---"

PROBE = """
import sys, time
import airflow.sdk
heavy = {heavy!r}
before = {{name: name in sys.modules for name in heavy}}
count = len(sys.modules)
sys.stderr.write({mark!r} + "\\n"); sys.stderr.flush()
start = time.perf_counter()
try:
    import {module}
    error = None
except ImportError as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
elapsed = time.perf_counter() - start
import json
print(json.dumps({{
    "seconds": elapsed,
    "error": error,
    "new_modules": len(sys.modules) - count,
    "heavy": {{name: {{"before": before[name], "after": name in sys.modules}} for name in heavy}},
}}))
"""

_IMPORTTIME = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def probe(module: str, env: Mapping[str, str], importtime: bool = False) -> tuple[dict[str, Any], str]:
    code = PROBE.format(module=module, heavy=HEAVY, mark=MARK)
    args = ["-X", "importtime", "-c", code] if importtime else ["-c", code]
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"import probe for {module} failed: {done.stderr[-2000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]), done.stderr


def biggest_imports(stderr: str, limit: int = 6) -> list[dict[str, Any]]:
    """The module's direct imports done after the mark, largest (cumulative) first."""
    _, _, after = stderr.partition(MARK)
    rows = []
    for line in after.splitlines():
        found = _IMPORTTIME.match(line)
        if found and len(found.group(3)) // 2 == 1:  # depth 1: imported by the module itself
            rows.append({"module": found.group(4), "cumulative_ms": int(found.group(2)) / 1e3})
    rows.sort(key=lambda r: r["cumulative_ms"], reverse=True)
    return rows[:limit]


def measure(module: str, env: Mapping[str, str], runs: int) -> dict[str, Any]:
    samples = []
    first: dict[str, Any] = {}
    for _ in range(runs):
        result, _ = probe(module, env)
        if result["error"]:
            return {"module": module, "present": False, "error": result["error"]}
        first = first or result
        samples.append(result["seconds"] * 1e3)
    _, stderr = probe(module, env, importtime=True)
    heavy = first["heavy"]
    return {
        "module": module,
        "present": True,
        "median_ms": median(samples),
        "samples_ms": samples,
        "new_modules": first["new_modules"],
        "heavy_newly_imported": [n for n, s in heavy.items() if s["after"] and not s["before"]],
        "heavy_already_imported_by_sdk": [n for n, s in heavy.items() if s["before"]],
        "biggest_new_imports": biggest_imports(stderr),
    }


def run_all(modules: list[str], env: Mapping[str, str], runs: int) -> list[dict[str, Any]]:
    return [measure(module, env, runs) for module in modules]
