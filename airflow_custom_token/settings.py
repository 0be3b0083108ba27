"""The provider's own config section, `[custom_token]` (see get_provider_info), read with safe fallbacks."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token.flow import RetryPolicy
from airflow_custom_token.spec import DEFAULT_REDIRECT_URIS

SECTION = "custom_token"


@dataclass(frozen=True)
class Settings:
    redirect_uris: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REDIRECT_URIS))
    host_cache: bool = False
    cache_dir: str = ""
    refresh_margin: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    token_request_timeout: float = 30.0


def _airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def load_settings() -> Settings:
    """Read `[custom_token]` from Airflow's configuration (env `AIRFLOW__CUSTOM_TOKEN__*` included)."""
    try:
        import airflow  # noqa: F401
    except ImportError:  # pragma: no cover - used without Airflow
        return Settings()
    from airflow_custom_token.compat import config_get

    def get(option: str, default: str) -> str:
        value = config_get(SECTION, option, default)
        return default if value is None else value

    def number(option: str, default: float, minimum: float = 0.0) -> float:
        raw = get(option, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"[{SECTION}] {option}: expected a number, found {raw!r}") from None
        if value < minimum:
            raise ValueError(f"[{SECTION}] {option}: expected a number >= {minimum}, found {raw!r}")
        return value

    uris = {realm: get(f"redirect_uri_{realm}", uri) for realm, uri in DEFAULT_REDIRECT_URIS.items()}
    return Settings(
        redirect_uris=uris,
        host_cache=get("host_cache", "True").strip().lower() in ("true", "1", "yes", "on"),
        cache_dir=get("cache_dir", "").strip() or os.path.join(_airflow_home(), "custom_token_cache"),
        refresh_margin=number("refresh_margin", 60.0),
        retry=RetryPolicy(
            retries=int(number("token_request_retries", 3)),
            wait_max=number("retry_wait_max", 30.0),
            retry_after_max=number("retry_after_max", 60.0),
        ),
        token_request_timeout=number("token_request_timeout", 30.0, minimum=0.001),
    )


def airflow_fernet() -> Any:
    """Airflow's Fernet (`[core] fernet_key`); the host cache encrypts with it."""
    from airflow_custom_token.compat import get_fernet

    return get_fernet()


FernetFactory = Callable[[], Any]
