"""The weekly loop end to end: one decision path, decisions on record, models registered, taxonomy changes survived.

Real parts only: a SQLite store file, the tfidf engine, the CLI's entry point, and (for the LLM) a local
OpenAI-compatible HTTP server that answers codes that are not in the taxonomy.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from taxonomist.decision import CodeMap
from taxonomist.engines import create_engine, load_engine
from taxonomist.prediction import Reason
from taxonomist.store import Store
from taxonomist.taxonomy import ABSTAIN, load_taxonomy

from .llm_servers import FaultServer
from .test_cli_records import cli

DATA = Path(__file__).parent / "data"
TAXONOMY = DATA / "taxonomy_small.yaml"

#: Distinct wording per category, so tfidf separates them (a few words each, varied by a seeded generator).
PHRASES = {
    "A1": ["coverage terminated before service", "member policy not effective on date", "eligibility ended last month"],
    "A2": ["member id not found", "subscriber unknown to the plan", "no such member on file"],
    "C1": ["no prior authorization on file", "precert absent for the visit", "authorization missing entirely"],
    "C2": ["auth number does not match", "wrong authorization number", "mismatched auth reference"],
    "C3": ["sessions over the authorized count", "units exceed the approved visits", "too many visits for the auth"],
    "G1": ["modifier 95 missing", "telehealth modifier invalid", "modifier GT not accepted"],
    "G2": ["place of service 02 wrong", "pos 10 not allowed", "invalid place of service"],
    "I1": ["timely filing limit passed", "claim filed too late", "filing deadline exceeded"],
}


def _texts(n_per: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = random.Random(seed)
    ids, texts, labels = [], [], []
    for code, phrases in PHRASES.items():
        for i in range(n_per):
            ids.append(f"{code}-{seed}-{i}")
            texts.append(f"{rng.choice(phrases)} claim {rng.randint(100, 999)} {rng.choice(['', 'please review', 'appeal?'])}")
            labels.append(code)
    return ids, texts, labels


@pytest.fixture(scope="module")
def model():
    ids, texts, labels = _texts(12, seed=1)
    engine = create_engine("tfidf").fit(texts, labels, ids=ids)
    engine.taxonomy_version_ = load_taxonomy(TAXONOMY).version_id
    return engine


# ----- one decision path --------------------------------------------------------------------------
def test_predict_predict_one_and_predict_batch_agree(model):
    _, texts, _ = _texts(3, seed=2)
    batch = model.predict_batch(texts)
    assert [p.category for p in batch] == list(model.predict(texts))
    assert batch[5] == model.predict_one(texts[5]) or batch[5].category == model.predict_one(texts[5]).category
    assert all(p.route == "tfidf" and p.model_id == model.model_id for p in batch)


def test_ids_become_evidence_refs_not_row_positions():
    ids, texts, labels = _texts(6, seed=3)
    knn = create_engine("knn", k=5).fit(texts, labels, ids=ids)
    p = knn.predict_batch([texts[0]], ids=["new-1"])[0]
    refs = [e.ref for e in p.evidence if e.kind == "example"]
    assert refs and all(r in set(ids) for r in refs) and not any(r.startswith("train:") for r in refs)
    assert p.record_id == "new-1"


# ----- taxonomy-version safety --------------------------------------------------------------------
def test_merge_rename_split_retire_map_or_abstain_and_never_emit_a_retired_code(model):
    base = load_taxonomy(TAXONOMY)
    _, texts, labels = _texts(5, seed=4)
    merged = base.merge(["C1", "C2"], "C1", author="t").taxonomy  # C2 retired into C1
    renamed = merged.rename("I1", new_code="I9", author="t").taxonomy
    split = renamed.split("G1", {"G1A": "Telehealth", "G1B": "Other"}, author="t").taxonomy
    final = split.retire("A2", author="t").taxonomy  # no successor
    cmap = model.code_map(final)
    assert cmap.changed and "C2 → C1" in cmap.summary() and base.version_id in cmap.summary()
    preds = model.predict_batch(texts, taxonomy=final)
    active = set(final.codes)
    assert all(p.category in active or p.category == ABSTAIN for p in preds)
    by_label = {}
    for y, p in zip(labels, preds):
        by_label.setdefault(y, []).append(p)
    assert all(p.category == "C1" for p in by_label["C2"])
    assert any(p.reason == Reason.MAPPED and p.extra["mapped_from"] == "C2" for p in by_label["C2"])
    assert all(p.category == "I9" and p.reason == Reason.MAPPED for p in by_label["I1"])
    assert all(p.category == ABSTAIN and p.reason == Reason.SPLIT for p in by_label["G1"])
    assert by_label["G1"][0].extra["note"] == "split: G1 → G1A/G1B"
    assert all(p.category == ABSTAIN and p.reason == Reason.RETIRED_CODE for p in by_label["A2"])
    assert all(p.taxonomy_version == final.version_id for p in preds)
    # Alternatives never name a code the current taxonomy retired.
    assert not {a.category for p in preds for a in p.alternatives} - active
    # Unchanged categories are decided exactly as before.
    plain = model.predict_batch(texts)
    for y, p, q in zip(labels, preds, plain):
        if y in ("A1", "C3", "G2"):
            assert p.category == q.category


def test_a_split_that_keeps_the_original_sends_its_answers_to_review(model):
    base = load_taxonomy(TAXONOMY)
    kept = base.split("G1", {"G7": "Audio-only"}, author="t", keep=True).taxonomy
    fate = CodeMap([str(c) for c in model.classes_], kept, model_version=base.version_id).fates["G1"]
    assert fate.target is None and fate.reason == Reason.SPLIT and fate.note == "split: G1 → G1/G7"
    # A model trained on the new version is not affected by it.
    assert not CodeMap([str(c) for c in model.classes_], kept, model_version=kept.version_id).changed


# ----- the CLI loop: train -> models list -> classify -> decisions show -> merge -> classify ----------
def _write_store_file(path: Path, seed: int, start_month: int, months: int, n_per: int) -> None:
    ids, texts, labels = _texts(n_per, seed)
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "date", "payer"])
        for rid, t, y in zip(ids, texts, labels):
            m = start_month + rng.randrange(months)
            w.writerow([rid, t, y, f"2024-{m:02d}-{rng.randint(1, 28):02d}", f"payer-{rng.randint(1, 3)}"])


def test_the_weekly_loop_through_the_cli(capsys, tmp_path):
    db = str(tmp_path / "d.db")
    tax = tmp_path / "t.yaml"
    shutil.copy(TAXONOMY, tax)
    # 320 records of history (32 held out: enough for a 90% promise at 95% confidence), 80 new ones.
    _write_store_file(tmp_path / "h.csv", seed=5, start_month=1, months=6, n_per=40)
    _write_store_file(tmp_path / "n.csv", seed=6, start_month=7, months=3, n_per=10)
    assert cli(capsys, "import", str(tmp_path / "h.csv"), "--taxonomy", str(tax), "--db", db)[0] == 0
    assert cli(capsys, "import", str(tmp_path / "n.csv"), "--db", db)[0] == 0

    code, out, err = cli(capsys, "train", "tfidf", "--db", db, "--until", "2024-06-30", "--target-accuracy", "0.9",
                         "--out", str(tmp_path / "m"), "--activate")
    assert code == 0, err
    summary = json.loads(out)
    # tfidf is cheap to refit: calibrated on out-of-fold predictions of all 320 records, fitted on all of them.
    assert summary["records"] == summary["held_out"] == 320 and summary["registered"] == "active"
    assert summary["calibration_method"] == "5-fold cross-fitting"
    assert 0 < summary["coverage"] <= 1 and summary["answered_accuracy"] >= 0.9
    assert "held-out accuracy is" in err  # the coverage it achieved, or exactly why it could not
    code, out, _ = cli(capsys, "models", "list", "--db", db, "--json")
    (row,) = json.loads(out)
    assert row["id"] == summary["model_id"] and row["status"] == "active" and row["taxonomy_version"]

    code, _, err = cli(capsys, "classify", "--db", db, "--model", "active", "--since", "2024-07-01", "--output",
                       str(tmp_path / "p.csv"))
    assert code == 0, err
    with Store.open(db) as store:
        logged = store.predictions(model_id=summary["model_id"])
        assert len(logged) == 80 and all(r["taxonomy_version"] == row["taxonomy_version"] for r in logged)
        none_ids = {r["record_id"] for r in logged if r["category"] == ABSTAIN}
        assert {i["record_id"] for i in store.review_queue()} == none_ids  # NONE goes to review
    rid = logged[0]["record_id"]
    code, out, _ = cli(capsys, "decisions", "show", rid, "--db", db, "--json")
    trail = json.loads(out)["decisions"][0]
    assert {"model_id", "taxonomy_version", "category", "reason", "confidence", "alternatives", "evidence"} <= set(trail)
    assert "text" not in json.dumps(trail["evidence"])

    code, out, err = cli(capsys, "evaluate", "--db", db, "--model", "active", "--since", "2024-07-01",
                         "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    ev = json.loads((tmp_path / "e.json").read_text())
    n_none = len(none_ids)
    assert ev["records"] == 80 and ev["coverage"] == pytest.approx(1 - n_none / 80)
    assert ev["accuracy"] <= ev["answered_accuracy"] and "coverage (answered)" in out

    # A merge in the store: the old model no longer emits the retired code, and says so once.
    assert cli(capsys, "taxonomy", "merge", str(tax), "C1", "C2", "--into", "C1", "--db", db)[0] == 0
    code, _, err = cli(capsys, "classify", "--db", db, "--model", "active", "--since", "2024-07-01", "--output",
                       str(tmp_path / "p2.csv"))
    assert code == 0, err
    assert err.count("warning:") == 1 and "C2 → C1" in err
    cats = {r["category"] for r in csv.DictReader((tmp_path / "p2.csv").open())}
    assert "C2" not in cats and "C1" in cats


def test_classify_refuses_to_resume_another_models_output_and_cuts_a_partial_line(capsys, tmp_path):
    ids, texts, labels = _texts(5, seed=7)
    data = tmp_path / "d.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows(zip(ids, texts, labels))
    for name, c in (("m1", 0.5), ("m2", 0.1)):
        assert cli(capsys, "train", "tfidf", "--data", str(data), "--out", str(tmp_path / name), "--param", f"C={c}")[0] == 0
    out = tmp_path / "p.csv"
    assert cli(capsys, "classify", "--model", str(tmp_path / "m1"), "--input", str(data), "--output", str(out))[0] == 0
    full = out.read_text()
    code, _, err = cli(capsys, "classify", "--model", str(tmp_path / "m2"), "--input", str(data), "--output", str(out))
    assert code == 1 and "holds predictions of model" in err and out.read_text() == full
    # Power cut in the middle of a line: the rerun drops the half line and redoes that record.
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:10]) + lines[10][:7])
    code, _, err = cli(capsys, "classify", "--model", str(tmp_path / "m1"), "--input", str(data), "--output", str(out))
    assert code == 0 and "partial last line" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(ids) and len({r["id"] for r in rows}) == len(ids)
    assert sorted(out.read_text().splitlines()) == sorted(full.splitlines())


def test_train_from_a_file_refuses_labels_the_taxonomy_retired(capsys, tmp_path):
    ids, texts, labels = _texts(4, seed=8)
    data = tmp_path / "d.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows(zip(ids, texts, labels))
    tax = tmp_path / "t.yaml"
    load_taxonomy(TAXONOMY).merge(["C1", "C2"], "C1", author="t").taxonomy.save(tax)
    code, _, err = cli(capsys, "train", "tfidf", "--data", str(data), "--taxonomy", str(tax), "--out", str(tmp_path / "m"))
    assert code == 1 and "C2 (4)" in err and "C2 → C1" in err and "--db" in err


# ----- the LLM answering nonsense: NONE with reason invalid_output, in the file and the log -----------
def test_llm_invalid_codes_are_none_with_reason_invalid_output(capsys, tmp_path):
    server = FaultServer()
    try:
        server.script(("content", "not-a-code"),)
        ids, texts, labels = _texts(2, seed=9)
        engine = create_engine("llm", backend="openai", base_url=server.base_url, model="fault-model",
                               structured="none", cache=False, max_retries=1, timeout_s=5.0, n_examples=1,
                               shortlist=3, max_prompt_tokens=600)
        engine.fit(texts, labels)
        engine.save(tmp_path / "llm")
        data = tmp_path / "new.csv"
        data.write_text("id,text\nx1,no prior authorization on file\nx2,timely filing limit passed\n")
        db = str(tmp_path / "s.db")
        out = tmp_path / "p.csv"
        code, _, err = cli(capsys, "classify", "--model", str(tmp_path / "llm"), "--input", str(data), "--output", str(out),
                           "--db", db, "--create")
        assert code == 0, err
        rows = list(csv.DictReader(out.open()))
        assert [(r["category"], r["reason"]) for r in rows] == [(ABSTAIN, "invalid_output")] * 2
        with Store.open(db) as store:
            assert {r["reason"] for r in store.predictions()} == {"invalid_output"}
            assert len(store.review_queue(reason="invalid_output")) == 2
    finally:
        server.stop()


# ----- model identity: tampering is refused ----------------------------------------------------------
def test_a_tampered_model_directory_is_refused(model, tmp_path):
    d = model.save(tmp_path / "m")
    assert load_engine(d).model_id == model.model_id
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["classes"][0], manifest["classes"][1] = manifest["classes"][1], manifest["classes"][0]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="edited after the model was saved"):
        load_engine(d)
    d2 = model.save(tmp_path / "m2")
    weights = d2 / "tfidf_weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(Exception, match="changed after the model was saved"):
        load_engine(d2)
    (d2 / "manifest.json").write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        load_engine(d2)


# ----- engines are found from their classes and entry points ------------------------------------------
def test_engines_list_names_every_engine_with_its_family(capsys):
    code, out, _ = cli(capsys, "engines", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"tfidf", "knn", "head", "llm"} <= set(rows)
    assert rows["knn"]["family"] == "retrieval" and rows["llm"]["family"] == "prompted" and rows["llm"]["cost"] == "tokens"
    # The example plugin (tests/plugins, found through its entry point) is listed like a built-in one.
    assert rows["centroid"]["module"] == "taxonomist_example_engine" and rows["centroid"]["family"] == "retrieval"


def test_progress_is_a_line_every_few_seconds_when_stderr_is_not_a_terminal(capsys):
    import time

    from taxonomist.cli._console import reporter

    with reporter("classifying", 100, every=0.05) as update:
        for i in range(0, 101, 20):
            update(i, 100)
            time.sleep(0.03)
    err = capsys.readouterr().err
    assert "classifying: " in err and "/100 (" in err and "finished in" in err


def test_evaluate_scores_decisions_as_made(model):
    from taxonomist.service import score_predictions

    _, texts, labels = _texts(4, seed=10)
    preds = model.predict_batch(texts)
    ev = score_predictions(labels, preds)
    assert ev.coverage == 1.0 and ev.answered_accuracy == pytest.approx(ev.accuracy)
    assert np.isclose(ev.accuracy, np.mean([p.category == y for p, y in zip(preds, labels)]))


def test_ambiguous_crosswalk_codes_land_in_the_review_queue(capsys, tmp_path):
    crosswalk = tmp_path / "cw.yaml"
    crosswalk.write_text("source: northside\nmapping:\n  EL01: A1\n  PA-NONE: C1\n  LATE: I1\n"
                         "ambiguous:\n  EL01: [A1, A2]\n")
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("id,text,label\nn1,coverage ended,EL01\nn2,no precert,PA-NONE\nn3,member unknown,EL01\n")
    db = str(tmp_path / "s.db")
    code, _, err = cli(capsys, "import", str(theirs), "--crosswalk", str(crosswalk), "--taxonomy", str(TAXONOMY), "--db", db)
    assert code == 0, err
    with Store.open(db) as store:
        items = store.review_queue(reason="ambiguous_crosswalk")
        assert [(i["record_id"], i["suggested"], i["details"]["candidates"]) for i in items] == [
            ("n1", "A1", ["A1", "A2"]), ("n3", "A1", ["A1", "A2"])]
        assert store.current_labels() == {"n1": "A1", "n2": "C1", "n3": "A1"}
    code, out, _ = cli(capsys, "records", "review", "--db", db, "--json")
    assert {json.loads(line)["reason"] for line in out.splitlines()} == {"ambiguous_crosswalk"}


def test_an_interrupt_is_not_masked_by_a_store_still_locked(model, tmp_path, monkeypatch):
    """Ctrl-C inside a batch's commit can leave the write lock held while the interrupt unwinds: marking the run
    interrupted then meets a locked store. The user must see the interrupt (exit 130, how to resume), not a lock error."""
    import sqlite3

    from taxonomist import service
    from taxonomist import store as store_module

    monkeypatch.setattr(store_module, "_BUSY_TIMEOUT_S", 1)  # connections opened from here wait 1 s, not 30
    db = tmp_path / "d.db"
    with Store.open(db) as store:
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            with pytest.raises(KeyboardInterrupt):
                with service.ClassifyRun(model, store=store):
                    holder.execute("BEGIN IMMEDIATE")  # the write lock stays held, as by the interrupted commit
                    raise KeyboardInterrupt
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert [r["status"] for r in store.runs("classify")] == ["running"]  # left as it was: the rerun resumes
