"""Bundled demo API: a token server plus a token-protected API, stdlib only."""

from __future__ import annotations

from airflow_custom_token.demo.server import DemoServer

__all__ = ["DemoServer"]
