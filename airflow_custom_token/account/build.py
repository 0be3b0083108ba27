"""Building the connected account in named phases; `build_account` runs them all."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from airflow_custom_token import templating
from airflow_custom_token.account.chain import MergedChain, merge_chain
from airflow_custom_token.account.checks import (
    check_fields,
    check_outputs,
    check_token_location,
    check_transport,
    proxy_secrets,
)
from airflow_custom_token.account.connected import ConnectedAccount, PerToken, Transport
from airflow_custom_token.account.raw import RawConnection, is_secret_name
from airflow_custom_token.account.refresh import build_refresh
from airflow_custom_token.account.steps import build_steps, step_output_names
from airflow_custom_token.account.urls import BASE_URL_EXPECTED, HTTP_URL, origin_of, origin_text, url_problem
from airflow_custom_token.assertion import AssertionSpec, assertion_spec
from airflow_custom_token.errors import (
    ConfigurationError,
    PlaceholderError,
)
from airflow_custom_token.fields import (
    REDIRECT_URIS,
    STANDARD_FIELDS,
    extra_field,
    option_default,
)
from airflow_custom_token.redaction import redact_string
from airflow_custom_token.wire import HttpRequest


def collect_values(
    merged: MergedChain,
    checked: Mapping[str, Any],
    task_parameters: Mapping[str, Any] | None = None,
    redirect_uris: Mapping[str, str] = REDIRECT_URIS,
) -> tuple[dict[str, str], list[str]]:
    """The placeholder values, lowest precedence first: `redirectUri` (of the realm), `login`,
    `password`, the integration parameters merged along the chain, the task's parameters."""
    problems: list[str] = []
    values: dict[str, str] = {"redirectUri": redirect_uris.get(checked["realm"], "")}
    for std in STANDARD_FIELDS:
        value = merged.standard.get(std.name)
        if std.placeholder_name and value is not None:
            values[std.placeholder_name] = value
    params = {**checked["integration_parameters"], **dict(task_parameters or {})}
    values.update(_str_map("integration_parameters", params, problems))
    return values, problems


def _str_map(key: str, obj: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(obj, Mapping):
        problems.append(f"{key}: expected a JSON object of names to values, found {type(obj).__name__}")
        return {}
    out: dict[str, str] = {}
    for name, value in obj.items():
        if isinstance(value, dict | list):
            problems.append(f"{key}.{name}: expected text or a number, found {type(value).__name__}")
            continue
        out[str(name)] = (
            "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        )
    return out


def secret_values(values: Mapping[str, str]) -> list[str]:
    """The password and every secret-named parameter's value: masked and redacted like the token."""
    secrets = [values["password"]] if values.get("password") else []
    secrets += [v for k, v in values.items() if is_secret_name(k) and k != "redirectUri" and v]
    return list(dict.fromkeys(secrets))


@dataclass(frozen=True)
class RenderedInputs:
    """Every input with its placeholders resolved; None where rendering failed (a problem says why)."""

    base_url: str | None  # host, without a trailing slash
    token_url: str | None  # access_endpoint, joined to base_url when relative
    access_parameters: Any
    access_headers: Any
    inject_name: str | None
    inject_segments: tuple[str | None, ...]  # inject_template split at {token} (and at each output)
    request_headers: tuple[tuple[str, str], ...]
    request_query: tuple[tuple[str, str], ...]
    test_url: str | None  # test_endpoint, when set, with a base URL and every placeholder available
    inject_slots: tuple[str, ...] = ()  # what goes between the segments: `token` or an output's name
    token_headers: tuple[tuple[str, PerToken], ...] = ()  # request parameters that hold an output
    token_query: tuple[tuple[str, PerToken], ...] = ()


def _split_slots(text: str, slots: Sequence[str]) -> list[str]:
    """`text` split at the placeholders `slots` name: literal text and slot names alternate."""
    pattern = "|".join(re.escape(slot) for slot in sorted(slots, key=len, reverse=True))
    return re.split(rf"\{{({pattern})\}}", text) if pattern else [text]


def render_inputs(
    merged: MergedChain,
    checked: Mapping[str, Any],
    values: Mapping[str, str],
    outputs: Sequence[str] = (),
    late: Mapping[str, str] | None = None,
) -> tuple[RenderedInputs, list[str]]:
    """Resolve the placeholders of every input; check the URLs' shape.

    The placeholders of `outputs` (names of additional outputs) and `{token}` stay open in
    `inject_template` and in the values of `request_parameters`: they are filled per token (`PerToken`).
    Those of `late` (`late_placeholders`) stay open in `access_parameters` and `access_headers`: they
    are filled per token request (`templating.fill_late`).

    Over 60 lines: one step per input field, in the table's order, all reporting into one `problems`.
    """
    problems: list[str] = []

    token_values = {**values, **(late or {})}

    def render(
        name: str, fn: Callable[[Any, Mapping[str, str], str], Any], value: Any, late_too: bool = False
    ) -> Any:
        try:
            return fn(value, token_values if late_too else values, name)
        except PlaceholderError as exc:
            problems.append(str(exc))
            return None

    base_url = render("host", templating.render_url, (merged.host or "").rstrip("/"))
    if base_url and url_problem(problems, "host", base_url, BASE_URL_EXPECTED):
        base_url = None  # reported once: not joined to the endpoints, not an origin
    endpoint = render("access_endpoint", templating.render_url, checked["access_endpoint"] or "")
    if endpoint and "://" not in endpoint and base_url:
        endpoint = base_url + ("" if endpoint.startswith("/") else "/") + endpoint
    elif endpoint and "://" in endpoint:
        url_problem(problems, "access_endpoint", endpoint, HTTP_URL)
    access_params = render(
        "access_parameters", templating.render_object, checked["access_parameters"] or {}, late_too=True
    )
    access_headers = render(
        "access_headers", templating.render_headers, checked["access_headers"] or {}, late_too=True
    )
    in_header = checked["inject_as"] != "url"
    inject_name = render("inject_name", templating.render_header, checked["inject_name"] or "")
    per_token_start = len(problems)
    pieces = _split_slots(checked["inject_template"] or "", ("token", *outputs))
    render_piece = templating.render_header if in_header else templating.render_text
    segments = tuple(render("inject_template", render_piece, s) for s in pieces[0::2])
    request_parameters = checked["request_parameters"] or {}
    header_params, header_held = _hold_outputs(request_parameters.get("header") or {}, outputs)
    query_params, query_held = _hold_outputs(request_parameters.get("url") or {}, outputs)
    req_headers = render("request_parameters", templating.render_headers, header_params)
    req_query = render("request_parameters", templating.render_object, query_params)
    token_params: dict[str, list[tuple[str, PerToken]]] = {"header": [], "url": []}
    for kind, held in (("header", header_held), ("url", query_held)):
        render_part = templating.render_header if kind == "header" else templating.render_text
        for key, text in held.items():
            name = render("request_parameters", render_part, str(key))
            split = _split_slots(text, outputs)
            parts = [render(f"request_parameters.{key}", render_part, p) for p in split[0::2]]
            if name is not None and None not in parts:
                token_params[kind].append((name, PerToken(tuple(p or "" for p in parts), tuple(split[1::2]))))
    if outputs:  # a misspelt output is a placeholder with no value: say which outputs there are
        for index in range(per_token_start, len(problems)):
            if "has no value" in problems[index]:
                problems[index] += f"; outputs available: {', '.join(outputs)}"
    test_endpoint = checked["test_endpoint"]
    test_url: str | None = None
    if test_endpoint:
        missing = templating.missing_placeholders(test_endpoint, values)
        if missing:
            problems.append(f"test_endpoint: placeholder {{{missing[0]}}} has no value")
        elif base_url:
            test_url = render("test_endpoint", templating.render_url, test_endpoint) or ""
    header_map = {} if req_headers is None else _str_map("request_parameters.header", req_headers, problems)
    query_map = {} if req_query is None else _str_map("request_parameters.url", req_query, problems)
    rendered = RenderedInputs(
        base_url=base_url,
        token_url=endpoint,
        access_parameters=access_params,
        access_headers=access_headers,
        inject_name=inject_name,
        inject_segments=segments,
        request_headers=tuple(header_map.items()),
        request_query=tuple(query_map.items()),
        test_url=test_url,
        inject_slots=tuple(pieces[1::2]),
        token_headers=tuple(token_params["header"]),
        token_query=tuple(token_params["url"]),
    )
    return rendered, problems


def _hold_outputs(params: Any, outputs: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """`params` without the values that hold an output's placeholder, and those values by key."""
    if not outputs or not isinstance(params, Mapping):
        return params, {}
    rest: dict[str, Any] = {}
    held: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, str) and set(templating.placeholders(value)) & set(outputs):
            held[str(key)] = value
        else:
            rest[key] = value
    return rest, held


#: The field that configures each late placeholder: `{assertion}` is signed with `assertion_private_key`.
LATE_FIELDS: Mapping[str, str] = {"assertion": "assertion_private_key"}


def late_placeholders(
    checked: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The late placeholders the token request keeps open (`templating.LATE_PLACEHOLDERS` whose
    feature the account configures; it wins over a parameter of the same name), and the problems: a
    late placeholder used without its feature (and without a parameter of that name), a feature set
    whose placeholder no token or refresh request uses. `{refresh_token}` belongs to the refresh
    request (`refresh.build_refresh`) only."""
    token_fields = [checked["access_parameters"], checked["access_headers"]]
    steps = checked["access_steps"] if isinstance(checked["access_steps"], list) else []
    token_fields += [[s.get("parameters"), s.get("headers")] for s in steps if isinstance(s, Mapping)]
    used = set(templating.missing_placeholders(token_fields, {}))
    if checked["refresh_path"]:
        used |= set(templating.missing_placeholders(checked["refresh_parameters"], {})) - {"refresh_token"}
    problems: list[str] = []
    kept: set[str] = set()
    if "refresh_token" in used and "refresh_token" not in values:
        problems.append(
            "access_parameters: placeholder {refresh_token} is filled in refresh_parameters only (the "
            "refresh request); remove it here"
        )
        kept.add("refresh_token")  # reported once, here
    for name in sorted(templating.LATE_PLACEHOLDERS - {"refresh_token"}):
        field = LATE_FIELDS.get(name)
        configured = field is not None and checked.get(field) not in (None, "")
        if configured and name not in used:
            problems.append(
                f"{field}: set, but neither access_parameters, access_headers nor a login step uses "
                f"{{{name}}}, "
                f'e.g. {{"client_assertion": "{{{name}}}"}}'
            )
        if configured:
            kept.add(name)
        elif name in used and name not in values:
            problems.append(
                f"access_parameters: placeholder {{{name}}} is filled for each token request only when "
                f"{field or 'its feature'} is set; set it, or remove the placeholder"
            )
            kept.add(name)  # reported once, here
    return templating.kept_late(kept), problems


def allowed_origins(
    base_url: str | None, allowed_hosts: Sequence[str] | None, test_url: str | None = None
) -> tuple[frozenset[tuple[str, str, int | None]], list[str]]:
    """The origin of the base URL plus `allowed_hosts` (a bare host name means https); a test endpoint
    elsewhere could never be called with the token, so it is a problem too."""
    problems: list[str] = []
    allowed = {origin_of(base_url)} if base_url else set()
    either = "a host name (meaning https) or an origin like https://host:port"
    for entry in allowed_hosts or []:
        if "://" in entry:
            if not url_problem(problems, "allowed_hosts", entry, either + ", {found}"):
                allowed.add(origin_of(entry))
        elif templating.HOST_NAME.fullmatch(entry):
            allowed.add(("https", entry.lower(), 443))
        else:
            problems.append(f"allowed_hosts: expected {either}, found {entry!r}")
    absolute_test = bool(test_url) and "://" in str(test_url)
    if absolute_test and not url_problem(problems, "test_endpoint", str(test_url), HTTP_URL):
        scheme, host, port = origin_of(str(test_url))
        if (scheme, host, port) not in allowed:
            problems.append(
                f"test_endpoint: expected a path or a URL on the origin of host ({origin_text(base_url)}) or "
                f"of allowed_hosts; found a URL on {scheme}://{host}:{port}, which would receive the token"
            )
    return frozenset(allowed), problems


def basic_authorization(
    checked: Mapping[str, Any], values: Mapping[str, str]
) -> tuple[str | None, list[str]]:
    """`access_auth` basic: the token request's `Authorization: Basic base64(login:password)` value
    (RFC 7617, UTF-8), from the values of `{login}` and `{password}`; `client_secret_basic`: the same
    with each form-encoded first (RFC 6749 section 2.3.1: how OAuth servers decode it, so that `+`,
    `%`, `:` or a space in a secret arrive as sent); None for `body`."""
    auth = checked["access_auth"]
    if auth not in ("basic", "client_secret_basic"):
        return None, []
    login, password = values.get("login"), values.get("password") or ""
    if not login:
        return None, [f"access_auth: {auth} sends login:password in an Authorization header; set login"]
    if auth == "client_secret_basic":
        login, password = quote_plus(login, safe=""), quote_plus(password, safe="")
    elif ":" in login:
        return None, [
            "access_auth: basic cannot send a login that contains ':' (RFC 7617); found one that does"
        ]
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii"), []


def build_token_request(
    checked: Mapping[str, Any],
    rendered: RenderedInputs,
    secrets: Sequence[str] = (),
    authorization: str | None = None,
) -> tuple[HttpRequest, list[str]]:
    """The token request: the verb, the rendered endpoint, parameters as query (GET), form or JSON
    body (POST), headers (`authorization` as the Authorization header: `basic_authorization`), timeout
    and TLS verification. Parameter and header values must be text."""
    problems: list[str] = []
    verb = checked["access_verb"] or ""
    body = checked["access_body"]
    headers: tuple[tuple[str, str], ...] = ()
    if rendered.access_headers is not None:
        headers = tuple(_str_map("access_headers", rendered.access_headers, problems).items())
    if authorization is not None:
        if any(name.lower() == "authorization" for name, _ in headers):
            problems.append(
                f"access_auth: {checked['access_auth']} sets the Authorization header of the token "
                "request, which access_headers sets too; remove it from access_headers"
            )
        headers = (*headers, ("Authorization", authorization))
    json_body = verb != "GET" and body == "json"
    flat_params: tuple[tuple[str, str], ...] = ()
    if rendered.access_parameters is not None and not json_body:
        flat_params = tuple(_str_map("access_parameters", rendered.access_parameters, problems).items())
    request = HttpRequest(
        method=verb,
        url=rendered.token_url or "",
        params=flat_params if verb == "GET" else (),
        headers=headers,
        form=None if verb == "GET" or json_body else flat_params,
        json=rendered.access_parameters if json_body else None,
        timeout=checked["timeout"],
        verify=bool(checked["verify"]),
        redact=tuple(s for s in secrets if s),
    )
    return request, problems


def check_lifetime(checked: Mapping[str, Any], max_lifetime: float) -> list[str]:
    """`access_lifetime` within `[custom_token] max_token_lifetime`, which would cut it short anyway.

    The table's default (3600, which the form saves with every connection) is not a choice: under a
    shorter `max_token_lifetime` it becomes that (`default_lifetime`), with no error.
    """
    lifetime = checked["access_lifetime"]
    default = extra_field("access_lifetime").default
    if isinstance(lifetime, int) and lifetime > max_lifetime and lifetime != default:
        return [
            f"access_lifetime: expected at most [custom_token] max_token_lifetime ({max_lifetime:g} s), "
            f"found {lifetime}"
        ]
    return []


def build_account(
    chain: list[RawConnection],
    task_parameters: Mapping[str, Any] | None = None,
    *,
    redirect_uris: Mapping[str, str] = REDIRECT_URIS,
    api_timeout: float | None = None,
    max_lifetime: float | None = None,
) -> ConnectedAccount:
    """Run every phase on the chain (account first); raise one `ConfigurationError` listing every
    problem, or return the connected account.

    :param api_timeout: the API requests' timeout when the connection sets none (`[custom_token]
        api_request_timeout`; None: its default).
    """
    merged, problems = merge_chain(chain)
    checked, found = check_fields(merged, choices={"realm": tuple(redirect_uris)})
    problems += found
    problems += check_token_location(checked)
    problems += check_transport(checked)
    if max_lifetime is None:
        max_lifetime = option_default("max_token_lifetime")
    problems += check_lifetime(checked, max_lifetime)
    values, found = collect_values(merged, checked, task_parameters, redirect_uris)
    problems += found
    outputs, found = check_outputs(checked, values)
    problems += found
    late, found = late_placeholders(checked, values)
    problems += found
    step_outputs = [
        n for n in step_output_names(checked["access_steps"]) if templating.PLACEHOLDER.fullmatch(f"{{{n}}}")
    ]
    token_late = {**late, **templating.kept_late(set(step_outputs))}  # the login's outputs: filled per login
    output_names = [*(name for name, _ in outputs), *step_outputs]
    rendered, found = render_inputs(merged, checked, values, output_names, token_late)
    problems += found
    assertion: AssertionSpec | None = None
    if "assertion" in late:
        assertion, found = assertion_spec(checked, values, rendered.token_url)
        problems += found
    allowed, found = allowed_origins(rendered.base_url, checked["allowed_hosts"], rendered.test_url)
    problems += found
    secrets = secret_values(values)
    secrets += [s for s in proxy_secrets(checked["proxies"]) if s not in secrets]
    key_text = str(checked["assertion_private_key"] or "")
    if key_text and not templating.PLACEHOLDER.fullmatch(key_text.strip()):  # `{password}` is one already
        secrets.append(key_text)
    authorization, found = basic_authorization(checked, values)
    problems += found
    if authorization is not None:  # the client's credentials, encoded: as secret as the password
        secrets += [authorization, authorization.removeprefix("Basic ")]
    token_request, found = build_token_request(checked, rendered, secrets, authorization)
    problems += found
    if checked["initial_refresh_token"]:
        secrets.append(str(checked["initial_refresh_token"]))
    refresh, found = build_refresh(
        checked,
        values,
        late,
        rendered.base_url,
        lambda fields, url, parameters: build_token_request(
            fields, dataclasses.replace(rendered, token_url=url, access_parameters=parameters), secrets,
            authorization,
        ),
    )  # fmt: skip
    problems += found
    steps, found = build_steps(
        checked, values, late, rendered.base_url, allowed, rendered.token_url, [n for n, _ in outputs],
        lambda fields, url, parameters, headers: build_token_request(
            fields,
            dataclasses.replace(
                rendered, token_url=url, access_parameters=parameters, access_headers=headers
            ),
            secrets,
        ),
    )  # fmt: skip
    problems += found
    if problems:  # a problem quotes values that can hold no secret; a secret is masked anyway
        raise ConfigurationError(merged.conn_id, [redact_string(p, secrets) for p in problems])

    assert rendered.base_url is not None and rendered.inject_name is not None
    return ConnectedAccount(
        conn_id=merged.conn_id,
        integration_name=checked["integration_name"] or merged.conn_id,
        integration_key=str(checked["integration_key"]),
        base_url=rendered.base_url,
        token_request=token_request,
        response_path=str(checked["access_response_path"]),
        expiry_path=str(checked["access_expiry_path"]),
        default_lifetime=int(min(checked["access_lifetime"], max_lifetime)),
        inject_as=checked["inject_as"],
        inject_name=rendered.inject_name,
        inject_segments=tuple(s or "" for s in rendered.inject_segments),
        request_headers=rendered.request_headers,
        request_query=rendered.request_query,
        refresh_on=frozenset(checked["refresh_on"]),
        test_endpoint=checked["test_endpoint"],
        timeout=checked["timeout"],
        api_timeout=checked["timeout"] or api_timeout or option_default("api_request_timeout"),
        verify=bool(checked["verify"]),
        allowed_origins=allowed,
        values=values,
        secrets=tuple(secrets),
        outputs=outputs,
        inject_slots=rendered.inject_slots,
        token_headers=rendered.token_headers,
        token_query=rendered.token_query,
        request_retries=int(checked["request_retries"]),
        refresh=refresh,
        assertion=assertion,
        steps=steps,
        transport=Transport(
            verify=bool(checked["verify"]),
            ca_bundle=checked["ca_bundle"] or None,
            client_cert=checked["client_cert"] or None,
            client_key=checked["client_key"] or None,
            proxies=tuple((str(k), str(v).strip()) for k, v in (checked["proxies"] or {}).items()),
        ),
    )
