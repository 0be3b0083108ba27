"""The provider's own config section, `[custom_token]`: typed settings, read with safe fallbacks.

The options (name, type, default, minimum) are declared once, in `airflow_custom_token.fields.OPTIONS`:
`Settings()` holds their defaults, `load_settings()` reads them from Airflow's configuration (through
`airflow_custom_token.compat.config_get`) and parses them by the table.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from airflow_custom_token.compat import config_get, get_fernet
from airflow_custom_token.fields import CONFIG_SECTION, OPTIONS, REALMS, option_default
from airflow_custom_token.retry import RetryPolicy

SECTION = CONFIG_SECTION

# Options that `Settings` holds grouped rather than as an attribute of their own name.
_REDIRECT_URI_OPTIONS = {realm: f"redirect_uri_{realm}" for realm in REALMS}
_RETRY_OPTIONS = {
    "retries": "token_request_retries",
    "wait_max": "retry_wait_max",
    "retry_after_max": "retry_after_max",
}


def _default_redirect_uris() -> dict[str, str]:
    return {realm: option_default(name) for realm, name in _REDIRECT_URI_OPTIONS.items()}


def _default_retry() -> RetryPolicy:
    return RetryPolicy(**{arg: option_default(name) for arg, name in _RETRY_OPTIONS.items()})


def _airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def default_cache_dir() -> str:
    """Where the host cache lives when `cache_dir` is empty: `$AIRFLOW_HOME/custom_token_cache`."""
    return os.path.join(_airflow_home(), "custom_token_cache")


@dataclass(frozen=True)
class Settings:
    """`[custom_token]`, typed. Every default is the option table's (`fields.OPTIONS`)."""

    redirect_uris: Mapping[str, str] = field(default_factory=_default_redirect_uris)
    host_cache: bool = option_default("host_cache")
    cache_dir: str = option_default("cache_dir")  # empty: default_cache_dir()
    cache_recheck: float = option_default("cache_recheck")
    refresh_margin: float = option_default("refresh_margin")
    retry: RetryPolicy = field(default_factory=_default_retry)
    token_request_timeout: float = option_default("token_request_timeout")
    api_request_timeout: float = option_default("api_request_timeout")
    max_token_response_bytes: int = option_default("max_token_response_bytes")
    max_token_bytes: int = option_default("max_token_bytes")
    max_token_lifetime: float = option_default("max_token_lifetime")
    shared_cache_conn_id: str = option_default("shared_cache_conn_id")  # empty: no shared cache

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", self.cache_dir.strip() or default_cache_dir())


def load_settings() -> Settings:
    """Read `[custom_token]` from Airflow's configuration (env `AIRFLOW__CUSTOM_TOKEN__*` included).

    A number that is not one, or is below its minimum, raises `ValueError` naming the option.
    """
    if importlib.util.find_spec("airflow") is None:  # pragma: no cover - used without Airflow
        return Settings()
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = config_get(SECTION, option.name, option.default)
        values[option.name] = option.parse(option.default if raw is None else raw)
    redirect_uris = {realm: values.pop(name) for realm, name in _REDIRECT_URI_OPTIONS.items()}
    retry = RetryPolicy(**{arg: values.pop(name) for arg, name in _RETRY_OPTIONS.items()})
    unheld = sorted(set(values) - {f.name for f in fields(Settings)})
    if unheld:  # a new option in the table needs its attribute here
        raise TypeError(f"fields.OPTIONS declares {unheld}, which settings.Settings holds no attribute for")
    return Settings(redirect_uris=redirect_uris, retry=retry, **values)


def airflow_fernet() -> Any:
    """Airflow's Fernet (`[core] fernet_key`); the host cache encrypts with it."""
    return get_fernet()


FernetFactory = Callable[[], Any]
