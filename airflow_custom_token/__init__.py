"""Apache Airflow provider for APIs that authenticate with a custom token.

Core (no Airflow surfaces): `spec`, `templating`, `flow`, `cache`, `source`, `redaction`, `auth`, `aio`.
Airflow surfaces: `hooks`, `operators`, `sensors`, `triggers`.
"""

__version__ = "0.1.0"
