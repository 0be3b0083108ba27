"""Names of cache entries (Redis keys, host-cache file names): keyed hashes of the cache key.

A cache key (`ConnectedAccount.cache_key`) is a digest of the token request, and the token request
holds the client's secret: a plain digest in a name that anyone who can list Redis keys or the cache
directory reads would let them confirm a guessed secret offline. So an entry is named by an HMAC of
the cache key with a key derived from `[core] fernet_key` (its first, primary key): without the
Fernet key, a name says nothing but the integration key, which is readable on purpose.

Rotating the Fernet key (a new primary key first) renames every entry: each account fetches one new
token, and the old entries run out with their TTL.
"""

from __future__ import annotations

import hashlib
import hmac

_LABEL = b"airflow-custom-token cache entry names\0"
NAME_DIGEST_CHARS = 40


def fernet_keys() -> tuple[str, ...]:
    """`[core] fernet_key`'s keys, primary first (none when it is not set)."""
    from airflow_custom_token.compat import config_get

    raw = config_get("core", "fernet_key", "") or ""
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def naming_key(keys: tuple[str, ...] | None = None) -> bytes:
    """The key entry names are hashed with: derived from the primary Fernet key, never the key itself.

    Without any Fernet key (the caches are then off: tokens are never stored in clear text) a fixed
    key is returned, so that a name can still be computed."""
    keys = fernet_keys() if keys is None else keys
    primary = keys[0].encode() if keys else b""
    return hashlib.sha256(_LABEL + primary).digest()


def entry_name(cache_key: str, key: bytes) -> str:
    """`<integration key>-<HMAC-SHA256 of the cache key, 40 hex digits>`."""
    integration, sep, _ = cache_key.rpartition("-")
    digest = hmac.new(key, cache_key.encode(), hashlib.sha256).hexdigest()[:NAME_DIGEST_CHARS]
    return f"{integration if sep else 'token'}-{digest}"


def slot_tagged(name: str) -> str:
    """`{<name>}`: a Redis Cluster hash tag. Only the part between the braces picks the key's slot, so
    every key made of one tagged name (an entry's token and its lease) lives in one slot, on one node:
    a script or transaction may use them together. One server or a sentinel's master keeps plain names."""
    return "{" + name + "}"
