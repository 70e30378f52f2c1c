"""tfidf specifics beyond the contract suite: saved without pickle, binary tasks, parameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taxonomist.engines import TfidfEngine, load_engine
from taxonomist.engines.tfidf import split_fields
from taxonomist.errors import EngineError

from ._data import read_csv

DATA = Path(__file__).parent / "data"




TRAIN, TEST = read_csv("banking77_small_train.csv"), read_csv("banking77_small_test.csv")


def test_saved_as_json_and_npz_only(tmp_path):
    engine = TfidfEngine().fit(*TRAIN)
    engine.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "manifest.json", "tfidf_evidence.json", "tfidf_vocabulary.json", "tfidf_weights.npz"]
    vocab = json.loads((tmp_path / "m" / "tfidf_vocabulary.json").read_text())
    assert len(vocab["word"]) + len(vocab["char"]) == engine.coef_.shape[1]
    with np.load(tmp_path / "m" / "tfidf_weights.npz", allow_pickle=False) as w:
        assert w["coef"].shape == (20, engine.coef_.shape[1])
    assert (engine.predict(TEST[0]) == np.array(TEST[1])).mean() >= 0.7


def test_binary_task_has_two_columns(tmp_path):
    texts = [t for t, y in zip(*TRAIN) if y in ("exchange_rate", "get_physical_card")]
    labels = [y for y in TRAIN[1] if y in ("exchange_rate", "get_physical_card")]
    engine = TfidfEngine().fit(texts, labels)
    proba = engine.predict_proba(["what is the exchange rate for euros", "I want a physical card"])
    assert proba.shape == (2, 2)
    assert list(engine.classes_[proba.argmax(axis=1)]) == ["exchange_rate", "get_physical_card"]
    engine.save(tmp_path / "m")
    np.testing.assert_allclose(load_engine(tmp_path / "m").predict_proba(texts), engine.predict_proba(texts), atol=1e-9)


def test_one_category_is_a_clear_error():
    with pytest.raises(EngineError, match="at least 2 categories"):
        TfidfEngine().fit(["a", "b"], ["x", "x"])


def test_scale_sharpens_probabilities_without_changing_ranking():
    soft, sharp = TfidfEngine(scale=1.0).fit(*TRAIN), TfidfEngine(scale=30.0).fit(*TRAIN)
    p1, p2 = soft.predict_proba(TEST[0]), sharp.predict_proba(TEST[0])
    np.testing.assert_array_equal(p1.argmax(axis=1), p2.argmax(axis=1))
    assert p2.max(axis=1).mean() > p1.max(axis=1).mean()


# ----- PHI-safe vocabulary (issue 11) ----------------------------------------------------------
def test_min_records_keeps_words_of_one_record_out_of_the_saved_vocabulary(tmp_path):
    texts, labels = list(TRAIN[0]), list(TRAIN[1])
    marker = "Zqxjroe member W739105528"
    texts[3] = f"{texts[3]} {marker}"
    texts.append(texts[3])  # the same note imported twice is still one record's words
    labels.append(labels[3])
    for min_records, kept in ((1, True), (2, False)):
        engine = TfidfEngine(min_records=min_records).fit(texts, labels)
        engine.save(tmp_path / f"m{min_records}")
        saved = (tmp_path / f"m{min_records}" / "tfidf_vocabulary.json").read_text().lower()
        assert ("zqxjroe" in saved) is kept and ("w739105528" in saved) is kept
        assert (engine.predict(TEST[0]) == np.array(TEST[1])).mean() >= 0.7
        loaded = load_engine(tmp_path / f"m{min_records}")
        np.testing.assert_allclose(loaded.predict_proba(TEST[0]), engine.predict_proba(TEST[0]), atol=1e-6)
    vocab = json.loads((tmp_path / "m2" / "tfidf_vocabulary.json").read_text())
    assert not [g for g in vocab["char"] if "xjro" in g or "73910" in g]  # its rare character n-grams go too


def test_min_records_larger_than_the_data_is_a_clear_error():
    with pytest.raises(EngineError, match="min_records=5 but the training set has 3 distinct texts"):
        TfidfEngine(min_records=5).fit(["a b", "c d", "a b", "e f"], ["x", "y", "x", "y"])


def test_decisions_cite_the_nearest_typical_training_records_by_id(tmp_path):
    ids = [f"rec-{i}" for i in range(len(TRAIN[0]))]
    engine = TfidfEngine(evidence_per_class=5).fit(*TRAIN, ids=ids)
    preds = engine.predict_batch(TEST[0][:20])
    for p in preds:
        assert 1 <= len(p.evidence) <= 3
        assert all(e.ref in set(ids) and e.text == "" for e in p.evidence)
        top2 = {a.category for a in p.alternatives[:2]}
        assert {e.category for e in p.evidence} <= top2
    # Most decisions cite an example of the category they chose; the ids survive save/load.
    assert sum(p.evidence[0].category == p.category for p in preds) >= 15
    engine.save(tmp_path / "m")
    from taxonomist.engines import load_engine

    again = load_engine(tmp_path / "m").predict_batch(TEST[0][:20])
    assert [p.evidence for p in again] == [p.evidence for p in preds]


# ----- structured fields as features (issue 17) -------------------------------------------------
def _field_records(n: int = 240, seed: int = 0) -> tuple[list[str], list[str]]:
    """The category is the CARC field's; the free text says nothing about it (the same few remarks everywhere)."""
    from taxonomist.compare.dataset import compose_text

    rng = np.random.default_rng(seed)
    remarks = ["claim denied see remark", "service not payable as billed", "denied per plan provisions"]
    texts, labels = [], []
    for i in range(n):
        carc = ("16", "197", "50")[i % 3]
        row = {"carc": carc, "payer": ("Keystone Health Plan", "State Medicaid")[int(rng.integers(2))],
               "paid_amount": f"{rng.uniform(0, 300):.2f}", "text": remarks[int(rng.integers(3))]}
        texts.append(compose_text(row, ["carc", "payer", "paid_amount"]))
        labels.append({"16": "missing_info", "197": "prior_auth", "50": "not_necessary"}[carc])
    return texts, labels


def test_split_fields_reads_compose_text_and_leaves_plain_text_alone():
    from taxonomist.engines.tfidf import field_tokens

    fields, free = split_fields("carc=197 payer=Keystone Health Plan modifiers=95 HO paid_amount=0.00 | CO-197 | note")
    assert fields == {"carc": "197", "payer": "Keystone Health Plan", "modifiers": "95 HO", "paid_amount": "0.00"}
    assert free == "CO-197 | note"
    assert set(field_tokens(fields)) == {"carc=197", "payer=Keystone Health Plan", "payer:Keystone", "payer:Health",
                                         "payer:Plan", "modifiers=95 HO", "modifiers:95", "modifiers:HO",
                                         "paid_amount:zero", "paid_amount:2^0"}
    for plain in ("I was charged twice | why", "x = y | z", "my pin=1234 is blocked", "a= | b"):
        assert split_fields(plain) == (None, plain)


def test_fields_become_features_when_every_text_carries_them(tmp_path):
    texts, labels = _field_records()
    engine = TfidfEngine().fit(texts[:180], labels[:180])
    assert "carc=197" in engine.field_vocabulary_
    assert (engine.predict(texts[180:]) == np.array(labels[180:])).mean() == 1.0
    # The free text alone cannot tell the categories apart: the field part is what decides.
    free_only = TfidfEngine(fields=False).fit([t.split(" | ", 1)[1] for t in texts[:180]], labels[:180])
    assert (free_only.predict([t.split(" | ", 1)[1] for t in texts[180:]]) == np.array(labels[180:])).mean() < 0.6
    engine.save(tmp_path / "m")
    vocab = json.loads((tmp_path / "m" / "tfidf_vocabulary.json").read_text())
    assert len(vocab["word"]) + len(vocab["char"]) + len(vocab["fields"]) == engine.coef_.shape[1]
    assert not [t for t in vocab["fields"] if t.startswith("paid_amount=")]  # amounts only by sign and size
    loaded = load_engine(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(texts[180:]), engine.predict_proba(texts[180:]), atol=1e-6)
    ev = engine.predict_batch(texts[180:182])[0].evidence
    assert ev and all(0.0 <= e.score <= 1.0 for e in ev)


def test_a_field_value_of_one_record_is_not_kept():
    texts, labels = _field_records()
    texts[0] = texts[0].replace("payer=", "member=W739105528 payer=", 1)
    vocab = TfidfEngine().fit(texts, labels).field_vocabulary_
    assert not [t for t in vocab if "W739105528" in t]
    assert "member=W739105528" in TfidfEngine(min_records=1).fit(texts, labels).field_vocabulary_


def test_plain_text_is_unchanged_by_the_fields_option():
    auto = TfidfEngine().fit(*TRAIN)
    off = TfidfEngine(fields=False).fit(*TRAIN)
    assert auto.field_vocabulary_ is None
    np.testing.assert_array_equal(auto.decision_function(TEST[0]), off.decision_function(TEST[0]))
    with pytest.raises(EngineError, match="fields=True but text #0 does not start with"):
        TfidfEngine(fields=True).fit(*TRAIN)


# ----- n-gram counts computed once for many fits (issue 15) -----------------------------------
def test_a_fit_on_precomputed_counts_is_the_same_model_without_analysing_again(monkeypatch):
    from sklearn.feature_extraction.text import CountVectorizer

    texts, labels = TRAIN
    cold = TfidfEngine().fit(texts, labels)
    warmer = TfidfEngine()
    # Other texts first, so the shared vocabulary's column order is not the sorted order of this fit's.
    warmer.precompute(list(reversed(TEST[0])))
    for i in range(0, len(texts), 37):
        warmer.precompute(texts[i:i + 37])

    fit_transform = CountVectorizer.fit_transform

    def no_analysis(self, raw_documents, *args, **kwargs):
        assert len(raw_documents) == 1, "the fit analysed texts that were precomputed"  # 1: `_with_vocabulary`'s set-up
        return fit_transform(self, raw_documents, *args, **kwargs)

    monkeypatch.setattr(CountVectorizer, "fit_transform", no_analysis)
    warmer.fit(texts, labels)
    assert warmer.word_vectorizer_.vocabulary_ == cold.word_vectorizer_.vocabulary_
    assert warmer.char_vectorizer_.vocabulary_ == cold.char_vectorizer_.vocabulary_
    np.testing.assert_array_equal(warmer.coef_, cold.coef_)
    np.testing.assert_array_equal(warmer.predict_proba(TEST[0]), cold.predict_proba(TEST[0]))
    assert warmer.model_id == TfidfEngine().fit(texts, labels).model_id != ""
    # A text never precomputed: the fit analyses them all, as before.
    monkeypatch.undo()
    assert TfidfEngine().fit([*texts, "a text nobody precomputed"], [*labels, labels[0]]).coef_.shape[0] == 20


def test_precomputed_counts_of_fielded_texts_are_their_free_text_and_are_bounded(monkeypatch):
    from taxonomist.engines import tfidf

    texts, labels = _field_records()
    cold = TfidfEngine().fit(texts, labels)
    TfidfEngine().precompute(texts)
    shared = tfidf._shared_counts(tfidf._counters()[1])
    assert shared.counts([split_fields(t)[1] for t in texts]) is not None
    np.testing.assert_array_equal(TfidfEngine().fit(texts, labels).coef_, cold.coef_)
    monkeypatch.setattr(tfidf._SharedCounts, "limit", 4)  # below what is counted now, plus two
    kept, *others = dict.fromkeys(split_fields(t)[1] for t in texts)
    TfidfEngine().precompute(["one new text", "and another", kept])  # over the limit: starts afresh
    assert others and all(shared.counts([t]) is None for t in others)
    assert shared.counts(["one new text", kept]) is not None  # counted before, and counted again
    np.testing.assert_array_equal(TfidfEngine().fit(texts, labels).coef_, cold.coef_)
