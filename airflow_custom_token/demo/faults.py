"""Faults injected into the token endpoint (``push_fault``, ``POST /_control/faults``), one per request."""

from __future__ import annotations

import time
from typing import Any

from airflow_custom_token.demo.httpd import Response, json_response


def fault_response(fault: dict[str, Any]) -> Response | None:
    """Apply an injected fault; None means "now answer normally" (e.g. after a hang)."""
    if "hang" in fault:
        time.sleep(float(fault["hang"]))
    status = int(fault.get("status", 200))
    headers = (("Retry-After", str(fault["retry_after"])),) if "retry_after" in fault else ()
    if "body" in fault:
        ctype = str(fault.get("content_type", "text/plain"))
        return Response(status, str(fault["body"]).encode(), ctype, headers)
    if "json" in fault:
        return json_response(status, fault["json"], *headers)
    if fault.get("html"):
        page = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        return Response(int(fault.get("status", 502)), page, "text/html", headers)
    if "status" in fault:
        error = {"error": "server_error", "error_description": f"injected fault (HTTP {status})"}
        return json_response(status, error, *headers)
    return None
