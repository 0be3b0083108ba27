"""Every connection field and every ``[custom_token]`` option, each declared once. Standard library only.

Everything else reads these tables: ``get_provider_info`` builds the connection form (``conn-fields``,
``ui-field-behaviour``) and the ``config`` section from them; the account builder (``spec.check_fields``)
runs the generic checks (required, type, choices, pattern, range, list items, object keys) from them;
``settings.Settings`` takes its defaults from them; ``tests/test_readme.py`` checks the README's field and
option tables against them. Provider discovery imports this module: it must stay standard library only.

Adding a connection extra field
-------------------------------
1. One ``ExtraField(...)`` entry in ``EXTRA_FIELDS``, where the form should show it: key, label, one-line
   description, kind, and whatever applies of ``default`` (the value when no connection of the chain sets
   it), ``prefill`` (what the form fills in for a field without a default), ``need``, ``choices``,
   ``pattern`` (+ ``pattern_help``), ``minimum``/``exclusive_minimum``/``maximum`` (+ ``unit``), ``items``,
   ``keys``, ``secret``. The form, the type coercion and those checks follow with no other change.
2. Its meaning: read ``checked["<key>"]`` (typed, checked, defaulted) in the phase of ``spec.build_account``
   that uses it, and carry it on ``ConnectedAccount`` if the hook or the flow needs it.
3. Its row in the README's field table (``tests/test_readme.py`` says what is missing).

The key must not contain a word that Airflow's secrets masker treats as sensitive (``token``,
``secret``, ``password``, ``proxy``, ``proxies``, ``private_key``, ``bearer``, ...: see
``tests/unit/test_fields.py``): the masker hides the values of extra keys by *substring*, so a key such as
``token_parameter_type`` would register the word ``header`` as a secret in every log. Only a field whose
value is a secret (``secret=True``) may carry such a word, since masking its value is then the point.
``proxies`` is such a field, on purpose: it is the name requests and Airflow's ``HttpHook`` use, a proxy
URL may carry credentials (``http://user:pass@proxy:3128``), and its value is an object whose entries are
proxy URLs, never a common word; the account builder adds each URL's password to the account's secrets.

Adding a ``[custom_token]`` option
----------------------------------
1. One ``Option(...)`` entry in ``OPTIONS``: name, type, default and example (as text, the way
   ``airflow.cfg`` holds them), description, and ``minimum`` for numbers.
2. An attribute of the same name on ``settings.Settings`` whose default is ``option_default("<name>")``;
   ``load_settings`` then reads, parses and checks it with no other change.
3. Its row in the README's option table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "BUILT_INS",
    "CONFIG_SECTION",
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "EXTRA_FIELDS",
    "FIELDS",
    "FORM_DEFAULTS",
    "LEGACY_PREFIX",
    "OPTIONS",
    "REALMS",
    "REDIRECT_URIS",
    "STANDARD_FIELDS",
    "ExtraField",
    "Item",
    "Option",
    "StandardField",
    "conn_field",
    "extra_field",
    "option",
    "option_default",
    "ui_field_behaviour",
]

# ---------------------------------------------------------------------------------------------------
# Constants

CONN_TYPE = "custom_token"
DEFAULT_CONN_ID = "custom_token_default"
#: How older UIs prefixed the extra keys (``extra__custom_token__<key>``); still read.
LEGACY_PREFIX = f"extra__{CONN_TYPE}__"
CONFIG_SECTION = "custom_token"
CONFIG_DESCRIPTION = "Token caching, refreshing and retrying of the Custom Token provider."

REALMS: tuple[str, ...] = ("us", "eu", "ap")
#: Redirect URI of each realm: ``{redirectUri}`` in any input. Overridable in ``[custom_token]``.
REDIRECT_URIS: Mapping[str, str] = MappingProxyType(
    {realm: f"https://{realm}.api.prod.airkit.com/internal/sessions/v1/auth/callback" for realm in REALMS}
)
#: Placeholders every connection has, besides its integration parameters (lowest precedence).
BUILT_INS: tuple[str, ...] = ("login", "password", "redirectUri")

Kind = Literal["str", "int", "number", "bool", "object", "list"]
#: ``required``: the form requires it (and pre-fills it); ``required_unless_inherited``: optional in the
#: form, since a connected account inherits it through ``integration_conn_id``, but the merged chain must
#: provide it. Either way the account builder reports it missing when nothing provides it.
Need = Literal["optional", "required", "required_unless_inherited"]

_JSON_TYPES: Mapping[str, str] = {
    "str": "string",
    "int": "integer",
    "number": "number",
    "bool": "boolean",
    "object": "object",
    "list": "array",
}


# ---------------------------------------------------------------------------------------------------
# Connection fields


@dataclass(frozen=True)
class Item:
    """What each element of a list field must be."""

    kind: Literal["str", "int"]
    noun: str  # how an error names the elements: "expected HTTP status codes (100-599), found ..."
    minimum: int | None = None
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.kind]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema

    def expected(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"{self.noun} ({self.minimum}-{self.maximum})"
        return self.noun


@dataclass(frozen=True)
class ExtraField:
    """One key of the connection's ``extra``: its form input, its type and its generic checks."""

    key: str
    label: str  # the form's label
    description: str  # the form's one-line help
    kind: Kind
    default: Any = None  # the value when no connection of the chain sets it (None: no value)
    prefill: Any = None  # what the form fills in, for a field without a default (a required one)
    need: Need = "optional"
    choices: tuple[str, ...] = ()  # matched ignoring case; the value becomes the choice as spelled here
    pattern: str | None = None  # a JSON-schema (search) regex the text must match
    pattern_help: str = ""  # what the pattern means, for the error: "letters and digits only"
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    unit: str = ""  # of a number, for errors: "seconds"
    items: Item | None = None  # of a list
    keys: tuple[str, ...] = ()  # the only keys an object may have (empty: any)
    merge_by_key: bool = False  # an object merged key by key along the inheritance chain
    keep_empty: bool = False  # an empty list is a value (not "unset, inherit")
    secret: bool = False  # its value is a secret: a password input, masked, never shown

    @property
    def form_default(self) -> Any:
        """What the form pre-fills. An account's value equal to it does not override an inherited one:
        a form-saved account always holds it, chosen or not."""
        return self.default if self.prefill is None else self.prefill

    def fresh_default(self) -> Any:
        """The default, as a copy the caller may change."""
        return _copy(self.default)

    @property
    def required(self) -> bool:
        """Must the merged chain provide a value?"""
        return self.need != "optional"

    @property
    def is_json(self) -> bool:
        """Edited as JSON (an object, or a list of other things than text) rather than as text."""
        return self.kind == "object" or (
            self.kind == "list" and (self.items is None or self.items.kind != "str")
        )

    def schema(self) -> dict[str, Any]:
        """The field's JSON schema, in the idioms of Airflow's connection form (a non-null type shows
        as required; ``enum`` as a select; ``object`` as a JSON editor; ``format: password`` hides it)."""
        type_ = _JSON_TYPES[self.kind]
        schema: dict[str, Any] = {"type": type_ if self.need == "required" else [type_, "null"]}
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        for name, value in (
            ("minimum", self.minimum),
            ("exclusiveMinimum", self.exclusive_minimum),
            ("maximum", self.maximum),
        ):
            if value is not None:
                schema[name] = value
        if self.items is not None:
            schema["items"] = self.items.schema()
        elif self.kind == "list":  # of objects (`access_steps`): a JSON editor in the form, not lines of text
            schema["items"] = {"type": "object"}
        if self.secret and self.kind == "str":
            schema["format"] = "password"
        if self.form_default is not None:
            schema["default"] = _copy(self.form_default)
        return schema

    def range_text(self) -> str:
        """What the range check expects, for its error: "a positive number of seconds"."""
        unit = f" of {self.unit}" if self.unit else ""
        positive = self.exclusive_minimum == 0 or (self.kind == "int" and self.minimum == 1)
        if positive and self.maximum is None:
            return f"a positive number{unit}"
        bounds = []
        if self.exclusive_minimum is not None:
            bounds.append(f"> {_num(self.exclusive_minimum)}")
        elif self.minimum is not None:
            bounds.append(f">= {_num(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"<= {_num(self.maximum)}")
        return f"a number{unit} {' and '.join(bounds)}"


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


_REALMS_HELP = "; ".join(f"{realm}: {uri}" for realm, uri in REDIRECT_URIS.items())
_SECONDS = "seconds"

#: The connection's extra fields, in the order of the form.
EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField(
        "integration_name", "Integration Name",
        "Display name of the integration; defaults to the connection id.",
        "str",
    ),
    ExtraField(
        "integration_key", "Key",
        "Unique identifier of the integration: letters and digits only. Required, unless inherited "
        "through Integration.",
        "str", need="required_unless_inherited",
        pattern="^[A-Za-z0-9]+$", pattern_help="letters and digits only",
    ),
    ExtraField(
        "integration_parameters", "Integration Parameters",
        "Values for {parameterName} placeholders in any input, for this connected account.",
        "object", merge_by_key=True,
    ),
    ExtraField(
        "integration_conn_id", "Integration",
        "Connection id of another Custom Token connection whose integration definition this one inherits "
        "(a connected account of a shared integration).",
        "str",
    ),
    ExtraField(
        "access_endpoint", "Access Token Endpoint",
        "URL that returns the access token. Required, unless inherited through Integration.",
        "str", need="required_unless_inherited",
    ),
    ExtraField(
        "access_verb", "Access Token Verb",
        "HTTP verb of the token request.",
        "str", need="required", prefill="POST", choices=("GET", "POST"),
    ),
    ExtraField(
        "access_parameters", "Access Token Parameters",
        "Parameters of the token request: the query string for GET, the body for POST.",
        "object",
    ),
    ExtraField(
        "access_body", "Access Token Body Format",
        "Encoding of the POST body: form (application/x-www-form-urlencoded) or json.",
        "str", default="form", choices=("form", "json"),
    ),
    ExtraField(
        "access_headers", "Access Token Headers",
        "Headers of the token request.",
        "object",
    ),
    ExtraField(
        "access_auth", "Access Token Authentication",
        "How the token request authenticates the client: body (credentials only where Access Token "
        "Parameters puts them), basic (an Authorization: Basic header of Login and Password) or "
        "client_secret_basic (the same, each form-encoded first, as OAuth 2.0 servers read it).",
        "str", default="body", choices=("body", "basic", "client_secret_basic"),
    ),
    ExtraField(
        "access_response_path", "Token Location",
        "Where the answer carries the token: a dotted JSON path, header:<Name>, cookie:<name>, "
        "or text (the whole body).",
        "str", default="access_token",
    ),
    ExtraField(
        "access_outputs", "Additional Outputs",
        'Other values the token answer carries, read with the token: {"name": "location"}, each '
        "location as in Token Location; usable as {name} in the token value template and the request "
        "parameters.",
        "object",
    ),
    ExtraField(
        "access_steps", "Login Steps",
        'Requests sent before the token request, in order (at most 5): [{"endpoint": "/login", '
        '"verb": "POST", "parameters": {...}, "body": "form", "headers": {...}, "outputs": '
        '{"name": "location"}}]; each output is a {name} placeholder of the later steps, the token '
        "request and the API requests; cookies a step receives go to later requests on the same host.",
        "list",
    ),
    ExtraField(
        "access_expiry_path", "Expiry Location",
        "Dotted JSON path, or header:<Name>, of the token's lifetime in seconds, or of its absolute "
        "expiry time (epoch seconds or ISO 8601).",
        "str", default="expires_in",
    ),
    ExtraField(
        "access_lifetime", "Default Lifetime (s)",
        "Lifetime in seconds assumed when the token answer states none; at most [custom_token] "
        "max_token_lifetime (the default is cut to it).",
        "int", default=3600, minimum=1, unit=_SECONDS,
    ),
    ExtraField(
        "refresh_path", "Refresh Token Location",
        "Where the token answer carries a refresh token (as in Token Location); set, tokens are renewed "
        "with a refresh request while a refresh token is known, and a new one in the answer replaces it.",
        "str",
    ),
    ExtraField(
        "refresh_endpoint", "Refresh Token Endpoint",
        "URL of the refresh request. Empty: the Access Token Endpoint.",
        "str",
    ),
    ExtraField(
        "refresh_verb", "Refresh Token Verb",
        "HTTP verb of the refresh request.",
        "str", default="POST", choices=("GET", "POST"),
    ),
    ExtraField(
        "refresh_parameters", "Refresh Token Parameters",
        "Parameters of the refresh request ({refresh_token} is the stored refresh token), sent with the "
        "token request's body format, headers and client authentication.",
        "object", default={"grant_type": "refresh_token", "refresh_token": "{refresh_token}"},
    ),
    ExtraField(
        "initial_refresh_token", "Initial Refresh Token",
        "A refresh token from a one-time consent: with no refresh token stored yet, the first token "
        "comes from a refresh request with it. Set a new one to re-seed.",
        "str", secret=True,
    ),
    ExtraField(
        "refresh_lifetime", "Refresh Token Lifetime (s)",
        "How long a refresh token is kept when the answer states no refresh_expires_in (at most 366 days).",
        "int", default=2_592_000, minimum=1, maximum=31_622_400, unit=_SECONDS,
    ),
    ExtraField(
        "inject_as", "Token Parameter Type",
        "Where API requests carry the token: an HTTP header or a URL query parameter.",
        "str", need="required", prefill="header", choices=("header", "url"),
    ),
    ExtraField(
        "inject_name", "Token Parameter Name",
        "Name of the header or query parameter that carries the token.",
        "str", need="required", prefill="Authorization",
    ),
    ExtraField(
        "inject_template", "Token Parameter Value Template",
        "Value of that header or parameter; must contain {token}, e.g. Bearer {token}.",
        "str", need="required", prefill="Bearer {token}",
        pattern=r".*\{token\}.*", pattern_help="a template containing {token}",
    ),
    ExtraField(
        "request_parameters", "Request Parameters",
        'Added to every API request: {"header": {"Name": "value"}, "url": {"name": "value"}}.',
        "object", keys=("header", "url"),
    ),
    ExtraField(
        "realm", "Realm",
        f"Selects the redirect URI, usable as {{redirectUri}} in any input. {_REALMS_HELP}.",
        "str", default="us", choices=REALMS,
    ),
    ExtraField(
        "refresh_on", "Refresh On Status",
        "HTTP statuses that discard the token, fetch a new one and retry the request once.",
        "list", default=[401], keep_empty=True,
        items=Item("int", "HTTP status codes", minimum=100, maximum=599),
    ),
    ExtraField(
        "request_retries", "Request Retries",
        "Retries of an idempotent API request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE; never POST or PATCH) "
        "after a connection error, a timeout, a 429, 502, 503 or 504, with backoff; 0: none.",
        "int", default=0, minimum=0, maximum=10,
    ),
    ExtraField(
        "test_endpoint", "Test Endpoint",
        "Endpoint (a path under the Base URL, or a URL) that the Test button GETs with the token.",
        "str",
    ),
    ExtraField(
        "timeout", "Timeout (s)",
        "Timeout in seconds of each request, token and API requests alike (at most an hour). Empty: "
        "[custom_token] token_request_timeout for token requests, api_request_timeout for API requests.",
        "number", exclusive_minimum=0, maximum=3600, unit=_SECONDS,
    ),
    ExtraField(
        "verify", "Verify TLS",
        "Verify the servers' TLS certificates.",
        "bool", default=True,
    ),
    ExtraField(
        "ca_bundle", "CA Bundle",
        "Path of a PEM file of the CA certificates that servers' certificates are verified against, "
        "instead of the system's (Verify TLS stays the on/off switch).",
        "str",
    ),
    ExtraField(
        "client_cert", "Client Certificate",
        "Path of a PEM file holding the TLS client certificate (and its key, unless Client Key is set), "
        "for servers that require one.",
        "str",
    ),
    ExtraField(
        "client_key", "Client Key",
        "Path of the PEM file of the client certificate's private key (not encrypted).",
        "str",
    ),
    # `proxies` is a word Airflow's secrets masker hides by key: deliberately kept (requests' and HttpHook's
    # name), marked secret since a proxy URL may carry credentials (see the module's docstring).
    ExtraField(
        "proxies", "Proxies",
        'Proxies of token and API requests, as in requests: {"https": "http://user:pass@proxy:3128"}; '
        "they win over the environment's.",
        "object", secret=True,
    ),
    ExtraField(
        "allowed_hosts", "Allowed Hosts",
        "Origins besides the Base URL's that may receive the token, one a line (https://host[:port]).",
        "list", items=Item("str", "host names or origins"),
    ),
    # Signed JWT assertions (`assertion`): the {assertion} placeholder of the token request, signed anew
    # for each request. `assertion_private_key` holds a masker word on purpose: its value is the key.
    ExtraField(
        "assertion_private_key", "Assertion Signing Key",
        "PEM private key (RS*, PS*, ES*, EdDSA) or shared secret (HS256; {password} for "
        "client_secret_jwt) that signs the {assertion} placeholder, a JWT made anew for each token request.",
        "str", secret=True,
    ),
    ExtraField(
        "assertion_algorithm", "Assertion Algorithm",
        "JWS algorithm of the {assertion} JWT.",
        "str", default="RS256",
        choices=("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256"),
    ),
    ExtraField(
        "assertion_claims", "Assertion Claims",
        'Claims of the {assertion} JWT, with placeholders: {"iss": "...", "sub": "...", "aud": "...", '
        '"scope": "..."}; aud defaults to the token endpoint URL, iss and sub to Login; exp, iat and jti '
        "are added.",
        "object",
    ),
    ExtraField(
        "assertion_lifetime", "Assertion Lifetime (s)",
        "Seconds each {assertion} JWT is valid: its exp is the time of the token request plus this.",
        "int", default=300, minimum=1, maximum=3600, unit=_SECONDS,
    ),
    ExtraField(
        "assertion_headers", "Assertion Headers",
        'Additional JOSE headers of the {assertion} JWT, with placeholders, e.g. {"kid": "key-1"}.',
        "object",
    ),
)  # fmt: skip

#: The extra fields by key.
FIELDS: Mapping[str, ExtraField] = MappingProxyType({f.key: f for f in EXTRA_FIELDS})
#: What the form pre-fills, by key.
FORM_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {f.key: f.form_default for f in EXTRA_FIELDS if f.form_default is not None}
)


def extra_field(key: str) -> ExtraField:
    """The declaration of an extra field."""
    try:
        return FIELDS[key]
    except KeyError:
        raise KeyError(f"{key!r} is not a {CONN_TYPE} extra field; known: {', '.join(FIELDS)}") from None


def conn_field(field: ExtraField | str) -> dict[str, Any]:
    """The field's ``conn-fields`` entry of the provider info: label, description and JSON schema."""
    spec = extra_field(field) if isinstance(field, str) else field
    return {"label": spec.label, "description": spec.description, "schema": spec.schema()}


# ---------------------------------------------------------------------------------------------------
# Standard connection fields (host, login, ...): how the form shows them and what they mean here


@dataclass(frozen=True)
class StandardField:
    """A standard field of an Airflow connection, as this connection type uses it."""

    name: str
    label: str | None = None  # relabeled in the form
    placeholder: str | None = None  # the form's placeholder
    hidden: bool = False  # not used: hidden in the form
    required_help: str = ""  # non-empty: required; says what it is, for the "missing" error
    placeholder_name: str | None = None  # usable as {placeholder_name} in any input


STANDARD_FIELDS: tuple[StandardField, ...] = (
    StandardField(
        "host",
        label="Base URL",
        placeholder="https://{serverName}.example.com/api",
        required_help="the base URL of the API, e.g. https://api.example.com",
    ),
    StandardField(
        "login",
        label="Login",
        placeholder="Client id or user name; usable as {login} in any input",
        placeholder_name="login",
    ),
    StandardField(
        "password",
        label="Password",
        placeholder="Client secret or password; usable as {password} in any input",
        placeholder_name="password",
    ),
    StandardField("schema", hidden=True),
    StandardField("port", hidden=True),
)


def ui_field_behaviour() -> dict[str, Any]:
    """The ``ui-field-behaviour`` of the provider info: hidden, relabeled and placeholder texts."""
    return {
        "hidden-fields": [f.name for f in STANDARD_FIELDS if f.hidden],
        "relabeling": {f.name: f.label for f in STANDARD_FIELDS if f.label},
        "placeholders": {f.name: f.placeholder for f in STANDARD_FIELDS if f.placeholder},
    }


# ---------------------------------------------------------------------------------------------------
# [custom_token] options

OptionType = Literal["string", "boolean", "integer", "float"]
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class Option:
    """One option of the ``[custom_token]`` configuration section."""

    name: str
    type: OptionType
    default: str  # as airflow.cfg holds it
    example: str
    description: str
    minimum: float = 0.0  # of a number
    version_added: str = "0.1.0"
    maximum: float | None = None  # of a number

    def parse(self, raw: str) -> Any:
        """The typed value of ``raw``; ``ValueError`` naming the option when it is not one."""
        if self.type == "boolean":
            return raw.strip().lower() in _TRUE
        if self.type == "string":
            return raw
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"[{CONFIG_SECTION}] {self.name}: expected a number, found {raw!r}") from None
        if not math.isfinite(value):  # "inf", "nan", "1e400": no bound holds them
            raise ValueError(f"[{CONFIG_SECTION}] {self.name}: expected a finite number, found {raw!r}")
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            bounds = f">= {self.minimum}" + ("" if self.maximum is None else f" and <= {self.maximum:g}")
            raise ValueError(f"[{CONFIG_SECTION}] {self.name}: expected a number {bounds}, found {raw!r}")
        return int(value) if self.type == "integer" else value

    @property
    def value(self) -> Any:
        """The typed default."""
        return self.parse(self.default)

    def provider_info(self) -> dict[str, str]:
        """The option's entry in the ``config`` section of the provider info."""
        return {
            "description": self.description,
            "version_added": self.version_added,
            "type": self.type,
            "example": self.example,
            "default": self.default,
        }


OPTIONS: tuple[Option, ...] = (
    *(
        Option(
            f"redirect_uri_{realm}", "string", uri, uri,
            f"Redirect URI of the {realm} realm: {{redirectUri}} in the inputs of a connection whose Realm "
            f"is {realm}.",
        )
        for realm, uri in REDIRECT_URIS.items()
    ),
    Option(
        "host_cache", "boolean", "True", "False",
        "Keep tokens in a persistent per-host cache, shared by the processes of this host, so that tasks "
        "reuse a token until it expires. False keeps tokens in process memory only.",
    ),
    Option(
        "cache_dir", "string", "", "/var/cache/airflow/custom_token",
        "Directory of the per-host token cache. Empty means $AIRFLOW_HOME/custom_token_cache.",
    ),
    Option(
        "cache_recheck", "float", "30", "10",
        "Seconds a process uses the token it holds before it looks in the host cache and (with the shared "
        "cache) Redis again: an invalidation (python -m airflow_custom_token invalidate) reaches every "
        "process within this. 0: on every call. At most 3600.",
        maximum=3600,
    ),
    Option(
        "refresh_margin", "float", "60", "120",
        "Seconds before expiry at which a token is refreshed; at most half of the token's lifetime.",
    ),
    Option(
        "token_request_retries", "integer", "3", "5",
        "Retries of a token request after a connection error, a timeout, a 429 or a 5xx answer (at most 10).",
        maximum=10,
    ),
    Option(
        "retry_wait_max", "float", "30", "10",
        "Cap in seconds of one exponential backoff wait between token request retries (and API request "
        "retries: a connection's Request Retries); at most 3600.",
        maximum=3600,
    ),
    Option(
        "retry_after_max", "float", "60", "120",
        "Cap in seconds on an honoured Retry-After header of a token answer (or of an API answer that "
        "Request Retries retries); at most 3600.",
        maximum=3600,
    ),
    Option(
        "token_request_timeout", "float", "30", "10",
        "Timeout in seconds of a token request when the connection sets none (at most 3600).",
        minimum=0.001, maximum=3600,
    ),
    Option(
        "api_request_timeout", "float", "60", "120",
        "Timeout in seconds of an API request (the hook's run and get_conn session, the async hook, "
        "triggers, the notifier and the Test button) when the connection sets none (at most 3600).",
        minimum=0.001, version_added="0.3.0", maximum=3600,
    ),
    Option(
        "max_token_response_bytes", "integer", "1048576", "4194304",
        "Largest token answer read, in bytes after decompression; a larger one is an error.",
        minimum=1024, version_added="0.2.0",
    ),
    Option(
        "max_token_bytes", "integer", "16384", "65536",
        "Longest token accepted, in bytes; a longer one is an error.",
        minimum=16, version_added="0.2.0",
    ),
    Option(
        "max_token_lifetime", "float", "86400", "43200",
        "Longest lifetime in seconds a token is kept, whatever expiry its answer states.",
        minimum=1, version_added="0.2.0",
    ),
    Option(
        "shared_cache_conn_id", "string", "", "redis_default",
        "Conn id of a redis connection for a token cache shared by every host (Celery workers, "
        "KubernetesExecutor pods, triggerers): one token request per lifetime per cluster. Empty: off. "
        'Needs pip install "airflow-custom-token[redis]" and one [core] fernet_key across the cluster.',
        version_added="0.2.0",
    ),
)  # fmt: skip

_OPTIONS_BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in OPTIONS})


def option(name: str) -> Option:
    """The declaration of a ``[custom_token]`` option."""
    try:
        return _OPTIONS_BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"{name!r} is not a [{CONFIG_SECTION}] option; known: {', '.join(_OPTIONS_BY_NAME)}"
        ) from None


def option_default(name: str) -> Any:
    """The typed default of a ``[custom_token]`` option."""
    return option(name).value
