"""The one Airflow-facing module: every Airflow import of the package, and every difference between
the Airflow releases it supports (3.0, 3.1, 3.2, 3.3 and later 3.x).

The rest of the package imports Airflow's classes and functions from here, never from a
version-specific path. What differs, and how this module bridges it:

=============================  ===================================  =====================================
what                           3.2 and later                        3.0 / 3.1
=============================  ===================================  =====================================
exceptions                     ``airflow.sdk.exceptions``           ``airflow.exceptions`` (3.1 has
                                                                    ``AirflowException`` in both)
``conf``                       ``airflow.sdk.configuration``        ``airflow.configuration``
``get_fernet``                 ``airflow.sdk.crypto``               ``airflow.models.crypto``
``determine_kwargs``           ``airflow.sdk.bases.decorator``      ``airflow.utils.operator_helpers``
``BaseHook``                   ``airflow.sdk.bases.hook``           same on 3.1; ``airflow.hooks.base``
                                                                    on 3.0
connection form                ``conn-fields`` of the provider      the hook's
                               info (the hook's methods unused)     ``get_connection_form_widgets()``
                                                                    (built in ``hooks/form.py``)
=============================  ===================================  =====================================

Secrets masking (`mask_secret`, `amask_secret`):

- 3.0's ``mask_secret`` sends the value to the supervisor *before* masking it in this process, and
  the in-process supervisor of ``airflow dags test`` logs each message it is sent
  (``Sending request msg=MaskSecret(value='<token>')``) to a console that nothing redacts. Here the
  local masker learns the value first, and that supervisor's log shows ``MaskSecret(value='***')``
  (for the connection password that Airflow's own lookup masks, too).
- ``amask_secret`` exists from 3.3. Before, a sync ``mask_secret`` on the triggerer's event loop
  cannot reach the supervisor (3.0 raises, 3.1 and 3.2 swallow the error: a silent no-op), so it runs
  in a worker thread (``asgiref.sync_to_async``), from where the triggerer's comms reach the loop.

Async connection lookup (`aget_airflow_connection`): the stock ``BaseHook.aget_connection`` before
3.3.2 masks the connection's extra with a *synchronous* supervisor call, which can raise
``DeadlockImminentError`` in a real triggerer (3.3.0, 3.3.1); 3.0 has no ``aget_connection`` at all.
There the synchronous lookup runs in a worker thread, as apache-airflow-providers-common-compat's
``get_async_connection`` does. From 3.3.2 on (``Connection.aextra_dejson`` exists) the stock async
lookup is used.

The light parts (exceptions, configuration) are imported when this module is; the classes of the
surfaces (``BaseHook``, ``BaseOperator``, ``BaseSensorOperator``, ``PokeReturnValue``,
``BaseTrigger``, ``TriggerEvent``) on first use, so that the core (errors, settings) stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks against the newest release's paths
    from airflow.sdk import BaseOperator, BaseSensorOperator, Context, PokeReturnValue
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.bases.notifier import BaseNotifier
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
    from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent


__all__ = [
    "AIRFLOW_VERSION",
    "AirflowException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseEventTrigger",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "PokeReturnValue",
    "TriggerEvent",
    "aget_airflow_connection",
    "amask_secret",
    "call_with_context",
    "config_get",
    "config_getboolean",
    "determine_kwargs",
    "forget_masks",
    "get_airflow_connection",
    "get_fernet",
    "import_first",
    "local_masker",
    "mask_secret",
    "masker_size",
    "masker_snapshot",
    "restore_masker",
    "update_masker",
]


def import_first(name: str, *modules: str) -> Any:
    """`name` from the first of `modules` that has it (the newest release's path comes first)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"cannot import {name} from any of {', '.join(modules)} (Airflow 3.0 or later needed)")


def _airflow_version() -> tuple[int, int, int]:
    from airflow import __version__

    # a pre-release's micro is its leading digits ("3.4.0b2": 0, not the digits of "0b2", 2)
    parts = [int(re.sub(r"\D.*", "", p) or 0) for p in __version__.split(".")[:3]]
    major, minor, micro = (*parts, 0, 0)[:3]
    return major, minor, micro


#: The running Airflow's (major, minor, micro).
AIRFLOW_VERSION: tuple[int, int, int] = _airflow_version()

# -- exceptions: the task SDK's from 3.2 (3.1 has AirflowException there too), the core's before -------
_EXCEPTIONS = ("airflow.sdk.exceptions", "airflow.exceptions")
if not TYPE_CHECKING:
    AirflowException = import_first("AirflowException", *_EXCEPTIONS)
    AirflowNotFoundException = import_first("AirflowNotFoundException", *_EXCEPTIONS)
    AirflowSensorTimeout = import_first("AirflowSensorTimeout", *_EXCEPTIONS)
    AirflowSkipException = import_first("AirflowSkipException", *_EXCEPTIONS)

# -- the surfaces' base classes, imported on first use ------------------------------------------------
_LAZY: Mapping[str, tuple[str, ...]] = {
    "BaseHook": ("airflow.sdk.bases.hook", "airflow.hooks.base"),
    "BaseOperator": ("airflow.sdk",),
    "BaseSensorOperator": ("airflow.sdk",),
    "PokeReturnValue": ("airflow.sdk",),
    "BaseTrigger": ("airflow.triggers.base",),
    "TriggerEvent": ("airflow.triggers.base",),
    # 3.0 and later (AssetWatcher's triggers; the notifiers of callbacks)
    "BaseEventTrigger": ("airflow.triggers.base",),
    "BaseNotifier": ("airflow.sdk.bases.notifier", "airflow.sdk"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = import_first(name, *_LAZY[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- configuration and Fernet ---------------------------------------------------------------------------
@functools.cache
def _conf() -> Any:
    return import_first("conf", "airflow.sdk.configuration", "airflow.configuration")


def config_get(section: str, option: str, fallback: str | None) -> str | None:
    """A configuration value (env `AIRFLOW__SECTION__OPTION` included), or `fallback`."""
    value = _conf().get(section, option, fallback=fallback)
    return fallback if value is None else str(value)


def config_getboolean(section: str, option: str, fallback: bool) -> bool:
    """A boolean configuration value, or `fallback`."""
    return bool(_conf().getboolean(section, option, fallback=fallback))


def get_fernet() -> Any:
    """Airflow's Fernet (`[core] fernet_key`)."""
    return import_first("get_fernet", "airflow.sdk.crypto", "airflow.models.crypto")()


# -- calling user callables with the task context ----------------------------------------------------
def determine_kwargs(
    func: Callable[..., Any], args: Collection[Any], kwargs: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The keyword arguments of `kwargs` that `func` accepts (all of them when it takes `**kwargs`)."""
    airflow_determine = import_first(
        "determine_kwargs", "airflow.sdk.bases.decorator", "airflow.utils.operator_helpers"
    )
    result: Mapping[str, Any] = airflow_determine(func, args, kwargs)
    return result


def call_with_context(func: Callable[..., Any], response: Any, context: Context) -> Any:
    """Call `func(response, **the context keys it asks for)`, as HttpOperator and HttpSensor do."""
    return func(response, **determine_kwargs(func, [response], context))


# -- secrets masking ------------------------------------------------------------------------------------
def mask_secret(secret: str) -> None:
    """Tell Airflow's secrets masker (this process's, and the supervisor's) about `secret`."""
    import airflow.sdk.log as sdk_log

    if AIRFLOW_VERSION < (3, 1, 0):
        # 3.0 sends the value to the supervisor before masking it here: mask it here first.
        from airflow.sdk.execution_time.secrets_masker import _secrets_masker

        _quiet_in_process_supervisor()
        _secrets_masker().add_mask(secret, None)
    sdk_log.mask_secret(secret)


class _MaskSecretHidingLog:
    """A structlog logger that logs a `MaskSecret` message without its value (and the rest as is)."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def debug(self, event: str, *args: Any, **kwargs: Any) -> Any:
        msg = kwargs.get("msg")
        if type(msg).__name__ == "MaskSecret":
            kwargs["msg"] = f"MaskSecret(value='***', name={getattr(msg, 'name', None)!r})"
        return self._log.debug(event, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def _quiet_in_process_supervisor() -> None:
    """Airflow 3.0: keep the in-process supervisor of `airflow dags test` / `airflow tasks test` from
    logging secrets in clear.

    Its comms log each message they carry at debug level (`Sending request msg=MaskSecret(value=...)`)
    to a console that nothing redacts, and 3.0's `mask_secret` sends a value before masking it: every
    connection password Airflow reads for a task, every token registered, would show. (A real supervisor,
    in its own process, logs no message body.)
    """
    import sys

    comms = getattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS", None)
    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    if in_process is None or not isinstance(comms, in_process):
        return
    if not isinstance(comms.log, _MaskSecretHidingLog):
        comms.log = _MaskSecretHidingLog(comms.log)


async def amask_secret(secret: str) -> None:
    """`mask_secret` for the event loop (the triggerer): never a silent no-op, never blocking the loop."""
    import airflow.sdk.log as sdk_log

    stock = getattr(sdk_log, "amask_secret", None)  # 3.3 and later
    if stock is not None:
        await stock(secret)
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_secret)(secret)


# -- this process's masker: many values at once, and the provider's own removed again (issue 15) -------
_masker_lock = threading.Lock()
_added_patterns: set[str] = set()  # what `update_masker` added to the masker: the provider's to remove


def local_masker() -> Any | None:
    """This process's secrets masker when it is built as in 3.0-3.3, else None.

    There (``SecretsMasker``, a logging filter) `patterns` is a set of escaped values and `replacer`
    one regex of all of them, which `add_mask` compiles again on every new value: told thousands of
    tokens, one more costs hundreds of ms. It has no public way to forget a value.
    """
    if not (3, 0, 0) <= AIRFLOW_VERSION < (4, 0, 0):
        return None
    try:
        if AIRFLOW_VERSION < (3, 1, 0):
            from airflow.sdk.execution_time.secrets_masker import _secrets_masker
        else:
            from airflow.sdk._shared.secrets_masker import _secrets_masker
        masker = _secrets_masker()
    except (ImportError, RuntimeError):  # 3.0 raises RuntimeError when logging has no masker
        return None
    shaped = isinstance(getattr(masker, "patterns", None), set) and hasattr(masker, "replacer")
    return masker if shaped and callable(getattr(type(masker), "add_mask", None)) else None


class _Recorder(set[str]):
    """The `patterns` of a scratch copy of the masker: records what `add_mask` adds, and iterates as
    empty, so that the regex `add_mask` compiles next (`"|".join(patterns)`) is the empty one, which
    `re` has cached: no compile per value, no entry per value in `re`'s cache of 512."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []

    def add(self, item: str) -> None:
        super().add(item)
        self.added.append(item)

    def __iter__(self) -> Iterator[str]:
        return iter(())


def _masker_patterns(masker: Any, values: Collection[str]) -> set[str]:
    """The patterns `masker.add_mask(value)` would add for `values` (its adaptations, minimum length
    and skipped words apply), asked of a scratch copy of it: Airflow's own rules, no regex compiled."""
    import copy

    scratch = copy.copy(masker)
    scratch.patterns, scratch.replacer = _Recorder(), None
    for value in values:
        type(masker).add_mask(scratch, value, None)
    return set(scratch.patterns.added)


def update_masker(add: Collection[str], retire: Collection[str] = ()) -> bool:
    """Mask `add` in this process's masker and stop masking `retire`, compiling its regex once.

    Only what this function added is ever removed (a value Airflow masks for its own reasons stays),
    and never a value also in `add`. The supervisor is not told: `mask_secret` does that (a value the
    masker holds already costs it no compile). False when the masker is not one this function knows
    (`local_masker`): nothing was done, `mask_secret` masks each value the usual way.
    """
    masker = local_masker()
    if masker is None:
        return False
    with _gc_paused():
        adding = _masker_patterns(masker, add)
        removing = _masker_patterns(masker, retire) - adding if retire else set()
        return _update(masker, adding, removing)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile (reference counting still frees everything here).

    A regex's parse tree (thousands of objects) lives through its compile: young collections meanwhile
    promote it to the oldest generation, and every few dozen compiles a full collection follows, which
    walks the whole heap (over 100 ms with Airflow imported) with every thread stopped, the event loop
    too. Measured in the bench (masking): without this, such pauses were the loop's only long lags.
    """
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _update(masker: Any, adding: set[str], removing: set[str]) -> bool:
    with _masker_lock:
        patterns: set[str] = masker.patterns
        new = adding - patterns
        gone = removing & _added_patterns & patterns
        if not new and not gone:
            return True
        patterns |= new
        patterns -= gone
        _added_patterns.difference_update(gone)
        _added_patterns.update(new)
        while True:  # another thread's `add_mask` meanwhile: compile again, with its value
            snapshot = sorted(patterns, key=len, reverse=True)  # the longest of overlapping values first
            masker.replacer = re.compile("|".join(snapshot)) if snapshot else None
            if len(patterns) == len(snapshot):
                return True


def forget_masks() -> None:
    """Take every value `update_masker` added out of this process's masker (`redaction.reset`).

    What Airflow masks for its own reasons stays, as with `update_masker`'s `retire`.
    """
    masker = local_masker()
    if masker is None:
        return
    with _gc_paused():
        _update(masker, set(), set(_added_patterns))


#: This process's masker as `masker_snapshot` found it: the masker, its patterns, its regex, and what
#: `update_masker` had added.
MaskerSnapshot = tuple[Any, frozenset[str], Any, frozenset[str]]


def masker_snapshot() -> MaskerSnapshot | None:
    """What this process's masker holds now, for `restore_masker` (tests: each starts as the last
    one found it, whoever registered what meanwhile, Airflow's connection lookup included)."""
    masker = local_masker()
    if masker is None:
        return None
    with _masker_lock:
        return masker, frozenset(masker.patterns), masker.replacer, frozenset(_added_patterns)


def restore_masker(snapshot: MaskerSnapshot | None) -> None:
    """Put this process's masker back as `masker_snapshot` found it (no compile: its regex is kept)."""
    if snapshot is None:
        return
    masker, patterns, replacer, added = snapshot
    with _masker_lock:
        if set(masker.patterns) != patterns:
            masker.patterns.clear()
            masker.patterns.update(patterns)
            masker.replacer = replacer
        _added_patterns.clear()
        _added_patterns.update(added)


def masker_size() -> int | None:
    """How many patterns this process's masker holds (None: not a masker `local_masker` knows)."""
    masker = local_masker()
    return None if masker is None else len(masker.patterns)


# -- connection lookup ----------------------------------------------------------------------------------
def get_airflow_connection(conn_id: str) -> Any | None:
    """Airflow's connection object for `conn_id`, or None when it is not defined."""
    hook: Any = __getattr__("BaseHook")
    if AIRFLOW_VERSION < (3, 1, 0):
        _quiet_in_process_supervisor()  # the lookup masks the password and extra the 3.0 way
    try:
        return hook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _stock_async_lookup_is_safe() -> bool:
    """Does `BaseHook.aget_connection` mask without a synchronous supervisor call (3.3.2 and later)?"""
    connection = import_first("Connection", "airflow.sdk")
    return hasattr(__getattr__("BaseHook"), "aget_connection") and hasattr(connection, "aextra_dejson")


async def aget_airflow_connection(conn_id: str) -> Any | None:
    """`get_airflow_connection` for the event loop (the triggerer)."""
    if not _stock_async_lookup_is_safe():
        from asgiref.sync import sync_to_async

        return await sync_to_async(get_airflow_connection)(conn_id)
    hook: Any = __getattr__("BaseHook")
    try:
        return await hook.aget_connection(conn_id)
    except AirflowNotFoundException:
        return None


def stats_client() -> Any | None:
    """Airflow's metrics client as `[metrics]` configures it (StatsD or OpenTelemetry), None when off.

    Before 3.2, `airflow.stats.Stats` (set up from `[metrics]` on first use); on 3.2 the task SDK's
    `Stats` it re-exports, initialised here when no task runner has done it. From 3.3 on, the
    `stats` module that this process initialised: the task SDK's in a task (its task runner does it),
    the core's in Airflow's components (the triggerer); in a plain script neither is, and the task
    SDK's is initialised here from `[metrics]`, as the task runner would.
    """
    if not (
        config_getboolean("metrics", "statsd_on", False) or config_getboolean("metrics", "otel_on", False)
    ):
        return None
    if AIRFLOW_VERSION < (3, 2, 0):
        from airflow.stats import Stats

        return Stats
    from airflow.sdk.observability import stats as sdk_stats
    from airflow.sdk.observability.metrics import stats_utils

    if AIRFLOW_VERSION < (3, 3, 0):  # the SDK's `Stats` class, a NoStatsLogger until initialised
        if type.__getattribute__(sdk_stats.Stats, "factory") is None:  # type: ignore[attr-defined]
            sdk_stats.Stats.initialize(factory=stats_utils.get_stats_factory(sdk_stats.Stats))  # type: ignore[attr-defined, call-arg]
        return sdk_stats.Stats  # type: ignore[attr-defined]
    sdk_module = sys.modules["airflow.sdk._shared.observability.metrics.stats"]
    core_module = sys.modules.get("airflow._shared.observability.metrics.stats")
    if getattr(sdk_module, "_factory", None) is None and getattr(core_module, "_factory", None) is not None:
        return core_module  # an Airflow component's process (the triggerer)
    if getattr(sdk_module, "_factory", None) is None:
        sdk_stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=config_getboolean("metrics", "legacy_names_on", True),
        )
    return sdk_stats


# -- the admin command ----------------------------------------------------------------------------------
def cli_command_types() -> tuple[Any, Any, Any]:
    """`ActionCommand`, `Arg`, `GroupCommand`: what a provider-level CLI is made of (Airflow 3.2+)."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

    return ActionCommand, Arg, GroupCommand


def conn_ids_in_database(conn_type: str) -> list[str]:
    """The ids of the metadata database's connections of `conn_type`, where this process reaches the
    database (an api-server's or scheduler's host); none elsewhere (a 3.x worker has no database)."""
    try:
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(Connection.conn_id).filter(Connection.conn_type == conn_type).all()
    except Exception:  # no database configured or reachable here
        return []
    return [str(row[0]) for row in rows]
