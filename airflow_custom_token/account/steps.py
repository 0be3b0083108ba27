"""Multi-step logins: the requests sent before the token request (`access_steps`), built once. No I/O.

Each step is a request shaped as the token request is (endpoint, verb, parameters, body format,
headers), plus the outputs read from its answer (the syntax of `access_outputs`). An output is a
placeholder of the later steps, of the token request and of the API requests: those placeholders stay
open here (`templating.kept_late`) and are filled when the login runs (`airflow_custom_token.login`).
A step may address the token endpoint's origin, the host's origin and `allowed_hosts`, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_custom_token import templating
from airflow_custom_token.account.checks import parse_outputs
from airflow_custom_token.account.urls import HTTP_URL, masked_url, origin_of, url_problem
from airflow_custom_token.errors import PlaceholderError
from airflow_custom_token.fields import BUILT_INS
from airflow_custom_token.wire import HttpRequest

MAX_STEPS = 5  # a login of more requests than this is a configuration error
STEP_KEYS = ("endpoint", "verb", "parameters", "body", "headers", "outputs")

Origin = tuple[str, str, int | None]


@dataclass(frozen=True)
class LoginStep:
    """One request of a login: its position (1-based), the request (placeholders of earlier steps'
    outputs, and late ones, still open) and the outputs read from its answer, as (name, location)."""

    position: int
    request: HttpRequest
    outputs: tuple[tuple[str, str], ...] = ()
    total: int = 1  # steps in the login, for messages: "login step 2 of 3"

    def describe(self, secrets: tuple[str, ...] = ()) -> str:
        """How an error names the step: its position and endpoint (masked, without its query)."""
        return (
            f"login step {self.position} of {self.total} (access_steps[{self.position - 1}]: "
            f"{self.request.method} {masked_url(self.request.url, secrets)})"
        )

    def fingerprint(self) -> list[Any]:
        return [self.request.fingerprint(), [list(output) for output in self.outputs]]


def step_output_names(raw: Any) -> list[str]:
    """The output names the steps declare (well-formed or not: `build_steps` reports the bad ones), to
    keep their placeholders open in the token request before the steps are built."""
    names: list[str] = []
    for step in raw if isinstance(raw, list) else []:
        outputs = step.get("outputs") if isinstance(step, Mapping) else None
        if isinstance(outputs, Mapping):
            names += [str(name) for name in outputs if str(name) not in names]
    return names


BuildRequest = Callable[[Mapping[str, Any], str, Any, Any], tuple[HttpRequest, list[str]]]


def build_steps(
    checked: Mapping[str, Any],
    values: Mapping[str, str],
    late: Mapping[str, str],
    base_url: str | None,
    allowed: frozenset[Origin],
    token_url: str | None,
    access_outputs: Sequence[str],
    build_request: BuildRequest,
) -> tuple[tuple[LoginStep, ...], list[str]]:
    """The login steps of `access_steps` (none when unset), and the problems found.

    :param late: the late placeholders the account keeps open (`{assertion}`): usable in every step.
    :param allowed: the origins of the host and `allowed_hosts`; the token endpoint's is added.
    :param build_request: builds a token-request-shaped request from (checked fields with the step's
        verb and body format, the step's URL, its rendered parameters, its rendered headers).
    """
    raw = checked.get("access_steps") or []
    if not isinstance(raw, list):
        return (), [f"access_steps: expected a JSON list of steps, found {type(raw).__name__}"]
    problems: list[str] = []
    if len(raw) > MAX_STEPS:
        problems.append(f"access_steps: expected at most {MAX_STEPS} steps, found {len(raw)}")
        return (), problems
    origins = set(allowed) | ({origin_of(token_url)} if token_url and "://" in token_url else set())
    taken = {"token": "the token", **{name: "a built-in" for name in BUILT_INS}}
    taken.update({name: "an integration parameter" for name in values if name not in taken})
    taken.update({name: "an output of access_outputs" for name in access_outputs})
    taken.update({name: "a late placeholder" for name in templating.LATE_PLACEHOLDERS})
    later = step_output_names(raw)
    steps: list[LoginStep] = []
    earlier: dict[str, str] = {}  # outputs of the steps built so far: placeholders from the next one on
    for index, step in enumerate(raw):
        built = _build_step(
            index, step, len(raw), checked, values, {**late, **templating.kept_late(set(earlier))},
            base_url, origins, [n for n in later if n not in earlier], taken, build_request, problems,
        )  # fmt: skip
        if built is None:
            continue
        steps.append(built)
        for name, _ in built.outputs:
            earlier[name] = f"an output of access_steps[{index}]"
        taken.update(earlier)
    return tuple(steps), problems


def _build_step(
    index: int,
    step: Any,
    total: int,
    checked: Mapping[str, Any],
    values: Mapping[str, str],
    open_names: Mapping[str, str],
    base_url: str | None,
    origins: set[Origin],
    later: Sequence[str],
    taken: Mapping[str, str],
    build_request: BuildRequest,
    problems: list[str],
) -> LoginStep | None:
    """One step, checked; None (and its problems reported) when it cannot be built.

    Over 60 lines: one check per key of the step, in `STEP_KEYS` order, all reporting into `problems`.
    """
    where = f"access_steps[{index}]"
    if not isinstance(step, Mapping):
        problems.append(
            f"{where}: expected an object with keys {', '.join(STEP_KEYS)}, found {type(step).__name__}"
        )
        return None
    start = len(problems)
    unknown = sorted(str(k) for k in step if k not in STEP_KEYS)
    if unknown:
        problems.append(f"{where}: expected only the keys {', '.join(STEP_KEYS)}, found {', '.join(unknown)}")
    endpoint = step.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.strip():
        problems.append(f"{where}.endpoint: expected a path under the Base URL or a URL, found {endpoint!r}")
        endpoint = None
    parameters, headers = step.get("parameters") or {}, step.get("headers") or {}
    for key, value in (
        ("parameters", parameters),
        ("headers", headers),
        ("outputs", step.get("outputs") or {}),
    ):
        if not isinstance(value, Mapping):
            problems.append(f"{where}.{key}: expected a JSON object, found {type(value).__name__}")
    verb = str(step.get("verb") or ("POST" if parameters else "GET")).upper()
    if verb not in ("GET", "POST"):
        problems.append(f"{where}.verb: expected GET or POST, found {step.get('verb')!r}")
    body = str(step.get("body") or checked.get("access_body") or "form").lower()
    if body not in ("form", "json"):
        problems.append(f"{where}.body: expected form or json, found {step.get('body')!r}")
    outputs = parse_outputs(f"{where}.outputs", step.get("outputs") or {}, taken, problems)
    if len(problems) > start:
        return None
    assert endpoint is not None
    available = {**values, **open_names}
    for name in templating.missing_placeholders([parameters, headers], available):
        if name in later:
            problems.append(
                f"{where}: placeholder {{{name}}} is an output of this step or a later one; a step can use "
                "the outputs of the steps before it only"
            )
        else:
            problems.append(f"{where}: placeholder {{{name}}} has no value")
    if "{" in endpoint and set(templating.placeholders(endpoint)) & (set(open_names) | set(later)):
        problems.append(
            f"{where}.endpoint: expected no output or late placeholder in the URL (it would be logged)"
        )
    if len(problems) > start:
        return None
    try:
        url = templating.render_url(endpoint.strip(), values, f"{where}.endpoint")
        rendered_parameters = templating.render_object(parameters, available, f"{where}.parameters")
        rendered_headers = templating.render_headers(headers, available, f"{where}.headers")
    except PlaceholderError as exc:
        problems.append(str(exc))
        return None
    if "://" not in url:
        if not base_url:
            return None  # the host's problem is reported already
        url = base_url + ("" if url.startswith("/") else "/") + url
    elif url_problem(problems, f"{where}.endpoint", url, HTTP_URL):
        return None
    if origin_of(url) not in origins:
        scheme, host, port = origin_of(url)
        problems.append(
            f"{where}.endpoint: expected a path or a URL on the origin of the token endpoint, of host or of "
            f"allowed_hosts; found a URL on {scheme}://{host}:{port}"
        )
        return None
    fields = {**checked, "access_verb": verb, "access_body": body, "access_auth": "body"}
    request, found = build_request(fields, url, rendered_parameters, rendered_headers)
    problems += [
        p.replace("access_parameters", f"{where}.parameters").replace("access_headers", f"{where}.headers")
        for p in found
    ]
    return LoginStep(index + 1, request, outputs, total)
