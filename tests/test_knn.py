"""knn: instant updates (no refit), taxonomy points, and the retriever API the LLM engine uses."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from taxonomist.embed import EmbeddingCache
from taxonomist.engines import create_engine, load_engine
from taxonomist.errors import EngineError
from taxonomist.prediction import Evidence
from taxonomist.taxonomy import Taxonomy

from ._data import read_csv

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"




TRAIN = read_csv("banking77_small_train.csv")
TEST = read_csv("banking77_small_test.csv")
NEW = "passcode_forgotten"  # held out of the initial fit


def _split(data, keep):
    texts, labels = data
    return [t for t, y in zip(texts, labels) if keep(y)], [y for y in labels if keep(y)]


@pytest.fixture(scope="module")
def base_taxonomy():
    labels = sorted(set(TRAIN[1]) - {NEW})
    return Taxonomy.from_labels(labels, name="banking-small")


@pytest.fixture(scope="module")
def fitted(base_taxonomy):
    texts, labels = _split(TRAIN, lambda y: y != NEW)
    return create_engine("knn", k=10, taxonomy=base_taxonomy).fit(texts, labels)


@pytest.fixture
def engine(fitted):
    # Each test mutates its own copy of the fitted index (the embedder model is shared).
    e = copy.copy(fitted)
    for attr in ("texts_", "labels_", "kinds_", "refs_"):
        setattr(e, attr, list(getattr(fitted, attr)))
    e.vectors_ = fitted.vectors_.copy()
    e.embedder_ = copy.copy(fitted.embedder_)
    return e


def test_new_category_with_five_examples_is_predicted_on_next_call_without_refit(engine, base_taxonomy, tmp_path):
    engine.embedder_.cache = EmbeddingCache(tmp_path / "fresh.sqlite")  # count embeddings from an empty cache
    assert NEW in set(TRAIN[1]) and NEW not in engine.classes_
    new_train, _ = _split(TRAIN, lambda y: y == NEW)
    new_test, _ = _split(TEST, lambda y: y == NEW)
    old_vectors = engine.vectors_.copy()
    n_old = len(old_vectors)
    assert set(engine.predict(new_test)).isdisjoint({NEW})
    encoded_before = engine.embedder_.n_encoded

    change = base_taxonomy.add(NEW, "Passcode forgotten", group="ALL", author="test", examples=new_train[:5],
                               definition="The customer forgot or lost the passcode of the app or card and needs to reset it.")
    engine.set_taxonomy(change.taxonomy)

    # Next call: the new category is a class and wins on its own test texts.
    assert NEW in engine.classes_
    predicted = engine.predict(new_test)
    assert np.mean(predicted == NEW) >= 0.6, list(predicted)
    assert engine.taxonomy_version_ == change.taxonomy.version_id
    # No refit: old points untouched, and only the 5 examples + 1 definition were embedded
    # (the 5 query texts were embedded before, by the first predict, and came from the cache).
    np.testing.assert_array_equal(engine.vectors_[:n_old - len(base_taxonomy.codes)], old_vectors[:n_old - len(base_taxonomy.codes)])
    assert engine.embedder_.n_encoded - encoded_before == 6


def test_retired_category_disappears_and_add_remove_examples(engine, base_taxonomy):
    gone = engine.classes_[0]
    change = base_taxonomy.retire(gone, author="test")
    engine.set_taxonomy(change.taxonomy)
    assert gone not in engine.classes_
    assert gone not in set(engine.predict(TEST[0]))

    # add_examples with a brand-new label: a class from the next call on.
    new_train, _ = _split(TRAIN, lambda y: y == NEW)
    engine.add_examples(new_train[:5], [NEW] * 5, refs=[f"r{i}" for i in range(5)])
    assert NEW in engine.classes_
    assert engine.predict([new_train[0]])[0] == NEW  # its own text is its nearest point
    assert engine.remove_examples(refs=[f"r{i}" for i in range(5)]) == 5
    assert NEW not in engine.classes_


def test_add_examples_rejects_mismatched_lengths(engine):
    with pytest.raises(EngineError, match="2 texts but 1 labels"):
        engine.add_examples(["a", "b"], ["x"])


def test_retrieve_evidence_class_balance_and_mmr(engine):
    query = TEST[0][0]
    ev = engine.retrieve(query, k=20)
    assert len(ev) == 20 and all(isinstance(e, Evidence) for e in ev)
    assert [e.score for e in ev] == sorted((e.score for e in ev), reverse=True)
    assert {e.kind for e in ev} <= {"example", "definition"}
    assert all(e.ref and e.text and e.category in engine.classes_ for e in ev)

    balanced = engine.retrieve(query, k=20, per_class=2)
    counts = {}
    for e in balanced:
        counts[e.category] = counts.get(e.category, 0) + 1
    assert max(counts.values()) <= 2 and len(counts) >= 10

    diverse = engine.retrieve(query, k=10, mmr_lambda=0.3)
    assert len(diverse) == 10 and diverse[0].ref == ev[0].ref  # the best match still comes first
    assert len({e.category for e in diverse}) >= len({e.category for e in ev[:10]})


def test_definitions_are_points(engine):
    defs = [e for e in engine.retrieve("card arrival", k=200) if e.kind == "definition"]
    assert defs and all(e.ref.startswith("taxonomy:") for e in defs)


def test_shortlist_and_predict_one_evidence(engine):
    text, label = TEST[0][0], TEST[1][0]
    short = engine.shortlist(text, 5)
    assert len(short) == 5 and short[0][1] >= short[-1][1]
    assert label in [c for c, _ in short]
    pred = engine.predict_one(text)
    assert pred.evidence and pred.evidence[0].score >= pred.evidence[-1].score
    assert pred.category == short[0][0]


def test_save_load_keeps_taxonomy_and_updates(engine, tmp_path):
    new_train, _ = _split(TRAIN, lambda y: y == NEW)
    engine.add_examples(new_train[:5], [NEW] * 5)
    engine.save(tmp_path / "m")
    loaded = load_engine(tmp_path / "m")
    assert NEW in loaded.classes_
    assert loaded.taxonomy_version_ == engine.taxonomy_version_
    assert (loaded.mix_, loaded.temperature_) == (engine.mix_, engine.temperature_)
    # One embedder for both: the bf16 embedder's vectors differ in the 4th digit with batch composition,
    # and each test's home has its own cache; this checks the saved index, not the embedder.
    loaded.embedder_ = engine.embedder_
    np.testing.assert_allclose(loaded.predict_proba(TEST[0][:10]), engine.predict_proba(TEST[0][:10]), atol=1e-6)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(EngineError, match="k must be >= 1"):
        create_engine("knn", k=0).fit(TRAIN[0][:10], TRAIN[1][:10])


def test_updated_is_a_new_model_equal_to_a_fit_on_all_examples_and_leaves_the_old_one(fitted, base_taxonomy):
    texts, labels = _split(TRAIN, lambda y: y != NEW)
    extra_texts, extra_labels = _split(TRAIN, lambda y: y == NEW)
    full = Taxonomy.from_labels(sorted(set(TRAIN[1])), name="banking-small")
    before = fitted.predict_proba(TEST[0][:50])
    n_points, old_id = len(fitted.texts_), fitted.model_id

    grown = fitted.updated(extra_texts, extra_labels, taxonomy=full)

    assert NEW in grown.classes_ and NEW not in fitted.classes_
    assert len(fitted.texts_) == n_points and fitted.model_id == old_id
    np.testing.assert_array_equal(fitted.predict_proba(TEST[0][:50]), before)  # the old model is untouched
    assert grown.model_id != old_id and grown.n_train_ == fitted.n_train_ + len(extra_texts)
    # The same points, mix and temperature as a fit on everything: the same answers.
    refit = create_engine("knn", k=10, taxonomy=full, mix=fitted.mix_, temperature=fitted.temperature_).fit(
        texts + extra_texts, labels + extra_labels)
    assert list(grown.classes_) == list(refit.classes_)
    np.testing.assert_allclose(grown.predict_proba(TEST[0]), refit.predict_proba(TEST[0]), atol=1e-5)


def test_an_engine_that_learns_by_refitting_refuses_updated():
    engine = create_engine("tfidf").fit(*TRAIN)
    assert not engine.learns_by_adding
    with pytest.raises(EngineError, match="learns by refitting"):
        engine.updated(TEST[0][:2], TEST[1][:2])
