"""The package's error types.

Messages name the field, what was expected and what was found; they never contain a secret.
"""

from __future__ import annotations

from collections.abc import Iterable

from airflow_custom_token.compat import AirflowException


class CustomTokenError(AirflowException):
    """Base class of every error this provider raises."""


class ConfigurationError(CustomTokenError):
    """A connection (or the task's parameters) does not describe a usable integration.

    Lists every problem found, each naming the connection field's key.
    """

    def __init__(self, conn_id: str, problems: Iterable[str]) -> None:
        self.conn_id = conn_id
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"Connection {conn_id!r} (custom_token) has {count} {noun}:\n{lines}")


class PlaceholderError(CustomTokenError):
    """A `{placeholder}` cannot be resolved, or its value does not fit where it stands."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class TokenRequestError(CustomTokenError):
    """The token endpoint could not be reached or answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class TokenResponseError(CustomTokenError):
    """The token endpoint answered, but the token (or its expiry) is not where the connection says."""


class RequestError(CustomTokenError):
    """An API request made through the connection failed (status >= 400, or refused before sending)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)
