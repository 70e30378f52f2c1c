"""The record store on a real database: migrations, idempotent adds, relabel round trips, models, runs, cache."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from taxonomist.errors import StoreError, TaxonomyError
from taxonomist.prediction import Alternative, Evidence, Prediction
from taxonomist.records import Record
from taxonomist.store import LATEST_VERSION, Store, cache_key
from taxonomist.store.migrations import MIGRATIONS
from taxonomist.store.models import Base, RecordRow
from taxonomist.taxonomy import Crosswalk

# (id, label, month) for a small labelled history: 4 A1, 3 A2, 3 C1, 2 G1, 2 I2, 1 unlabelled.
HISTORY = [
    ("r01", "A1", 1), ("r02", "A1", 1), ("r03", "A1", 2), ("r04", "A1", 3),
    ("r05", "A2", 1), ("r06", "A2", 2), ("r07", "A2", 2),
    ("r08", "C1", 3), ("r09", "C1", 3), ("r10", "C1", 1),
    ("r11", "G1", 2), ("r12", "G1", 2),
    ("r13", "I2", 1), ("r14", "I2", 3),
    ("r15", None, 2),
]


def history_records(prefix: str = "", source: str = "ours") -> list[Record]:
    return [
        Record(
            id=prefix + rid,
            text=f"synthetic denial note {prefix}{rid}",
            fields={"payer": "Payer-" + rid[-1], "carc": "197"},
            source=source,
            date=dt.date(2024, month, 5),
            label=label,
        )
        for rid, label, month in HISTORY
    ]


def table_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("records", "labels", "taxonomy_versions", "models", "predictions", "llm_cache")
        }


@pytest.fixture
def loaded(store: Store, small_taxonomy) -> Store:
    store.save_taxonomy(small_taxonomy)
    result = store.add_records(history_records(), who="importer", taxonomy_version=small_taxonomy.version_id)
    assert (result.inserted, result.labels_added) == (15, 14)
    return store


# ----- opening and migrations -----------------------------------------------------------
def test_migrations_recorded_and_idempotent_on_reopen(db_url: str) -> None:
    every = {m.version: m.name for m in MIGRATIONS}
    assert every[1] == "initial"
    with Store.open(db_url) as s:
        assert s.schema_versions() == every
        assert s.schema_version == LATEST_VERSION
        s.add_records([Record(id="x", text="kept across reopen")], who="t")
    with Store.open(db_url) as s:
        assert s.schema_versions() == every
        with s.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM schema_migrations")).scalar_one() == len(every)
        assert [r.id for r in s.records()] == ["x"]


def test_newer_schema_is_refused_with_a_clear_error(db_url: str) -> None:
    with Store.open(db_url) as s, s.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', :t)"),
            {"t": dt.datetime.now(dt.timezone.utc)},
        )
    with pytest.raises(StoreError, match=r"schema version 99 .*upgrade taxonomist"):
        Store.open(db_url)


def test_orm_models_match_what_the_migrations_create(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name
        migrated_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= migrated_indexes, table.name


def test_default_store_lives_in_taxonomist_home(isolated_state: Path) -> None:
    with Store.open() as s:
        s.add_records([Record(id="a", text="t")], who="t")
    assert (isolated_state / "taxonomist.db").is_file()


def test_taxonomist_db_env_names_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere" / "named.db"
    monkeypatch.setenv("TAXONOMIST_DB", str(target))
    Store.open().close()
    assert target.is_file()


def test_unusable_urls_raise_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database driver"):
        Store.open("postgresql+nosuchdriver://u@127.0.0.1/db")
    with pytest.raises(StoreError, match="driver 'pg8000' .* is not installed"):
        Store.open("postgresql+pg8000://u@127.0.0.1/db")
    with pytest.raises(StoreError, match="not a database URL"):
        Store.open("::not a url::://")
    not_a_db = tmp_path / "denials.csv"
    not_a_db.write_text("id,text\n1,a csv passed as --db by mistake\n" * 50)
    with pytest.raises(StoreError, match="cannot open the store at .*denials.csv: file is not a database"):
        Store.open(not_a_db)
    assert "by mistake" in not_a_db.read_text()  # left untouched


def test_missing_postgres_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from taxonomist.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if taxonomist[postgres] were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'taxonomist\[postgres\]'"):
        Store.open("postgresql+psycopg://u@127.0.0.1/db")


def test_one_current_label_per_record_is_enforced_by_the_database(loaded: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError), loaded.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO labels (record_id, category, who, labelled_at, is_current, reason) "
                "VALUES ('r01', 'C1', 't', :t, :cur, 'test')"
            ),
            {"t": dt.datetime.now(dt.timezone.utc), "cur": True},
        )


def test_database_errors_never_quote_record_text(store: Store) -> None:
    text = "patient Jane Roe, DOB 1970-01-01"
    store.add_records([Record(id="r1", text=text)], who="t")
    same_id = {"id": "r1", "text": text, "fields": {}, "imported_at": dt.datetime.now(dt.timezone.utc), "text_hash": "h"}
    with pytest.raises(sa.exc.IntegrityError) as raised, store.engine.begin() as conn:
        conn.execute(RecordRow.__table__.insert(), same_id)
    assert "Jane Roe" not in str(raised.value) and "parameters hidden" in str(raised.value)


def test_postgresql_plans_every_statement_afresh(store: Store) -> None:
    # A generic plan PostgreSQL kept from when the tables were small made a 100k import quadratic (see Store.open).
    if store.engine.dialect.name != "postgresql":
        pytest.skip("psycopg's prepared statements are a PostgreSQL matter")
    with store.engine.connect() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is None


# ----- records --------------------------------------------------------------------------
def test_add_records_is_idempotent(loaded: Store, small_taxonomy) -> None:
    before = table_counts(loaded)
    again = loaded.add_records(history_records(), who="importer", taxonomy_version=small_taxonomy.version_id)
    assert (again.inserted, again.unchanged, again.conflicts, again.labels_added) == (0, 15, [], 0)
    assert table_counts(loaded) == before


def test_same_id_with_other_text_is_a_conflict_not_an_overwrite(loaded: Store) -> None:
    result = loaded.add_records([Record(id="r01", text="a rewritten note", label="A1")], who="t")
    assert result.inserted == 0 and [c.record_id for c in result.conflicts] == ["r01"]
    assert "rewritten" not in result.conflicts[0].reason  # never echo record text
    assert next(loaded.records(["r01"])).text == "synthetic denial note r01"


def test_label_changes_on_reimport_are_conflicts_and_unlabelled_records_get_labels(loaded: Store) -> None:
    recs = {r.id: r for r in history_records()}
    changed = Record(**{**recs["r01"].__dict__, "label": "C1"})
    now_labelled = Record(**{**recs["r15"].__dict__, "label": "G2"})
    result = loaded.add_records([changed, now_labelled], who="t")
    assert [c.record_id for c in result.conflicts] == ["r01"]
    assert "'C1' differs from the stored label 'A1'" in result.conflicts[0].reason
    assert result.labels_added == 1
    assert loaded.current_labels(["r01", "r15"]) == {"r01": "A1", "r15": "G2"}


def test_records_filters_and_round_trip(loaded: Store) -> None:
    everything = list(loaded.records())
    assert [r.id for r in everything] == sorted(r[0] for r in HISTORY)
    r01 = everything[0]
    assert r01 == Record(
        id="r01", text="synthetic denial note r01", fields={"payer": "Payer-1", "carc": "197"},
        source="ours", date=dt.date(2024, 1, 5), label="A1",
    )
    assert [r.id for r in loaded.records(labelled=False)] == ["r15"]
    assert len(list(loaded.records(labelled=True))) == 14
    assert [r.id for r in loaded.records(["r02", "r05", "missing"])] == ["r02", "r05"]
    assert list(loaded.records(source="theirs")) == []
    rows = loaded.labelled()
    assert len(rows) == 14 and rows[0] == ("r01", "synthetic denial note r01", "A1", dt.date(2024, 1, 5))


def test_stats_counts_by_category_source_and_month(loaded: Store) -> None:
    stats = loaded.stats()
    assert stats["records"] == 15 and stats["labelled"] == 14
    assert stats["by_category"] == {"A1": 4, "A2": 3, "C1": 3, "G1": 2, "I2": 2}
    assert stats["by_source"] == {"ours": 15}
    assert stats["by_month"] == {"2024-01": 5, "2024-02": 6, "2024-03": 4}


# ----- taxonomy versions ------------------------------------------------------------------
def test_taxonomy_versions_round_trip_and_latest(store: Store, small_taxonomy) -> None:
    assert store.get_taxonomy() is None
    v1 = store.save_taxonomy(small_taxonomy)
    change = small_taxonomy.add("C9", "Telehealth audio-only", group="C", author="lead")
    v2 = store.save_taxonomy(change.taxonomy)
    assert store.get_taxonomy().version_id == v2
    assert "C9" in store.get_taxonomy()
    assert store.get_taxonomy(v1).version_id == v1
    store.save_taxonomy(small_taxonomy)  # going back makes the old version the latest again
    assert store.get_taxonomy().version_id == v1
    assert [v["version_id"] for v in store.taxonomy_versions()] == [v2, v1]
    with pytest.raises(StoreError, match="vnope.*not in the store"):
        store.get_taxonomy("vnope")


# ----- relabel round trips with the real taxonomy operations --------------------------------
def test_merge_relabels_history_and_revert_restores_it_exactly(loaded: Store, small_taxonomy) -> None:
    before = loaded.current_labels()
    change = small_taxonomy.merge(["A1", "A2"], "A9", name="Not eligible", author="lead")
    result = loaded.relabel(change, who="lead")
    assert (result.changed, result.review_count) == (7, 0)
    after = loaded.current_labels()
    assert {k for k, v in after.items() if v == "A9"} == {k for k, v in before.items() if v in ("A1", "A2")}
    assert {k: v for k, v in after.items() if v != "A9"} == {k: v for k, v in before.items() if v not in ("A1", "A2")}
    assert loaded.get_taxonomy().version_id == change.taxonomy.version_id
    hist = loaded.label_history("r05")
    assert [(h["category"], h["is_current"]) for h in hist] == [("A2", False), ("A9", True)]
    assert hist[1]["replaces_label_id"] == hist[0]["id"]
    assert hist[1]["reason"] == f"relabel:merge:{change.taxonomy.version_id}"

    reverted = loaded.revert_relabel(result.relabel_id, who="lead")
    assert (reverted.restored, reverted.cleared) == (7, 0)
    assert loaded.current_labels() == before
    assert [(h["category"], h["is_current"]) for h in loaded.label_history("r05")] == [("A2", True), ("A9", False)]
    with pytest.raises(StoreError, match="already reverted"):
        loaded.revert_relabel(result.relabel_id, who="lead")


def test_rename_with_new_code_relabels_and_reverts(loaded: Store, small_taxonomy) -> None:
    before = loaded.current_labels()
    change = small_taxonomy.rename("C1", new_code="C10", new_name="No authorisation on file", author="lead")
    result = loaded.relabel(change, who="lead")
    assert result.changed == 3
    assert sorted(k for k, v in loaded.current_labels().items() if v == "C10") == ["r08", "r09", "r10"]
    assert "C1" not in loaded.stats()["by_category"]
    loaded.revert_relabel(result.relabel_id, who="lead")
    assert loaded.current_labels() == before


def test_rename_of_name_only_changes_no_labels(loaded: Store, small_taxonomy) -> None:
    before = loaded.current_labels()
    result = loaded.relabel(small_taxonomy.rename("C1", new_name="No auth", author="lead"), who="lead")
    assert result.changed == 0 and loaded.current_labels() == before


def test_retire_with_successor_moves_history_and_reverts(loaded: Store, small_taxonomy) -> None:
    before = loaded.current_labels()
    result = loaded.relabel(small_taxonomy.retire("I2", successor="I1", author="lead"), who="lead")
    assert result.changed == 2
    assert loaded.current_labels()["r13"] == "I1" and loaded.current_labels()["r14"] == "I1"
    loaded.revert_relabel(result.relabel_id, who="lead")
    assert loaded.current_labels() == before


def test_split_flags_history_for_review_assign_and_revert(loaded: Store, small_taxonomy) -> None:
    before = loaded.current_labels()
    change = small_taxonomy.split("G1", {"G1A": "Telehealth modifier", "G1B": "Other modifier"}, author="lead")
    result = loaded.relabel(change, who="lead")
    assert (result.changed, result.review_count) == (0, 2)
    assert loaded.needs_review() == [("r11", "G1"), ("r12", "G1")]

    loaded.assign("r11", "G1A", who="coder", relabel_id=result.relabel_id)
    assert loaded.needs_review() == [("r12", "G1")]
    loaded.assign("r12", "G1B", who="coder", relabel_id=result.relabel_id)
    assert loaded.needs_review() == []
    assert loaded.current_labels(["r11", "r12"]) == {"r11": "G1A", "r12": "G1B"}
    with pytest.raises(StoreError, match="'G1' is not an active category"):
        loaded.assign("r11", "G1", who="coder")
    with pytest.raises(StoreError, match="record 'nope' is not in the store"):
        loaded.assign("nope", "G1A", who="coder")

    reverted = loaded.revert_relabel(result.relabel_id, who="lead")
    assert reverted.restored == 2
    assert loaded.current_labels() == before


def test_revert_is_refused_when_a_later_operation_changed_the_labels(loaded: Store, small_taxonomy) -> None:
    first = small_taxonomy.merge(["A1", "A2"], "A9", name="Not eligible", author="lead")
    r1 = loaded.relabel(first, who="lead")
    r2 = loaded.relabel(first.taxonomy.rename("A9", new_code="A0", author="lead"), who="lead")
    with pytest.raises(StoreError, match=f"cannot be reverted: 7 of its labels were changed later \\({r2.relabel_id}\\)"):
        loaded.revert_relabel(r1.relabel_id, who="lead")
    loaded.revert_relabel(r2.relabel_id, who="lead")
    loaded.revert_relabel(r1.relabel_id, who="lead")
    assert set(loaded.current_labels().values()) == {"A1", "A2", "C1", "G1", "I2"}


def test_relabel_needs_an_author(loaded: Store, small_taxonomy) -> None:
    with pytest.raises(StoreError, match="who is required"):
        loaded.relabel(small_taxonomy.retire("I2", successor="I1", author="lead"), who="")


# ----- crosswalk import -----------------------------------------------------------------
CROSSWALK = Crosswalk(
    source="northside",
    mapping={"ELIG-TERM": "A1", "ELIG-NOMEMBER": "A2", "PA-NONE": "C1", "PA-NONUM": "C1", "PA-EXPIRED": "C1"},
)


def their_history() -> list[Record]:
    codes = ["ELIG-TERM", "ELIG-NOMEMBER", "PA-NONE", "PA-NONUM", "PA-EXPIRED", "PA-NONUM", None]
    return [
        Record(id=f"ns-{i}", text=f"their note {i}", source="northside", date=dt.date(2023, 12, 1), label=c)
        for i, c in enumerate(codes)
    ]


def test_crosswalk_import_translates_many_to_one_keeps_originals_and_reverts(loaded: Store) -> None:
    ours_before = loaded.current_labels()
    result = loaded.import_crosswalk_history(their_history(), CROSSWALK, who="merger")
    assert (result.inserted, result.labels_added) == (7, 6)
    labels = loaded.current_labels([f"ns-{i}" for i in range(7)])
    assert labels == {"ns-0": "A1", "ns-1": "A2", "ns-2": "C1", "ns-3": "C1", "ns-4": "C1", "ns-5": "C1"}
    hist = loaded.label_history("ns-3")
    assert (hist[0]["original_category"], hist[0]["reason"]) == ("PA-NONUM", "crosswalk:northside")
    assert loaded.stats()["by_source"] == {"northside": 7, "ours": 15}

    again = loaded.import_crosswalk_history(their_history(), CROSSWALK, who="merger")
    assert (again.inserted, again.unchanged, again.labels_added, again.conflicts) == (0, 7, 0, [])

    reverted = loaded.revert_relabel(result.run_id, who="merger")
    assert (reverted.restored, reverted.cleared) == (0, 6)
    assert loaded.current_labels() == ours_before
    # Their codes stay on record after the revert.
    assert [h["original_category"] for h in loaded.label_history("ns-3")] == ["PA-NONUM"]


def test_crosswalk_with_unmapped_codes_imports_nothing(loaded: Store) -> None:
    before = table_counts(loaded)
    bad = [*their_history(), Record(id="ns-x", text="t", label="PA-UNKNOWN")]
    with pytest.raises(StoreError, match="no mapping for their code\\(s\\) PA-UNKNOWN"):
        loaded.import_crosswalk_history(bad, CROSSWALK, who="merger")
    assert table_counts(loaded) == before


def test_crosswalk_onto_unknown_category_is_refused(loaded: Store) -> None:
    with pytest.raises(TaxonomyError, match="'X9', which is not in taxonomy"):
        loaded.import_crosswalk_history(their_history(), Crosswalk("bad", {**CROSSWALK.mapping, "PA-NONE": "X9"}), who="merger")


def test_with_crosswalk_change_relabels_raw_imported_codes(store: Store, small_taxonomy) -> None:
    store.save_taxonomy(small_taxonomy)
    store.add_records(their_history(), who="raw")  # imported first with their codes as labels
    change = small_taxonomy.with_crosswalk(CROSSWALK, author="lead")
    result = store.relabel(change, who="lead")
    assert result.changed == 6
    assert set(store.current_labels().values()) == {"A1", "A2", "C1"}
    store.revert_relabel(result.relabel_id, who="lead")
    assert store.current_labels()["ns-3"] == "PA-NONUM"


# ----- models, predictions, runs and the LLM cache --------------------------------------------
def test_models_predictions_and_runs(loaded: Store) -> None:
    from taxonomist.engines.base import Manifest

    manifest = Manifest(engine="tfidf", params={"C": 1.0}, classes=["A1", "C1"], taxonomy_version="v1")
    model_id = loaded.save_model(manifest, "/models/tfidf")
    assert model_id == manifest.model_id
    child = loaded.save_model({"engine": "head", "model_id": "head-1", "params": {}}, parent=model_id)
    assert [(m["id"], m["parent"]) for m in loaded.models()] == [(model_id, None), (child, model_id)]

    run_id = loaded.start_run("evaluate", {"model": model_id, "when": dt.date(2024, 1, 1)})
    pred = Prediction(
        category="C1", confidence=0.82, alternatives=(Alternative("A1", 0.1),),
        evidence=(Evidence(kind="example", category="C1", score=0.9, ref="r08"),), model_id=model_id,
        latency_ms=3.5, cost_usd=0.0001, extra={"prompt_tokens": 120, "completion_tokens": 4},
    )
    n = loaded.add_predictions([("r08", pred), {"record_id": "adhoc-1", "model_id": model_id, "category": "NONE",
                                                 "confidence": 0.2}], run_id=run_id)
    assert n == 2
    loaded.finish_run(run_id, "ok", {"accuracy": 0.5})
    stored = loaded.predictions(run_id=run_id)
    assert [(p["record_id"], p["category"]) for p in stored] == [("r08", "C1"), ("adhoc-1", "NONE")]
    assert stored[0]["alternatives"] == [{"category": "A1", "score": 0.1}]
    assert stored[0]["evidence"][0]["ref"] == "r08"
    assert (stored[0]["prompt_tokens"], stored[0]["completion_tokens"], stored[0]["cached_tokens"]) == (120, 4, None)
    assert loaded.predictions(model_id="other") == []
    run = next(r for r in loaded.runs("evaluate") if r["id"] == run_id)
    assert (run["status"], run["summary"], run["params"]["when"]) == ("ok", {"accuracy": 0.5}, "2024-01-01")
    with pytest.raises(StoreError, match="lacks confidence"):
        loaded.add_predictions([{"record_id": "a", "model_id": "m", "category": "C1"}])


def test_llm_cache_round_trip(store: Store) -> None:
    key = cache_key("prompt text", "smollm2", {"temperature": 0})
    assert key == cache_key("prompt text", "smollm2", {"temperature": 0})
    assert key != cache_key("prompt text", "smollm2", {"temperature": 0.7})
    assert store.cache_get(key) is None
    store.cache_put(key, "smollm2", {"category": "C1", "usage": {"prompt_tokens": 10}})
    assert store.cache_get(key) == {"category": "C1", "usage": {"prompt_tokens": 10}}
    store.cache_put(key, "smollm2", {"category": "A1"})
    assert store.cache_get(key) == {"category": "A1"}
