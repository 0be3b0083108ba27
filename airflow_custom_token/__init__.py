"""Apache Airflow provider for APIs that authenticate with a custom token.

Core, free of Airflow surfaces: `fields` (the field and option table), `spec` (the connected account),
`templating`, `flow` (the token flow), `rules` (the request rules), `cache`, `source`, `redaction`,
`auth` (requests) and `aio` (aiohttp), `settings`. The one Airflow-facing module: `compat`.
Airflow surfaces: `hooks`, `operators`, `sensors`, `triggers`, `notifications`.
"""

__version__ = "0.2.0"
