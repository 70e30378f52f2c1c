"""What an engine says about one record: the category, how sure, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Alternative", "Evidence", "Prediction", "Reason"]


class Reason:
    """Why a decision is `NONE` (or was changed): the values of `Prediction.reason`.

    Every one of them sends the record to review. `Prediction.reason` is empty
    when the engine answered a category as is.
    """

    BELOW_THRESHOLD = "below_threshold"  # calibrated confidence under the model's threshold
    INVALID_OUTPUT = "invalid_output"  # the LLM's answer was not one of the allowed codes, even after repair
    RETIRED_CODE = "retired_code"  # the model answered a code retired since it was trained, with no successor
    SPLIT = "split"  # the model answered a code split since it was trained: a person picks the part
    UNKNOWN_CODE = "unknown_code"  # a code the store's taxonomy does not know at all
    OUT_OF_SCOPE = "out_of_scope"  # the engine itself answered NONE (e.g. the LLM chose NONE)
    DEFERRED = "deferred_to_review"  # a cascade's last stage would not answer
    MAPPED = "mapped"  # not NONE: the answer was mapped through the taxonomy changelog (merge, rename)

    ALL = (BELOW_THRESHOLD, INVALID_OUTPUT, RETIRED_CODE, SPLIT, UNKNOWN_CODE, OUT_OF_SCOPE, DEFERRED, MAPPED)


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
    """One decision about one record, made by `Engine.predict_batch` (the one decision path).

    `category` is `ABSTAIN` ("NONE") when the record goes to a person; `reason`
    (a `Reason` value) says why, and is also set when an answer was mapped
    through the taxonomy's changelog (`extra["mapped_from"]`). `taxonomy_version`
    is the version the decision is valid in: the store's current one when the
    caller passed it, else the model's own. `route` names what answered (an
    engine, or a cascade's stage).
    """

    category: str
    confidence: float
    alternatives: tuple[Alternative, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    model_id: str = ""
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    taxonomy_version: str = ""
    route: str = ""
    record_id: str = ""

    @property
    def abstained(self) -> bool:
        from .taxonomy import ABSTAIN

        return self.category == ABSTAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
