"""Running a trigger the way Airflow does: rebuilt from what it stores, to its first event."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.airflow_names import deserialize, import_string, serialize


def roundtrip(trigger: Any) -> Any:
    """Rebuild the trigger from what Airflow stores: classpath plus serde-encoded kwargs."""
    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**deserialize(serialize(kwargs)))


def first_event(trigger: Any) -> dict[str, Any]:
    """Run the trigger to its first event; the payload must be storable as the metadata DB stores it."""

    async def first() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger fired no event")

    payload: dict[str, Any] = asyncio.run(first()).payload
    assert deserialize(serialize(payload)) == payload
    return payload


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Round-trip the trigger, run it to its first event, and round-trip the event."""
    stored: dict[str, Any] = deserialize(serialize(first_event(roundtrip(trigger))))
    return stored
