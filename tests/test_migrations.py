"""Schema upgrades from every earlier version, on SQLite and on TAXONOMIST_TEST_DB_URL's database.

For each version k in MIGRATIONS, a database is made the way a taxonomist that knew
only migrations 1..k made it, one row is written into every table as it was at k,
and `Store.open` from this code upgrades it: every row is still there, unchanged,
and the store reads and writes it. Rows are built from the reflected schema, so a
new migration (a new table, a new column) is covered without touching this file;
a column whose values are constrained (a status, a foreign key the reflection cannot
see) needs an entry in OVERRIDES.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from taxonomist.records import Record
from taxonomist.store import Store, cache_key, migrations
from taxonomist.store.migrations import MIGRATIONS

VERSIONS = [m.version for m in MIGRATIONS]
WHEN = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
OLD_RECORD = Record(
    id="old-r1", text="a denial note an older taxonomist stored", fields={"payer": "p1"},
    source="old-source", date=dt.date(2024, 3, 1), label="A1",
)
CACHE_KEY = cache_key("an old prompt", "smollm2", {"temperature": 0})


def overrides(taxonomy) -> dict[tuple[str, str], Any]:
    """Values with a meaning the store checks; every other column gets a value made from its type."""
    return {
        ("records", "id"): OLD_RECORD.id,
        ("records", "text"): OLD_RECORD.text,
        ("records", "text_hash"): OLD_RECORD.text_hash,
        ("records", "fields"): OLD_RECORD.fields,
        ("records", "source"): OLD_RECORD.source,
        ("records", "date"): OLD_RECORD.date,
        ("labels", "category"): OLD_RECORD.label,
        ("labels", "is_current"): True,
        ("labels", "taxonomy_version"): taxonomy.version_id,
        ("labels", "reason"): "import",
        ("labels", "original_category"): None,
        ("labels", "run_id"): "run-old",
        ("taxonomy_versions", "version_id"): taxonomy.version_id,
        ("taxonomy_versions", "name"): taxonomy.name,
        ("taxonomy_versions", "document"): taxonomy.to_yaml(),
        ("taxonomy_versions", "changelog_entry"): None,
        ("taxonomy_versions", "position"): 1,
        ("models", "id"): "tfidf-old",
        ("models", "engine"): "tfidf",
        ("models", "manifest"): {"engine": "tfidf", "model_id": "tfidf-old", "params": {}},
        ("models", "parent"): None,
        ("predictions", "record_id"): OLD_RECORD.id,
        ("predictions", "model_id"): "tfidf-old",
        ("predictions", "category"): "A1",
        ("predictions", "alternatives"): [{"category": "A2", "score": 0.25}],
        ("predictions", "evidence"): [],
        ("predictions", "run_id"): "run-old",
        ("runs", "id"): "run-old",
        ("runs", "kind"): "import",
        ("runs", "status"): "ok",
        ("llm_cache", "key"): CACHE_KEY,
        ("llm_cache", "response"): {"category": "A1"},
    }


def value_for(table: str, column: sa.Column, n: int) -> Any:
    """A value of the column's type, different per column, that both databases store exactly."""
    kind = column.type
    if isinstance(kind, sa.JSON):
        return {"table": table, "column": column.name}
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.Integer):
        return 100 + n
    if isinstance(kind, (sa.Float, sa.Numeric)):
        return 0.5 + n
    if isinstance(kind, sa.DateTime):
        return WHEN
    if isinstance(kind, sa.Date):
        return WHEN.date()
    if isinstance(kind, sa.String):  # Text and VARCHAR
        text = f"{table}.{column.name}"
        return text[-kind.length:] if kind.length else text
    raise AssertionError(f"no sample value for {table}.{column.name} of type {kind!r}; add it to OVERRIDES")


def normalised(value: Any) -> Any:
    # SQLite hands back naive UTC datetimes, PostgreSQL aware ones.
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def write_one_row_per_table(conn: sa.Connection, taxonomy) -> dict[str, dict[str, Any]]:
    """Insert a row into every table (parents first); returns {table: the row as written}."""
    md = sa.MetaData()
    md.reflect(conn)
    fixed = overrides(taxonomy)
    written: dict[str, dict[str, Any]] = {}
    for table in md.sorted_tables:
        if table.name == "schema_migrations":
            continue
        pk = list(table.primary_key.columns)
        generated = pk[0].name if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) else None
        row: dict[str, Any] = {}
        for n, col in enumerate(table.columns):
            if (table.name, col.name) in fixed:
                row[col.name] = fixed[(table.name, col.name)]
            elif col.name == generated:
                continue  # the database numbers it
            elif col.foreign_keys:
                target = next(iter(col.foreign_keys)).column
                if target.table.name == table.name or target.table.name not in written:
                    assert col.nullable, f"{table.name}.{col.name} needs a value from {target.table.name}"
                    row[col.name] = None
                else:
                    row[col.name] = written[target.table.name][target.name]
            else:
                row[col.name] = value_for(table.name, col, n)
        result = conn.execute(table.insert().values(**row))
        if generated is not None:
            row[generated] = result.inserted_primary_key[0]
        written[table.name] = row
    return written


@pytest.fixture
def store_at_version(db_url: str, small_taxonomy, monkeypatch: pytest.MonkeyPatch):
    """Make a database at schema version k with one row per table; yields those rows."""

    def make(version: int) -> dict[str, dict[str, Any]]:
        older = tuple(m for m in MIGRATIONS if m.version <= version)
        with monkeypatch.context() as mp:  # a taxonomist that knew only migrations 1..k
            mp.setattr(migrations, "MIGRATIONS", older)
            mp.setattr(migrations, "LATEST_VERSION", version)
            with Store.open(db_url) as old:
                assert old.schema_versions() == {m.version: m.name for m in older}
                with old.engine.begin() as conn:
                    return write_one_row_per_table(conn, small_taxonomy)

    return make


@pytest.mark.parametrize("version", VERSIONS)
def test_upgrade_from_every_version_keeps_every_row(
    version: int, store_at_version, db_url: str, small_taxonomy
) -> None:
    written = store_at_version(version)
    with Store.open(db_url) as store:
        assert store.schema_versions() == {m.version: m.name for m in MIGRATIONS}
        md = sa.MetaData()
        md.reflect(store.engine)
        with store.engine.connect() as conn:
            for name, row in written.items():
                stored = [dict(r._mapping) for r in conn.execute(sa.select(md.tables[name]))]
                assert len(stored) == 1, name
                kept = {k: normalised(stored[0][k]) for k in row}
                assert kept == {k: normalised(v) for k, v in row.items()}, name

        # ...and the store reads what the older version wrote,
        assert list(store.records()) == [OLD_RECORD]
        assert store.get_taxonomy().version_id == small_taxonomy.version_id
        assert [(h["category"], h["is_current"]) for h in store.label_history(OLD_RECORD.id)] == [("A1", True)]
        assert [m["id"] for m in store.models()] == ["tfidf-old"]
        assert [(p["record_id"], p["category"]) for p in store.predictions(model_id="tfidf-old")] == [("old-r1", "A1")]
        assert [r["id"] for r in store.runs()] == ["run-old"]
        assert store.cache_get(CACHE_KEY) == {"category": "A1"}
        assert store.stats()["by_category"] == {"A1": 1}

        # ...and writes beside it: new records, predictions and a relabel over old and new labels, reverted.
        new = Record(id="new-r1", text="a note stored after the upgrade", label="A2")
        assert store.add_records([OLD_RECORD, new], who="t").inserted == 1
        store.add_predictions([{"record_id": new.id, "model_id": "tfidf-old", "category": "A2", "confidence": 0.9}])
        assert len(store.predictions(model_id="tfidf-old")) == 2
        merge = small_taxonomy.merge(["A1", "A2"], "A9", name="Not eligible", author="lead")
        relabel = store.relabel(merge, who="lead")
        assert relabel.changed == 2 and store.current_labels() == {"old-r1": "A9", "new-r1": "A9"}
        store.revert_relabel(relabel.relabel_id, who="lead")
        assert store.current_labels() == {"old-r1": "A1", "new-r1": "A2"}


def test_every_version_is_reached_by_one_migration() -> None:
    # Upgrades apply migrations in order; a gap or a repeat would skip or re-run a step.
    assert VERSIONS == list(range(1, len(VERSIONS) + 1))
    assert migrations.LATEST_VERSION == VERSIONS[-1]


def test_a_migration_killed_half_way_is_finished_on_the_next_open(tmp_path):
    """SQLite commits each ALTER TABLE on its own: a kill between two leaves a half-applied migration."""
    import sqlalchemy as sa

    from taxonomist.store import Store
    from taxonomist.store import migrations as m

    url = f"sqlite:///{tmp_path / 'half.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        m._schema_migrations_table(sa.MetaData()).create(conn)
        m.MIGRATIONS[0].apply(conn)
        conn.execute(sa.text("INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'initial', '2026-01-01')"))
        conn.execute(sa.text("ALTER TABLE predictions ADD COLUMN reason VARCHAR(64)"))  # the first step of migration 2
    engine.dispose()
    with Store.open(url) as store:
        assert store.schema_version == m.LATEST_VERSION
        cols = {c["name"] for c in sa.inspect(store.engine).get_columns("predictions")}
        assert {"reason", "taxonomy_version", "route", "extra"} <= cols
