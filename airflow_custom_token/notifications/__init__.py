"""Notifiers: callbacks that call an API with a connected account's token."""

from __future__ import annotations
