"""The storage models of the record store (SQLAlchemy 2 ORM), in portable column types only.

These classes describe the schema as the newest migration leaves it; the
migrations in `migrations.py` are what create and change tables. A test checks
that the two agree. Only portable types are used (String, Text, Integer, Float,
Boolean, Date, DateTime, JSON) so the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Date, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "RecordRow",
    "LabelRow",
    "TaxonomyVersionRow",
    "ModelRow",
    "PredictionRow",
    "ReviewItemRow",
    "RunRow",
    "LlmCacheRow",
    "SchemaMigrationRow",
    "ApiKeyRow",
]

ID = String(128)
CODE = String(64)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


class RecordRow(Base):
    __tablename__ = "records"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str | None] = mapped_column(String(200), index=True)
    date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    imported_at: Mapped[dt.datetime]
    text_hash: Mapped[str] = mapped_column(String(64))


class LabelRow(Base):
    """One label of one record. Labels are never updated except to clear `current`.

    A relabel adds a new row pointing at the row it replaces (`replaces_label_id`)
    and clears `is_current` on the old one;
    `run_id` ties the rows an operation wrote together so it can be reverted.
    """

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ID, ForeignKey("records.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(CODE, index=True)
    taxonomy_version: Mapped[str | None] = mapped_column(String(32))
    who: Mapped[str] = mapped_column(String(200))
    labelled_at: Mapped[dt.datetime]
    is_current: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    replaces_label_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("labels.id"))
    reason: Mapped[str] = mapped_column(String(200))
    original_category: Mapped[str | None] = mapped_column(CODE)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)


# At most one current label per record, enforced by the database on both dialects.
Index(
    "uq_labels_current_record",
    LabelRow.record_id,
    unique=True,
    sqlite_where=LabelRow.is_current == True,  # noqa: E712
    postgresql_where=LabelRow.is_current == True,  # noqa: E712
)


class TaxonomyVersionRow(Base):
    __tablename__ = "taxonomy_versions"

    version_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    document: Mapped[str] = mapped_column(Text)
    changelog_entry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[dt.datetime]
    # Saving an existing version again makes it the latest: order by position, not time.
    position: Mapped[int] = mapped_column(Integer, index=True)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    engine: Mapped[str] = mapped_column(String(64), index=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    path: Mapped[str | None] = mapped_column(Text)
    parent: Mapped[str | None] = mapped_column(ID)
    created: Mapped[dt.datetime]
    status: Mapped[str | None] = mapped_column(String(16))  # candidate | active | retired
    taxonomy_version: Mapped[str | None] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # held-out figures at training time


class PredictionRow(Base):
    """One decision about one record: the decision log. Never the record's text.

    `record_id` may name a record not in the store (ad-hoc texts); `reason` says
    why the category is NONE (or that it was mapped); `taxonomy_version` is the
    version the decision is valid in; evidence holds record ids and codes only.
    """

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ID, index=True)
    model_id: Mapped[str] = mapped_column(ID, index=True)
    category: Mapped[str] = mapped_column(CODE)
    confidence: Mapped[float] = mapped_column(Float)
    alternatives: Mapped[list[Any]] = mapped_column(JSON, default=list)
    evidence: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(String(64))
    taxonomy_version: Mapped[str | None] = mapped_column(String(32))
    route: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


Index("ix_predictions_record_created", PredictionRow.record_id, PredictionRow.created)


class ReviewItemRow(Base):
    """A record waiting for a person: NONE decisions, a split's history, ambiguous crosswalk codes, suspected mislabels."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(ID, index=True)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    suggested: Mapped[str | None] = mapped_column(CODE)
    score: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(ID)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | done | skipped
    created: Mapped[dt.datetime]
    who: Mapped[str] = mapped_column(String(200))
    resolved_at: Mapped[dt.datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution: Mapped[str | None] = mapped_column(String(16))  # confirmed | corrected | skipped
    label_id: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)


Index("ix_review_items_open", ReviewItemRow.record_id, ReviewItemRow.reason, ReviewItemRow.status)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started: Mapped[dt.datetime]
    finished: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(32))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LlmCacheRow(Base):
    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    response: Mapped[Any] = mapped_column(JSON)
    created: Mapped[dt.datetime]


class SchemaMigrationRow(Base):
    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[dt.datetime]


class ApiKeyRow(Base):
    """A key of the review service: its SHA-256 (never the key), role, and when it was revoked."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # classifier | reviewer | admin
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart in lists
    created: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[dt.datetime | None]
