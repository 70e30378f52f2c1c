"""Request and response bodies of the API (pydantic), apart from the store's SQLAlchemy models.

No response carries record text: decisions name evidence by record id or category code.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RecordIn", "ClassifyRequest", "AlternativeOut", "EvidenceOut", "DecisionOut", "ClassifyResponse",
    "DecisionRow", "LabelRow", "AuditTrail", "ReviewItemOut", "ReviewQueue", "ReviewRequest", "ReviewResult",
    "UndoRequest", "TaxonomyVersionOut", "TaxonomyDiff", "OperationRequest", "OperationResult", "Health",
    "KeyRequest", "KeyOut", "KeyCreated",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordIn(_In):
    id: str = Field(min_length=1, max_length=128, description="Your id for the record; decisions are logged under it.")
    text: str = Field(min_length=1, max_length=100_000, description="The record's free text (never logged).")
    fields: dict[str, Any] = Field(default_factory=dict, description="Structured fields (payer, carc, cpt, ...).")
    source: str | None = Field(default=None, max_length=200)
    date: dt.date | None = None


class ClassifyRequest(_In):
    records: list[RecordIn] = Field(min_length=1, description="Up to 1,000 records per call.")
    keep_records: bool = Field(
        default=False,
        description="Also store the records (text included) so reviewers can see those that abstain. "
        "Without it only the decisions are stored, never the text.",
    )


class AlternativeOut(BaseModel):
    category: str
    score: float


class EvidenceOut(BaseModel):
    kind: str
    category: str
    score: float
    ref: str = Field(description="A record id (a labelled example) or a category code (its definition).")


class DecisionOut(BaseModel):
    id: str
    category: str = Field(description="A category code, or NONE: the record goes to review.")
    confidence: float
    reason: str = Field(description="Why NONE (below_threshold, split, ...), 'mapped', or '' for a plain answer.")
    alternatives: list[AlternativeOut]
    evidence: list[EvidenceOut]
    model_id: str
    taxonomy_version: str
    route: str


class ClassifyResponse(BaseModel):
    decisions: list[DecisionOut]


class DecisionRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_id: str
    category: str
    confidence: float
    reason: str | None
    taxonomy_version: str | None
    alternatives: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    route: str | None
    run_id: str | None
    created: dt.datetime


class LabelRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    category: str
    taxonomy_version: str | None
    who: str
    labelled_at: dt.datetime
    is_current: bool
    reason: str
    original_category: str | None
    run_id: str | None


class AuditTrail(BaseModel):
    record_id: str
    stored: bool = Field(description="Whether the record itself (text, fields) is in the store.")
    current_label: str | None
    decisions: list[DecisionRow]
    labels: list[LabelRow]


class ReviewItemOut(BaseModel):
    record_id: str
    reason: str
    suggested: str | None
    score: float | None
    model_id: str | None
    current_label: str | None
    source: str | None
    payer: str | None
    date: dt.date | None
    details: dict[str, Any]


class ReviewQueue(BaseModel):
    total: int
    items: list[ReviewItemOut]


class ReviewRequest(_In):
    action: Literal["confirm", "correct", "skip"]
    category: str | None = Field(default=None, max_length=64, description="Required to correct; optional to confirm.")
    note: str | None = Field(default=None, max_length=2000)


class ReviewResult(BaseModel):
    record_id: str
    action: str
    category: str | None
    label_id: int | None
    closed: int = Field(description="Open review items this closed.")
    index_updated: bool = Field(description="The served model's retrieval index learnt the label (knn, llm).")
    review_id: str = Field(description="Pass to POST /v1/review/undo to undo this review.")


class UndoRequest(_In):
    review_id: str = Field(min_length=1, max_length=64)


class TaxonomyVersionOut(BaseModel):
    version_id: str
    name: str
    created: dt.datetime
    changelog_entry: dict[str, Any] | None


class TaxonomyDiff(BaseModel):
    from_version: str
    to_version: str
    changes: list[str]


class OperationRequest(_In):
    op: Literal["add", "rename", "merge", "split", "retire"]
    dry_run: bool = Field(default=True, description="Show the impact only (the default); false applies it.")
    code: str | None = Field(default=None, description="add/rename/split/retire: the category.")
    codes: list[str] | None = Field(default=None, description="merge: the categories merged.")
    into: str | None = Field(default=None, description="merge: the target code.")
    parts: dict[str, str] | None = Field(default=None, description="split: new code -> name.")
    keep: bool = Field(default=False, description="split: keep the category and split parts out of it.")
    name: str | None = None
    group: str | None = None
    definition: str = ""
    new_code: str | None = None
    new_name: str | None = None
    successor: str | None = None
    examples: list[str] = Field(default_factory=list)


class OperationResult(BaseModel):
    applied: bool
    impact: dict[str, Any]
    relabel_id: str | None = None
    changed: int | None = None
    review_count: int | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)


class KeyRequest(_In):
    role: Literal["classifier", "reviewer", "admin"]
    name: str = Field(min_length=1, max_length=200, description="Who or what uses the key.")


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    prefix: str
    created: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown in this answer only.")
