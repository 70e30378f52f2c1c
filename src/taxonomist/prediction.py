"""What an engine says about one record: the category, how sure, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Alternative", "Evidence", "Prediction"]


@dataclass(frozen=True)
class Alternative:
    category: str
    score: float


@dataclass(frozen=True)
class Evidence:
    """Something that drove a prediction: a labelled example or a category definition.

    `text` of a labelled example is record text (PHI): it is kept in the store,
    never logged.
    """

    kind: str  # "example" | "definition" | "prompt" | "vote"
    category: str
    score: float = 0.0
    ref: str = ""  # record id, or category code for a definition
    text: str = ""


@dataclass(frozen=True)
class Prediction:
    """One engine's answer for one record. `category` is `ABSTAIN` ("NONE") when it abstains."""

    category: str
    confidence: float
    alternatives: tuple[Alternative, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    model_id: str = ""
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        from .taxonomy import ABSTAIN

        return self.category == ABSTAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
