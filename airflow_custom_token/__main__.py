"""`python -m airflow_custom_token status|invalidate|check ...`: the admin command (`cli`)."""

from __future__ import annotations

import sys

from airflow_custom_token.cli import main

if __name__ == "__main__":
    sys.exit(main())
