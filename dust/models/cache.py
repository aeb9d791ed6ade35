"""Trained models kept loaded in this process, for predictions: their artefacts read and deserialised once.

Reading a model's artefact from the database and turning it back into a torch model is most of a prediction's
time (AIFB's entity classifier: 51 MB of bytes). A model never changes once it has succeeded, and models are
never deleted, so a loaded one stays right for good: no epoch, no invalidation. The cache is keyed by the model's
id with its finish time and artefact size (so a database restored under it with another model of the same id
would not be served the old one), and bounded in count and in approximate bytes (the artefact's size stands for
the loaded model's). The least recently used go first; a model larger than the whole budget is loaded for each
prediction and not kept.

One cache per process (``MODELS``), shared by the API's requests, the embedded API and the web UI; its bounds are
the settings ``DUST_MODEL_CACHE_SIZE`` and ``DUST_MODEL_CACHE_MB`` (``configure``, called by the app and by
``dust.open``). Two requests for a model not yet loaded may both load it: the second's copy replaces the first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Stats:
    models: int
    bytes: int
    hits: int
    misses: int


class LoadedModels:
    """An LRU of loaded models by key, at most ``size`` of them and ``max_bytes`` of their sizes together."""

    def __init__(self, size: int = 8, max_bytes: int = 256 * MB) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.size, self.max_bytes = size, max_bytes
        self.hits = self.misses = 0

    def configure(self, size: int, max_bytes: int) -> None:
        with self._lock:
            self.size, self.max_bytes = size, max_bytes
            self._shrink()

    def get(self, key: Hashable, size: int, load: Callable[[], Any]) -> Any:
        """The model of ``key``: kept, or ``load()``ed (outside the lock: loading takes a while) and kept if it
        fits; ``size`` is its approximate bytes."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[0]
            self.misses += 1
        loaded = load()
        with self._lock:
            if self.size > 0 and size <= self.max_bytes:
                self._drop(key)
                self._entries[key] = (loaded, size)
                self._bytes += size
                self._shrink()
        return loaded

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> Stats:
        with self._lock:
            return Stats(len(self._entries), self._bytes, self.hits, self.misses)

    def _drop(self, key: Hashable) -> None:
        gone = self._entries.pop(key, None)
        if gone is not None:
            self._bytes -= gone[1]

    def _shrink(self) -> None:
        while self._entries and (len(self._entries) > self.size or self._bytes > self.max_bytes):
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size


MODELS = LoadedModels()


def configure(size: int, megabytes: int) -> None:
    """The process's bounds (the settings ``model_cache_size`` and ``model_cache_mb``)."""
    MODELS.configure(size, megabytes * MB)
