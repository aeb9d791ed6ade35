"""Where the shared caches (``dust.engine.caches``) keep their entries: this process's memory and, with
``DUST_REDIS_URL``, Redis, shared by every process of a deployment.

An entry is found by its key alone, and its key says what it was made from (the database's identity and the
version of the data: see ``dust.engine.caches``). So a store is never told that an entry became wrong: after a
change nobody asks for that key again, and it ages out — evicted by the LRU here, expired by its TTL in Redis.
That is why a local copy may sit in front of Redis without a pub/sub channel to clear it: it can be old, never
stale.

Redis holds bytes: each kind packs its entries itself (``pack``/``unpack`` below: NumPy arrays and a JSON header,
never pickle, which would let whoever can write to Redis run code in every replica). Memory stays bounded: here by
``DUST_CACHE_MB`` (entries weighed as their callers estimate), in Redis by a TTL on every entry
(``DUST_CACHE_TTL_SECONDS``) and a largest entry (``DUST_CACHE_ENTRY_MB``); docs/deploy.md says how to cap Redis
itself. A Redis that fails or does not answer within a second turns the store into a local one for a few seconds:
the caller computes what it wanted, an error is counted, and no request fails for it.

A thread running an event loop never calls Redis: a small read on the loop (dust.api.deps.on_the_loop) finds
entries only here, and what it makes stays here. A round trip there would stall every request the loop serves.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from cachetools import LRUCache

from dust.core.logging import get_logger

log = get_logger("dust.cache")
T = TypeVar("T")
REDIS_SECONDS = 1.0  # longest wait for Redis: computing the entry again is rarely slower than a stuck socket
RETRY_SECONDS = 5.0  # after a Redis error, how long the store leaves Redis alone before trying again
_HEADER = struct.Struct("<I")  # the length of a packed entry's JSON header
_KINDS = frozenset("biuf")  # array dtypes an entry may hold: numbers only (an object array would need pickle)


class Store:
    """Entries by key: ``get(kind, key, decode)`` and ``put(kind, key, value, encode, size)``.

    ``size`` is what the local copy of ``value`` weighs (an estimate of its bytes in memory); ``encode`` makes the
    bytes Redis keeps and ``decode`` the value back. ``errors(kind)`` is told of each failed Redis call."""

    def __init__(
        self,
        *,
        local_bytes: int = 64 * 1024 * 1024,
        redis_url: str | None = None,
        ttl_seconds: int = 3600,
        entry_bytes: int = 64 * 1024 * 1024,
        errors: Callable[[str], None] | None = None,
    ) -> None:
        self._local: LRUCache[str, tuple[Any, int]] = LRUCache(maxsize=local_bytes, getsizeof=lambda e: max(e[1], 1))
        self._lock = threading.Lock()  # LRUCache reorders itself on every read: not safe across threads
        self.redis_url = redis_url
        self.ttl_seconds = ttl_seconds
        self.entry_bytes = entry_bytes
        self._errors = errors
        self._client: Any = None
        self._resting_until = 0.0  # monotonic time before which Redis is not tried (after an error)

    @property
    def shared(self) -> bool:
        return self.redis_url is not None

    def get(self, kind: str, key: str, decode: Callable[[bytes], T]) -> T | None:
        with self._lock:
            found = self._local.get(key)
        if found is not None:
            return found[0]
        raw = self._redis(kind, lambda client: client.get(key))
        if raw is None:
            return None
        try:
            value = decode(raw)
        except Exception as problem:  # not what this version writes (or damaged): as if absent, and counted
            self._failed(kind, problem)
            return None
        self._keep(key, value, len(raw))
        return value

    def put(self, kind: str, key: str, value: T, encode: Callable[[T], bytes], size: int) -> None:
        if size > self.entry_bytes:
            return
        self._keep(key, value, size)
        if self.redis_url is None:
            return
        raw = encode(value)
        if len(raw) <= self.entry_bytes:
            self._redis(kind, lambda client: client.set(key, raw, ex=self.ttl_seconds))

    def _keep(self, key: str, value: Any, size: int) -> None:
        if size > self._local.maxsize:
            return
        with self._lock:
            self._local[key] = (value, size)

    def _redis(self, kind: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)``, or None without Redis, on an event loop, while it rests after an error, or if it fails
        now."""
        if self.redis_url is None or _on_event_loop() or time.monotonic() < self._resting_until:
            return None
        try:
            return call(self._connected())
        except Exception as problem:  # redis.RedisError, OSError: the caller computes instead
            self._resting_until = time.monotonic() + RETRY_SECONDS
            self._failed(kind, problem)
            return None

    def _connected(self) -> Any:
        if self._client is None and self.redis_url is not None:
            import redis  # only with DUST_REDIS_URL

            self._client = redis.Redis.from_url(
                self.redis_url, socket_connect_timeout=REDIS_SECONDS, socket_timeout=REDIS_SECONDS
            )
        return self._client

    def _failed(self, kind: str, problem: Exception) -> None:
        log.warning("shared cache unavailable", cache=kind, error=type(problem).__name__)
        if self._errors is not None:
            self._errors(kind)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """``header`` (JSON) and numeric ``arrays`` as one byte string, for ``unpack``."""
    layout = []
    for name, array in arrays.items():
        if array.dtype.kind not in _KINDS:
            raise TypeError(f"array {name} is {array.dtype}: an entry holds numbers only")
        layout.append([name, array.dtype.str, list(array.shape)])
    text = json.dumps({"header": header, "arrays": layout}).encode()
    return b"".join([_HEADER.pack(len(text)), text, *(np.ascontiguousarray(a).tobytes() for a in arrays.values())])


def unpack(raw: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What ``pack`` packed: the header and the arrays (read-only views of ``raw``). ValueError if it is not."""
    (length,) = _HEADER.unpack_from(raw)
    described = json.loads(raw[_HEADER.size : _HEADER.size + length])
    arrays: dict[str, np.ndarray] = {}
    offset = _HEADER.size + length
    for name, dtype_text, shape in described["arrays"]:
        dtype = np.dtype(dtype_text)
        if dtype.kind not in _KINDS:
            raise ValueError(f"array {name} is {dtype}: an entry holds numbers only")
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += count * dtype.itemsize
    if offset != len(raw):
        raise ValueError("a packed entry's arrays do not fill it")
    return described["header"], arrays
