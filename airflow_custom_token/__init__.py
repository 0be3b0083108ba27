"""Apache Airflow provider for APIs that authenticate with a custom token.

Core, free of Airflow surfaces: `fields` (the field and option table), `options` (request options),
`account` (the connected account), `templating`, `wire`, `token` (reading a token answer), `retry`,
`rules` (the request rules), `cache`, `source`, `secret_forms` and `redaction`, `tls`, the transports
`auth`/`session`/`requests_adapter` (requests) and `aio` (aiohttp), `settings`. The module of Airflow
release differences: `compat`; accounts from Airflow's connections: `connections`.
Airflow surfaces: `hooks`, `operators`, `sensors`, `triggers`, `notifications`.
"""

__version__ = "0.2.0"
