"""Versioned schema migrations of the record store: ordered, recorded functions applied on open.

Each migration is a function of a connection, recorded in `schema_migrations`
once applied. Migrations describe tables as they were at that version (a
snapshot, not the ORM models), so an old database upgrades step by step. A
database newer than this code refuses to open rather than be damaged.

A migration must be idempotent (check before ALTER, create_all with checkfirst, IF NOT EXISTS): SQLite
commits each DDL statement on its own, so a process killed half-way through one leaves part of it
applied, and the next open must finish it.

To change the schema: append a `Migration(N + 1, "what_it_does", fn)` to
`MIGRATIONS` (using `op`-style `ALTER TABLE` through SQLAlchemy constructs that
both SQLite and PostgreSQL accept) and update `models.py` to match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreError

__all__ = ["Migration", "MIGRATIONS", "LATEST_VERSION", "migrate", "applied_migrations"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def _schema_migrations_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "schema_migrations",
        md,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def _m1_initial(conn: Connection) -> None:
    md = sa.MetaData()
    ID, CODE, TS = sa.String(128), sa.String(64), sa.DateTime(timezone=True)
    sa.Table(
        "records", md,
        sa.Column("id", ID, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("source", sa.String(200), index=True),
        sa.Column("date", sa.Date, index=True),
        sa.Column("imported_at", TS, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
    )
    labels = sa.Table(
        "labels", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", ID, sa.ForeignKey("records.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("category", CODE, nullable=False, index=True),
        sa.Column("taxonomy_version", sa.String(32)),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("labelled_at", TS, nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False, index=True),
        sa.Column("replaces_label_id", sa.Integer, sa.ForeignKey("labels.id")),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("original_category", CODE),
        sa.Column("run_id", sa.String(32), index=True),
    )
    sa.Index(
        "uq_labels_current_record", labels.c.record_id, unique=True,
        sqlite_where=labels.c.is_current == sa.true(), postgresql_where=labels.c.is_current == sa.true(),
    )
    sa.Table(
        "taxonomy_versions", md,
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("changelog_entry", sa.JSON),
        sa.Column("created", TS, nullable=False),
        sa.Column("position", sa.Integer, nullable=False, index=True),
    )
    sa.Table(
        "models", md,
        sa.Column("id", ID, primary_key=True),
        sa.Column("engine", sa.String(64), nullable=False, index=True),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("parent", ID),
        sa.Column("created", TS, nullable=False),
    )
    sa.Table(
        "predictions", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", ID, nullable=False, index=True),
        sa.Column("model_id", ID, nullable=False, index=True),
        sa.Column("category", CODE, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("alternatives", sa.JSON, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer),
        sa.Column("run_id", sa.String(32), index=True),
        sa.Column("created", TS, nullable=False),
    )
    sa.Table(
        "runs", md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("started", TS, nullable=False),
        sa.Column("finished", TS),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("summary", sa.JSON),
    )
    sa.Table(
        "llm_cache", md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    md.create_all(conn)


def _add_columns(conn: Connection, table: str, columns: list[sa.Column]) -> None:
    # Idempotent: SQLite commits each ALTER TABLE on its own (pysqlite opens no transaction for DDL), so a
    # migration killed half-way is finished, not repeated, when the store is opened again.
    existing = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    for col in columns:
        if col.name in existing:
            continue
        ddl = col.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {col.name} {ddl}"))


def _m2_decision_log_registry_review(conn: Connection) -> None:
    """The decision log (reason, taxonomy version, route on every prediction), model status, the review queue."""
    _add_columns(conn, "predictions", [
        sa.Column("reason", sa.String(64)),
        sa.Column("taxonomy_version", sa.String(32)),
        sa.Column("route", sa.String(64)),
        sa.Column("extra", sa.JSON),
    ])
    _add_columns(conn, "models", [
        sa.Column("status", sa.String(16)),
        sa.Column("taxonomy_version", sa.String(32)),
        sa.Column("metrics", sa.JSON),
    ])
    md = sa.MetaData()
    items = sa.Table(
        "review_items", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_id", sa.String(128), nullable=False, index=True),
        sa.Column("reason", sa.String(64), nullable=False, index=True),
        sa.Column("suggested", sa.String(64)),
        sa.Column("score", sa.Float),
        sa.Column("model_id", sa.String(128)),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolution", sa.String(16)),
        sa.Column("label_id", sa.Integer),
        sa.Column("run_id", sa.String(32), index=True),
    )
    # One open item per record and reason: flagging again is idempotent.
    sa.Index("ix_review_items_open", items.c.record_id, items.c.reason, items.c.status)
    md.create_all(conn)
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_predictions_record_created ON predictions (record_id, created)"))


def _m3_api_keys(conn: Connection) -> None:
    """Keys of the review service: only a hash of each key is kept, with its role and whether it was revoked."""
    md = sa.MetaData()
    sa.Table(
        "api_keys", md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", _m1_initial),
    Migration(2, "decision_log_registry_review", _m2_decision_log_registry_review),
    Migration(3, "api_keys", _m3_api_keys),
)
LATEST_VERSION = max(m.version for m in MIGRATIONS)


def applied_migrations(conn: Connection) -> dict[int, str]:
    """Versions recorded in `schema_migrations` ({} for an empty database)."""
    if not sa.inspect(conn).has_table("schema_migrations"):
        return {}
    table = _schema_migrations_table(sa.MetaData())
    return {int(v): str(n) for v, n in conn.execute(sa.select(table.c.version, table.c.name))}


def migrate(engine: Engine, *, where: str) -> list[str]:
    """Apply the migrations this database lacks, in order; return the labels applied."""
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)), "migrations must have strictly increasing versions"
    with engine.begin() as conn:
        table = _schema_migrations_table(sa.MetaData())
        table.create(conn, checkfirst=True)
        done = applied_migrations(conn)
    newest = max(done, default=0)
    if newest > LATEST_VERSION:
        raise StoreError(
            f"the store at {where} has schema version {newest} ({done[newest]}), but this taxonomist "
            f"knows versions up to {LATEST_VERSION}; upgrade taxonomist (pip install -U taxonomist) "
            "or use another --db"
        )
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        with engine.begin() as conn:
            m.apply(conn)
            conn.execute(
                table.insert().values(version=m.version, name=m.name, applied_at=dt.datetime.now(dt.timezone.utc))
            )
        applied.append(m.label)
    return applied
