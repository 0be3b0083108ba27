"""Importing from an event loop without stalling it (stdlib only).

A first import of aiohttp, `redis.asyncio` or the provider's own transport takes 0.1 to 0.3 s, and the
triggerer runs every trigger in one event loop: an import there stalls them all. `aimport` runs a first
import in a worker thread.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from types import ModuleType


async def aimport(name: str) -> ModuleType:
    """`importlib.import_module(name)`, in a worker thread unless `name` is already fully imported.

    A coroutine that arrives while another's import of the same module runs waits for it in its own
    worker thread (on the import lock), so none sees a half-initialised module."""
    module = sys.modules.get(name)
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return module
    return await asyncio.to_thread(importlib.import_module, name)
