"""`airflow_custom_token.compat` on the running Airflow release (scripts/test-matrix runs it on 3.0, 3.1,
3.2, 3.4; scripts/test on 3.3): each name is what that release itself uses, masking is never a silent
no-op, the triggerer's connection lookup and masking go through the release's own supervisor comms, and
each version gate fails loudly when the internals it relies on move.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_custom_token import compat, redaction
from airflow_custom_token import connections as account_connections
from airflow_custom_token.fields import EXTRA_FIELDS, STANDARD_FIELDS

RELEASE = ".".join(map(str, compat.AIRFLOW_VERSION))


def airflow_redact(text: str) -> Any:
    """The release's own redaction (3.0 keeps its masker in `execution_time.secrets_masker`)."""
    for module in ("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker"):
        redact = getattr(importlib.import_module(module), "redact", None)
        if redact is not None:
            return redact(text)
    raise AssertionError(f"no redact function in Airflow {RELEASE}")


# -- names -------------------------------------------------------------------------------------------------


def test_sensor_exceptions_are_the_ones_the_release_handles() -> None:
    """A sensor raising compat's exceptions is skipped / timed out by the release's own sensor code."""
    import airflow.sdk.bases.sensor as sensor

    assert compat.AirflowSkipException is sensor.AirflowSkipException
    assert compat.AirflowSensorTimeout is sensor.AirflowSensorTimeout
    assert issubclass(compat.AirflowNotFoundException, compat.AirflowException)


def test_errors_are_airflow_exceptions() -> None:
    from airflow_custom_token.errors import ConfigurationError

    error = ConfigurationError("acme", ["host: expected a URL, found nothing"])
    assert isinstance(error, compat.AirflowException)
    assert (
        str(error)
        == "Connection 'acme' (custom_token) has 1 problem:\n  - host: expected a URL, found nothing"
    )


def test_surface_base_classes_come_from_the_release() -> None:
    from airflow_custom_token.hooks.custom_token import CustomTokenHook
    from airflow_custom_token.operators.http import CustomTokenHttpOperator
    from airflow_custom_token.sensors.http import CustomTokenHttpSensor
    from airflow_custom_token.triggers.http import CustomTokenHttpTrigger

    assert issubclass(CustomTokenHook, compat.BaseHook)
    assert issubclass(CustomTokenHttpOperator, compat.BaseOperator)
    assert issubclass(CustomTokenHttpSensor, compat.BaseSensorOperator)
    assert issubclass(CustomTokenHttpTrigger, compat.BaseTrigger)
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        compat.NoSuchThing


def test_missing_connection_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    assert compat.get_airflow_connection("nowhere") is None
    assert account_connections.lookup_connection("nowhere") is None
    assert asyncio.run(account_connections.alookup_connection("nowhere")) is None


def test_connection_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"integration_key": "acme", "access_endpoint": "https://auth.example.com/token"}
    body = {"conn_type": "custom_token", "host": "https://api.example.com", "login": "dev", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_FROM_ENV", json.dumps(body))

    for raw in (
        account_connections.lookup_connection("from_env"),
        asyncio.run(account_connections.alookup_connection("from_env")),
    ):
        assert raw is not None
        assert (raw.conn_id, raw.conn_type, raw.host, raw.login) == (
            "from_env",
            "custom_token",
            "https://api.example.com",
            "dev",
        )
        assert dict(raw.extra) == extra


def test_configuration_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CUSTOM_TOKEN__REFRESH_MARGIN", "42")
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert compat.config_get("custom_token", "refresh_margin", "60") == "42"
    assert compat.config_get("custom_token", "no_such_option", "fallback") == "fallback"
    assert compat.config_getboolean("operators", "default_deferrable", fallback=False) is True


def test_fernet_is_airflows(monkeypatch: pytest.MonkeyPatch) -> None:
    fernet = compat.get_fernet()
    token = fernet.encrypt(b"a cached token")
    assert token != b"a cached token"
    assert fernet.decrypt(token) == b"a cached token"


def test_call_with_context_passes_what_the_callable_asks_for() -> None:
    context = {"ti": "the task instance", "ds": "2026-01-01", "params": {}}

    def check(response: str, ti: str) -> tuple[str, str]:
        return response, ti

    def everything(response: str, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert compat.call_with_context(check, "resp", context) == ("resp", "the task instance")  # type: ignore[arg-type]
    assert compat.call_with_context(everything, "resp", context) == context  # type: ignore[arg-type]
    assert compat.call_with_context(lambda r: r.upper(), "resp", context) == "RESP"  # type: ignore[arg-type]


def test_surfaces_import_airflow_only_through_compat() -> None:
    """No surface names a version-specific Airflow path; the sensor does not borrow from the operator."""
    import ast
    from pathlib import Path

    import airflow_custom_token

    root = Path(airflow_custom_token.__file__).parent
    for surface in ("hooks", "operators", "sensors", "triggers"):
        for path in (root / surface).glob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            airflow_paths = sorted(m for m in imported if m == "airflow" or m.startswith("airflow."))
            assert not airflow_paths, f"{path.name} imports {airflow_paths}: import them from compat"
            if surface == "sensors":
                assert not any(m.startswith("airflow_custom_token.operators") for m in imported), path


# -- secrets masking ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_registry() -> None:
    """As in a fresh worker process: no secret known (tests/conftest.py's `isolated_masking` does it
    for every test; named here because these tests count on it)."""
    redaction.reset()


def test_register_masks_in_airflows_masker(fresh_registry: None) -> None:
    redaction.register("sync-registered-7f3a")
    assert airflow_redact("value sync-registered-7f3a here") == "value *** here"


def test_aregister_masks_in_airflows_masker(fresh_registry: None) -> None:
    asyncio.run(redaction.aregister("async-registered-91bc"))
    assert airflow_redact("value async-registered-91bc here") == "value *** here"


def test_dags_test_supervisor_never_logs_a_secret_unmasked(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    """`airflow dags test` runs the supervisor in-process, and its comms log each message they carry
    (`Sending request msg=MaskSecret(value=...)`) to a console nothing redacts. 3.0's `mask_secret`
    sent before masking, so tokens, and the password that Airflow's own connection lookup masks,
    showed in clear there. Whatever the release, what that log line says must already be masked when
    it is written."""
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms

    written: list[str] = []

    class ConsoleLog:  # renders each line when it is written, as the console does
        def debug(self, event: str, **fields: Any) -> None:
            written.append(str(airflow_redact(f"{event} {fields}")))

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    class InProcessSupervisor:
        def _handle_request(self, msg: Any, log: Any, req_id: int) -> None:
            comms.messages.append(None)

    comms = InProcessSupervisorComms(supervisor=InProcessSupervisor(), log=ConsoleLog())
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    password = f"dags-test-password-{RELEASE}-9a7b"
    body = {"conn_type": "custom_token", "host": "https://api.example.com", "password": password}
    monkeypatch.setenv("AIRFLOW_CONN_IN_A_TASK", json.dumps(body))
    token = f"dags-test-token-{RELEASE}-c0de"

    conn = compat.get_airflow_connection("in_a_task")  # Airflow masks the password its own way
    compat.mask_secret(token)

    assert conn is not None and conn.password == password
    assert sum("MaskSecret" in line for line in written) >= 2, written  # the supervisor was told
    assert not [line for line in written if token in line or password in line]
    assert airflow_redact(f"token {token}, password {password}") == "token ***, password ***"


# -- the triggerer's comms, as the release builds them -------------------------------------------------------


class FakeTriggerSupervisor:
    """The supervisor end of the release's trigger comms socket: answers each request frame.

    Requests are decoded and recorded; `GetConnection` for a known conn id gets a `ConnectionResult`,
    every other request an empty answer. `delay` holds the answer to the first request back, so that
    another request is made while one is in flight (the deadlock-prone case).
    """

    def __init__(self, sock: socket.socket, connections: dict[str, dict[str, Any]], delay: float) -> None:
        self.sock = sock
        self.connections = connections
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def serve(self) -> None:
        import msgspec
        from airflow.sdk.execution_time.comms import ConnectionResult, _RequestFrame, _ResponseFrame

        decoder = msgspec.msgpack.Decoder(_RequestFrame)
        first = True
        try:
            while True:
                length = int.from_bytes(self._read(4), "big")
                frame = decoder.decode(self._read(length))
                body = dict(frame.body or {})
                self.requests.append(body)
                if first and self.delay:
                    threading.Event().wait(self.delay)
                first = False
                answer: dict[str, Any] | None = None
                if body.get("type") == "GetConnection" and body.get("conn_id") in self.connections:
                    result = ConnectionResult(conn_id=body["conn_id"], **self.connections[body["conn_id"]])
                    answer = result.model_dump(exclude_unset=True, by_alias=True)
                    answer["type"] = "ConnectionResult"
                self.sock.sendall(_ResponseFrame(id=frame.id, body=answer).as_bytes())
        except (EOFError, OSError):
            return
        except Exception as exc:  # a broken fake must fail the test, not hang it
            self.error = exc
            self.sock.close()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("type") == kind]


@pytest.fixture
def triggerer_comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs a coroutine as in the triggerer: the release's `TriggerCommsDecoder` as SUPERVISOR_COMMS."""
    from airflow.jobs.triggerer_job_runner import TriggerCommsDecoder
    from airflow.sdk.execution_time import task_runner

    ours, theirs = socket.socketpair()
    spare_a, spare_b = socket.socketpair()  # the decoder's sync socket, unused by the triggerer's comms
    supervisors: list[FakeTriggerSupervisor] = []

    def run(coro_factory: Any, connections: dict[str, dict[str, Any]] | None = None, delay: float = 0.0):
        supervisor = FakeTriggerSupervisor(theirs, connections or {}, delay)
        supervisors.append(supervisor)

        async def main() -> Any:
            reader, writer = await asyncio.open_connection(sock=ours)
            comms = TriggerCommsDecoder(async_writer=writer, async_reader=reader, socket=spare_a)
            if hasattr(comms, "start_reader"):  # 3.2 and later read answers in a task of their own
                await comms.start_reader()
            monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
            try:
                return await asyncio.wait_for(coro_factory(comms), timeout=20)
            finally:
                monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS", raising=False)

        return asyncio.run(main()), supervisor

    yield run
    for sock in (ours, theirs, spare_a, spare_b):
        sock.close()


def test_triggerer_masking_reaches_the_supervisor(triggerer_comms: Any, fresh_registry: None) -> None:
    """Before 3.3 a sync `mask_secret` on the triggerer's loop never reached the supervisor (3.0 raised,
    3.1 and 3.2 swallowed the error): the supervisor, which writes the trigger logs, must learn it."""
    secret = f"trigger-token-{RELEASE}-5d1e"

    async def register(comms: Any) -> None:
        await redaction.aregister(secret)

    _, supervisor = triggerer_comms(register)

    assert [r["value"] for r in supervisor.of_type("MaskSecret")] == [secret]
    assert airflow_redact(f"token {secret}") == "token ***"


def test_triggerer_masking_while_another_request_is_in_flight(
    triggerer_comms: Any, fresh_registry: None
) -> None:
    """Another trigger's request holds the comms (its answer is late): masking waits, never deadlocks."""
    from airflow.sdk.execution_time.comms import MaskSecret

    secret = f"concurrent-token-{RELEASE}-a41f"

    async def both(comms: Any) -> None:
        in_flight = asyncio.ensure_future(comms.asend(MaskSecret(value="other-trigger-value-0001")))
        await asyncio.sleep(0.05)
        await redaction.aregister(secret)
        await in_flight

    _, supervisor = triggerer_comms(both, delay=0.5)

    values = [r["value"] for r in supervisor.of_type("MaskSecret")]
    assert values == ["other-trigger-value-0001", secret]


def test_triggerer_connection_lookup_goes_through_the_supervisor(
    triggerer_comms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that only the API server knows: asked of the supervisor, on every release, while
    another request is in flight (where the stock lookup before 3.3.2 could raise DeadlockImminentError)."""
    from airflow.sdk.execution_time.comms import MaskSecret

    monkeypatch.delenv("AIRFLOW_CONN_API_ONLY", raising=False)
    extra = {"integration_key": "acme", "access_endpoint": "https://auth.example.com/token"}
    connections = {
        "api_only": {
            "conn_type": "custom_token",
            "host": "https://api.example.com",
            "login": "dev",
            "password": "api-only-password-77",
            "extra": json.dumps(extra),
            "schema": None,
            "port": None,
        }
    }

    async def lookup(comms: Any) -> Any:
        in_flight = asyncio.ensure_future(comms.asend(MaskSecret(value="other-trigger-value-0002")))
        await asyncio.sleep(0.05)
        raw = await account_connections.alookup_connection("api_only")
        await in_flight
        return raw

    raw, supervisor = triggerer_comms(lookup, connections, delay=0.5)

    assert [r["conn_id"] for r in supervisor.of_type("GetConnection")] == ["api_only"]
    assert raw is not None
    assert (raw.conn_type, raw.host, raw.login, raw.password) == (
        "custom_token",
        "https://api.example.com",
        "dev",
        "api-only-password-77",
    )
    assert dict(raw.extra) == extra


# -- the connection form -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_meta() -> dict[str, Any]:
    """What `GET /ui/connections/hook_meta` answers for custom_token on this release (computed once, as
    the api-server does: 3.1 cannot compute it twice in one process)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    [meta] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "custom_token"]
    return meta.model_dump()


def form_default(shown: Any, kind: str) -> Any:
    """The default as the form shows it: 3.0 and 3.1 edit objects and lists as JSON text."""
    if isinstance(shown, str) and kind in ("object", "list"):
        return json.loads(shown)
    return shown


def test_hook_meta_shows_every_field_of_the_table(hook_meta: dict[str, Any]) -> None:
    meta = hook_meta

    assert meta["hook_name"] == "Custom Token"
    assert meta["hook_class_name"] == "airflow_custom_token.hooks.custom_token.CustomTokenHook"
    extra = meta["extra_fields"]
    assert list(extra) == [f.key for f in EXTRA_FIELDS]
    for field in EXTRA_FIELDS:
        shown = extra[field.key]
        schema = shown["schema"]
        assert schema["title"] == field.label, field.key
        assert shown["description"].startswith(field.description), field.key
        assert form_default(shown["value"], field.kind) == field.form_default, field.key
        if field.choices:
            assert schema["enum"] == list(field.choices), field.key
        if field.secret and field.kind == "str":  # a secret object (proxies) is a JSON editor
            assert schema.get("format") == "password", field.key

    standard = meta["standard_fields"]
    names = {"schema": "url_schema"}
    for std in STANDARD_FIELDS:
        behaviour = standard[names.get(std.name, std.name)]
        assert behaviour["hidden"] is std.hidden, std.name
        assert behaviour["title"] == std.label, std.name
        assert behaviour["placeholder"] == std.placeholder, std.name


def test_what_the_form_saves_builds_an_account(
    hook_meta: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form's defaults, as the form of this release saves them, plus the required fields, make a
    valid connected account (3.0 and 3.1 save objects and lists as JSON text)."""
    from airflow_custom_token.account.build import build_account
    from airflow_custom_token.account.chain import drive_chain

    extra = {key: shown["value"] for key, shown in hook_meta["extra_fields"].items()}
    extra.update(integration_key="acme", access_endpoint="https://auth.example.com/oauth2/token")
    body = {"conn_type": "custom_token", "host": "https://api.example.com", "login": "dev", "extra": extra}
    body["password"] = "form-password-1"
    monkeypatch.setenv("AIRFLOW_CONN_FROM_FORM", json.dumps(body))

    account = build_account(drive_chain("from_form", account_connections.lookup_connection), None)

    assert account.token_request.url == "https://auth.example.com/oauth2/token"
    assert account.token_request.method == "POST"
    assert account.refresh_on == (401,) or list(account.refresh_on) == [401]


# -- the version gates: each fails loudly when the Airflow internals it relies on move --------------------


def test_airflow_version_is_the_release_numbers() -> None:
    """A pre-release (3.4.0b2) is its release's numbers (3, 4, 0): every gate compares them."""
    from airflow import __version__
    from packaging.version import Version

    assert compat.AIRFLOW_VERSION == (*Version(__version__).release, 0, 0)[:3], __version__


def test_the_masker_is_the_one_update_masker_knows() -> None:
    """`local_masker` (3.1 on: `airflow.sdk._shared.secrets_masker`; a set `patterns`, one regex `replacer`)
    finds this release's masker, and it is the one `airflow.sdk.log.mask_secret` feeds: were it moved or
    reshaped, `update_masker` would silently fall back to one compile per value, or change a dead masker."""
    import airflow.sdk.log as sdk_log

    if compat.AIRFLOW_VERSION >= (3, 1, 0):
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    else:
        from airflow.sdk.execution_time.secrets_masker import _secrets_masker
    masker = compat.local_masker()

    assert masker is not None, f"Airflow {RELEASE}'s masker is not the one compat.update_masker knows"
    assert masker is _secrets_masker()
    before = set(masker.patterns)
    sdk_log.mask_secret("gate-masker-value-4e1f")
    assert set(masker.patterns) - before == {re.escape("gate-masker-value-4e1f")}
    assert compat.update_masker(["gate-update-value-4e1f"]) is True
    assert masker.replacer.sub("***", "a gate-update-value-4e1f b") == "a *** b"
    assert airflow_redact("a gate-update-value-4e1f b") == "a *** b"


def test_amask_secret_is_where_compat_looks() -> None:
    """`compat.amask_secret` takes the stock `airflow.sdk.log.amask_secret` from 3.3 on (before, a worker
    thread): a release that moved it would quietly take the thread."""
    import airflow.sdk.log as sdk_log

    stock = getattr(sdk_log, "amask_secret", None)
    if compat.AIRFLOW_VERSION >= (3, 3, 0):
        assert stock is not None and inspect.iscoroutinefunction(stock), f"Airflow {RELEASE}"
    else:
        assert stock is None, f"Airflow {RELEASE} has amask_secret: compat.amask_secret would use it"


def test_stock_async_lookup_gate() -> None:
    """`aget_airflow_connection` uses the stock `BaseHook.aget_connection` when `Connection.aextra_dejson`
    exists (3.3.2 on), a worker thread before: each release must fall on the side compat expects."""
    from airflow.sdk import Connection

    assert compat._stock_async_lookup_is_safe() is (compat.AIRFLOW_VERSION >= (3, 3, 2)), RELEASE
    if compat.AIRFLOW_VERSION >= (3, 1, 0):
        assert inspect.iscoroutinefunction(compat.BaseHook.aget_connection)
    if compat.AIRFLOW_VERSION >= (3, 3, 2):
        assert inspect.iscoroutinefunction(Connection.aextra_dejson)


def test_the_form_comes_from_where_compat_says(hook_meta: dict[str, Any]) -> None:
    """3.2 and later build the form from the provider info's `conn-fields` (every schema keyword it
    declares, `pattern` and `minimum` included); 3.0 and 3.1 from the hook's own methods, which
    `CustomTokenHook` defines in its own class dict (what their providers manager reads)."""
    from airflow_custom_token.get_provider_info import get_provider_info
    from airflow_custom_token.hooks.custom_token import CustomTokenHook

    [conn_type] = get_provider_info()["connection-types"]
    declared = conn_type["conn-fields"]
    shown = hook_meta["extra_fields"]
    if compat.AIRFLOW_VERSION >= (3, 2, 0):
        differing = {
            key: shown[key]["schema"]
            for key, field in declared.items()
            if any(shown[key]["schema"].get(k) != v for k, v in field["schema"].items())
        }
        assert not differing, f"Airflow {RELEASE} did not build the form from conn-fields: {differing}"
    else:
        assert {"get_connection_form_widgets", "get_ui_field_behaviour"} <= set(vars(CustomTokenHook))
