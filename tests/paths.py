"""Where the repository keeps what the tests run: the example DAGs and the scripts."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
SCRIPTS = ROOT / "scripts"
