"""What the review service is built from: one frozen set of settings, read once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..service import Settings

__all__ = ["ApiSettings"]


@dataclass(frozen=True)
class ApiSettings:
    """The store (`service`), the model to serve, and how requests are batched and limited.

    `model` is a model directory, a registry id or "active"; None serves no
    model (classify answers 503, /readyz says not ready). Concurrent classify
    requests are gathered into one `predict_batch` call of up to `max_batch`
    records, waiting at most `max_wait_ms` for more; `micro_batching=False`
    gives every request its own call (for measuring what batching buys).
    """

    service: Settings = field(default_factory=Settings)
    model: str | None = "active"
    max_batch: int = 64
    max_wait_ms: float = 5.0
    micro_batching: bool = True
    max_records: int = 1000
    top_k: int = 3
    secure_cookies: bool = False  # set behind HTTPS: the session cookie is then sent over HTTPS only
    session_hours: float = 8.0
    taxonomy_refresh_s: float = 5.0  # how often the store's latest taxonomy version is checked

    def replace(self, **changes: Any) -> ApiSettings:
        return replace(self, **changes)
