"""Reading the body of a token answer within its bounds: at most so many bytes, within one deadline for
the whole request. Written once; each transport (requests, aiohttp) feeds it the body's chunks."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, Iterable

from airflow_custom_token.token import TokenLimits
from airflow_custom_token.wire import ERROR_BODY_BYTES, HttpRequest, transport_error


class BoundedBody:
    """Reads the body of a token answer within the flow's bounds; each transport feeds it its chunks.

    Create it as the request is sent: from then on `request.timeout` bounds the whole request (the
    answer's head and all of its body), not each read. `read` (or `aread`) takes the body's chunks as
    they arrive, decompressed, and keeps:

    - of an error answer (status 300 or more), only what its error message quotes (`ERROR_BODY_BYTES`);
    - of a successful answer, at most `max_token_response_bytes` + 1 bytes: the one byte too many tells
      `read_token` that the answer is too large, and nothing more is read.

    Past the deadline it raises a retryable `TokenRequestError` that says the request timed out. The
    transport closes the connection of an answer it did not read to the end.
    """

    def __init__(
        self, request: HttpRequest, limits: TokenLimits | None = None, secrets: tuple[str, ...] = ()
    ) -> None:
        self.request = request
        self.limits = TokenLimits() if limits is None else limits
        self.secrets = secrets
        self.deadline = time.monotonic() + request.timeout if request.timeout else math.inf

    def limit(self, status: int) -> int:
        """How many bytes of the body of an answer with `status` to read at most."""
        return ERROR_BODY_BYTES if status >= 300 else self.limits.max_token_response_bytes + 1

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise transport_error(
                self.request,
                TimeoutError(f"the answer did not end within the {self.request.timeout:g} s timeout"),
                self.secrets,
            )

    def read(self, status: int, chunks: Iterable[bytes]) -> bytes:
        body, limit = bytearray(), self.limit(status)
        self.check_deadline()
        for chunk in chunks:
            if not self._take(body, chunk, limit):
                break
        return bytes(body)

    async def aread(self, status: int, chunks: AsyncIterable[bytes]) -> bytes:
        body, limit = bytearray(), self.limit(status)
        self.check_deadline()
        async for chunk in chunks:
            if not self._take(body, chunk, limit):
                break
        return bytes(body)

    def _take(self, body: bytearray, chunk: bytes, limit: int) -> bool:
        """Keep what fits of `chunk`; whether to read on."""
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            return False
        self.check_deadline()
        return True
