"""Where the repository keeps what the tests run: the example DAGs and the scripts; and the `airflow`
command of the interpreter running the tests (where the provider is installed)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
SCRIPTS = ROOT / "scripts"


def airflow_command(*args: str) -> list[str]:
    """`airflow ARGS` of this interpreter's environment (`python -m airflow` where no script is)."""
    script = Path(sys.executable).with_name("airflow")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "airflow", *args]
