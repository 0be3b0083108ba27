"""Refresh tokens: the account's refresh request, built once from the connection (`refresh_path`,
`refresh_endpoint`, `refresh_verb`, `refresh_parameters`, `initial_refresh_token`, `refresh_lifetime`).

The refresh request is the token request's twin: the same body format, headers and client
authentication (`access_auth`), with its own endpoint, verb and parameters. `{refresh_token}` in its
parameters is a late placeholder (`templating.fill_late`), filled when it is sent with the refresh token
the caches hold or the seed (`renewal.Step.consumes`), as `{assertion}` is; everything else is resolved
here, once. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_custom_token import templating
from airflow_custom_token.account.urls import HTTP_URL, url_problem
from airflow_custom_token.errors import PlaceholderError
from airflow_custom_token.wire import HttpRequest


@dataclass(frozen=True)
class RefreshSpec:
    """How an account renews its token with a refresh token."""

    template: HttpRequest  # the refresh request, `{refresh_token}` open (`templating.fill_late`)
    path: str  # where an answer carries a (new) refresh token: the syntax of `access_response_path`
    lifetime: int  # seconds a refresh token is kept when the answer states no `refresh_expires_in`
    seed: str | None = field(default=None, repr=False)  # `initial_refresh_token`
    full_request: bool = True  # is there a token request to fall back to (without a refresh token)?

    def fingerprint(self) -> list[Any]:
        """What decides the cache entry: the request template, the location, the lifetime, the seed (a
        new seed is a new entry: re-seeding starts from it, not from a refresh token stored before)."""
        return [self.template.fingerprint(), self.path, self.lifetime, self.seed or ""]


def build_refresh(
    checked: Mapping[str, Any],
    values: Mapping[str, str],
    late: Mapping[str, str],
    base_url: str | None,
    build_request: Callable[[Mapping[str, Any], str, Any], tuple[HttpRequest, list[str]]],
) -> tuple[RefreshSpec | None, list[str]]:
    """The account's `RefreshSpec` (None without `refresh_path`), and the problems found.

    :param late: the late placeholders the account keeps open (`build.late_placeholders`); they, and
        `{refresh_token}`, stay open in `refresh_parameters` until the request is sent.

    :param build_request: builds a token-request-shaped request from (checked fields with the refresh
        verb, the refresh URL, the rendered refresh parameters): `build.build_token_request`'s rules.
    """
    path = str(checked["refresh_path"] or "").strip()
    seed = checked["initial_refresh_token"] or None
    if not path:
        if seed:
            return None, [
                "initial_refresh_token: expected refresh_path too (where the answer carries the next "
                "refresh token), found none"
            ]
        return None, []
    problems: list[str] = []
    if path.startswith(("header:", "cookie:")) and not path.split(":", 1)[1].strip():
        problems.append(f"refresh_path: expected a name after {path!r}, found none")
    kept = {**values, **late, **templating.kept_late({"refresh_token"})}
    url: str | None = None
    parameters: Any = None
    endpoint = checked["refresh_endpoint"] or checked["access_endpoint"] or ""
    if "refresh_token" in templating.placeholders(endpoint):
        problems.append("refresh_endpoint: expected no {refresh_token} in the URL (it would be logged)")
        endpoint = ""
    try:
        url = templating.render_url(endpoint, values, "refresh_endpoint")
        parameters = templating.render_object(checked["refresh_parameters"] or {}, kept, "refresh_parameters")
    except PlaceholderError as exc:
        problems.append(str(exc))
    if url is not None and "://" not in url and base_url:
        url = base_url + ("" if url.startswith("/") else "/") + url
    elif url is not None and "://" in url:
        url_problem(problems, "refresh_endpoint", url, HTTP_URL)
    if parameters is not None and "refresh_token" not in templating.missing_placeholders(parameters, {}):
        problems.append(
            "refresh_parameters: expected {refresh_token} in a value (where the refresh token is sent), "
            "found none"
        )
    if problems or not url:
        return None, problems
    refresh_checked = {**checked, "access_verb": checked["refresh_verb"] or "POST"}
    template, found = build_request(refresh_checked, url, parameters)
    problems += [p.replace("access_parameters", "refresh_parameters") for p in found]
    full = bool(checked["access_parameters"]) or not seed
    return RefreshSpec(template, path, int(checked["refresh_lifetime"]), seed, full), problems
