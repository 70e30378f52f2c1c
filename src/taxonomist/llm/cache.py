"""The LLM response cache: one small interface, in memory or in the record store.

Keyed by `ChatRequest.key(model, endpoint=...)` (a hash of the model id, the
endpoint URL or model file, the prompt version, the whole prompt, the allowed
choices and the decoding parameters), so an unchanged prompt costs nothing the
second time and any change (taxonomy edit, new example, other model, another
server behind the same model name, new prompt wording) misses. The store holds responses as JSON, never pickles.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from .backends import ChatResponse

__all__ = ["ResponseCache", "MemoryResponseCache", "StoreResponseCache"]


class ResponseCache(Protocol):
    def get(self, key: str) -> ChatResponse | None: ...

    def put(self, key: str, model: str, response: ChatResponse) -> None: ...


class MemoryResponseCache:
    """A dict behind the cache interface, bounded (oldest entries dropped first)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> ChatResponse | None:
        with self._lock:
            data = self._data.get(key)
        return None if data is None else ChatResponse.from_dict(data, from_cache=True)

    def put(self, key: str, model: str, response: ChatResponse) -> None:
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.pop(next(iter(self._data)))
            self._data[key] = response.to_dict()

    def __len__(self) -> int:
        return len(self._data)


class StoreResponseCache:
    """The cache table of a `taxonomist.store.Store` (`cache_get` / `cache_put`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: str) -> ChatResponse | None:
        data = self.store.cache_get(key)
        return None if data is None else ChatResponse.from_dict(data, from_cache=True)

    def put(self, key: str, model: str, response: ChatResponse) -> None:
        self.store.cache_put(key, model, response.to_dict())
