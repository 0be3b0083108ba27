"""How an account's requests reach the servers: its TLS client certificate, CA bundle and proxies
(`spec.Transport`), as requests and aiohttp take them. Token and API requests, sync and async, use them.

- `requests_options(account)`: ``verify`` (the CA bundle's path, True or False), ``cert`` and
  ``proxies`` for requests. The connection's proxies win over the environment's, key by key, as
  requests does with proxies given explicitly.
- `assl(account)`: the ``ssl=`` of aiohttp (an `ssl.SSLContext` holding the CA bundle and the client
  certificate; None or False without them), built in a worker thread (loading certificates blocks) and
  kept while the files are unchanged, so that the triggers of a triggerer share one.
- `proxy_for(transport, url)`: the one proxy aiohttp takes per request, picked from the connection's as
  requests picks it (``scheme://host``, ``scheme``, ``all://host``, ``all``).
- `tls_hint(transport, url, error)`: what a failed TLS handshake most likely means, in the connection's
  own words (a server that wants a client certificate often just closes the connection).

A file that cannot be read raises `ConfigurationError` naming the field. Proxy URLs are never quoted:
they may hold credentials.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from airflow_custom_token.account.connected import ConnectedAccount, Transport
from airflow_custom_token.errors import ConfigurationError

__all__ = ["assl", "check_files", "proxy_for", "requests_options", "ssl_context", "tls_hint"]

#: The proxy schemes aiohttp can use (requests also takes socks ones, with PySocks installed).
AIOHTTP_PROXY_SCHEMES = ("http", "https")


def _files(transport: Transport) -> tuple[tuple[str, str], ...]:
    return tuple(
        (key, path)
        for key, path in (
            ("ca_bundle", transport.ca_bundle if transport.verify else None),
            ("client_cert", transport.client_cert),
            ("client_key", transport.client_key),
        )
        if path
    )


def check_files(conn_id: str, transport: Transport) -> None:
    """Raise `ConfigurationError` for each file of `transport` that is not a readable file."""
    problems = []
    for key, path in _files(transport):
        if not os.path.exists(path):
            why = "which does not exist"
        elif not os.path.isfile(path):
            why = "which is not a file"
        elif not os.access(path, os.R_OK):
            why = "which this process may not read"
        else:
            continue
        problems.append(f"{key}: expected the path of a readable PEM file, found {path!r}, {why}")
    if problems:
        raise ConfigurationError(conn_id, problems)


# -- requests --------------------------------------------------------------------------------------------


def requests_options(account: ConnectedAccount) -> dict[str, Any]:
    """``verify``, ``cert`` and ``proxies`` for requests (``cert`` None without a client certificate)."""
    transport = account.transport
    check_files(account.conn_id, transport)
    verify: bool | str = (transport.ca_bundle or True) if transport.verify else False
    cert: tuple[str, str] | str | None = transport.client_cert
    if transport.client_cert and transport.client_key:
        cert = (transport.client_cert, transport.client_key)
    return {"verify": verify, "cert": cert, "proxies": dict(transport.proxies)}


# -- aiohttp ---------------------------------------------------------------------------------------------

_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _stamp(transport: Transport) -> tuple[Any, ...]:
    """What a context is built from: the settings and each file's identity (a replaced file: a new one)."""
    stamps: list[Any] = [transport.verify, transport.ca_bundle, transport.client_cert, transport.client_key]
    for _, path in _files(transport):
        try:
            info = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def ssl_context(account: ConnectedAccount) -> ssl.SSLContext | bool | None:
    """aiohttp's ``ssl=``: None (its default verification) or False (none) when the connection sets no
    CA bundle and no client certificate; else a context with them. Blocks (it reads files): see `assl`."""
    transport = account.transport
    if not transport.client_cert and not (transport.verify and transport.ca_bundle):
        return None if transport.verify else False
    stamp = _stamp(transport)
    context = _contexts.get(stamp)
    if context is None:
        context = _build_context(account)
        with _contexts_lock:
            if len(_contexts) >= 64:
                _contexts.clear()
            _contexts[stamp] = context
    return context


async def assl(account: ConnectedAccount) -> ssl.SSLContext | bool | None:
    """`ssl_context` for the event loop: built in a worker thread the first time."""
    transport = account.transport
    if not transport.client_cert and not (transport.verify and transport.ca_bundle):
        return None if transport.verify else False
    return await asyncio.to_thread(ssl_context, account)


def _build_context(account: ConnectedAccount) -> ssl.SSLContext:
    transport = account.transport
    check_files(account.conn_id, transport)
    try:
        if transport.verify:
            context = ssl.create_default_context(cafile=transport.ca_bundle)
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            account.conn_id,
            [
                f"ca_bundle: expected PEM CA certificates in {transport.ca_bundle!r}, which could not be "
                f"loaded ({exc})"
            ],
        ) from None
    if transport.client_cert:
        try:
            context.load_cert_chain(transport.client_cert, transport.client_key)
        except (ssl.SSLError, OSError) as exc:
            files = repr(transport.client_cert) + (
                f" and client_key {transport.client_key!r}" if transport.client_key else ""
            )
            raise ConfigurationError(
                account.conn_id,
                [
                    f"client_cert: expected a PEM certificate and its unencrypted private key in {files}, "
                    f"which could not be loaded ({exc})"
                ],
            ) from None
    return context


def proxy_for(account: ConnectedAccount, url: str) -> str | None:
    """The connection's proxy for `url`, picked as requests picks it; None: no proxy.

    aiohttp takes one proxy per request, http or https; any other scheme is a `ConfigurationError`.
    """
    proxies = dict(account.transport.proxies)
    if not proxies:
        return None
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    for key in (f"{scheme}://{host}", scheme, f"all://{host}", "all"):
        proxy = proxies.get(key)
        if proxy:
            proxy_scheme = urlsplit(proxy).scheme.lower()
            if proxy_scheme not in AIOHTTP_PROXY_SCHEMES:
                raise ConfigurationError(
                    account.conn_id,
                    [
                        f"proxies.{key}: expected an http or https proxy for the triggerer (aiohttp), found "
                        f"a {proxy_scheme} proxy (requests, in sync mode, takes it with PySocks installed)"
                    ],
                )
            return proxy
    return None


# -- what a TLS failure means ----------------------------------------------------------------------------

_ASKED = (
    "certificate required",
    "peer did not return a certificate",
    "alert handshake failure",
    "alert bad certificate",
    "alert unknown ca",
    "alert certificate unknown",
)
_DROPPED = (
    "connection reset",
    "connectionreseterror",
    "eof occurred",
    "unexpected_eof",
    "unexpected eof",
    "server disconnected",
)


def _chain(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " | ".join(texts)


def tls_hint(transport: Transport, url: str, error: BaseException | str) -> str:
    """A clause saying what a failed request to an https `url` most likely means ("" when nothing TLS).

    Appended to the error's message, e.g. ``; the server requires a TLS client certificate, and the
    connection sets none (client_cert, client_key)``.
    """
    if urlsplit(url).scheme.lower() != "https":
        return ""
    text = _chain(error).lower()
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        if transport.ca_bundle:
            return "; the server's TLS certificate is not signed by a CA of the connection's ca_bundle"
        return (
            "; the server's TLS certificate is not signed by a CA this host trusts: set ca_bundle to the "
            "file of its CA certificates (or verify to false)"
        )
    asked = any(word in text for word in _ASKED)
    dropped = any(word in text for word in _DROPPED)
    if transport.client_cert:
        if asked:
            return "; the server did not accept the TLS client certificate of client_cert"
        if dropped:
            return (
                "; the server closed the TLS connection, as servers do when they do not accept the TLS "
                "client certificate (client_cert)"
            )
        return ""
    if asked:
        return "; the server requires a TLS client certificate, and the connection sets none (client_cert)"
    if dropped:
        return (
            "; the server closed the TLS connection, as servers that require a TLS client certificate do "
            "when they get none, and the connection sets none (client_cert)"
        )
    return ""
