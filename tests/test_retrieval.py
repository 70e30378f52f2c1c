"""Hybrid retrieval (taxonomist.retrieval through the knn engine): exact codes, recall@k, the mix, save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import sparse

from taxonomist.engines import create_engine, load_engine
from taxonomist.engines.base import MANIFEST, Manifest, _digests
from taxonomist.errors import EngineError
from taxonomist.retrieval import LexicalIndex, choose_mix, information_gain, recall_at_k

# Denial lines where payer, CPT and place of service appear in every category and only the
# adjustment code and note tell the category; one AUTH record carries the rare code CO-197.
PAYERS = ["Lakeshore HMO", "Evergreen Health", "Pioneer Employer Plan"]
LINES = ["CPT 90834 POS 11", "CPT 90837-95 POS 02", "CPT 90791 POS 11"]
NOTES = {"AUTH": ("CO-15", "Authorization number missing."), "ELIG": ("CO-27", "Coverage ended."),
         "CODE": ("CO-4", "Modifier inconsistent.")}
ROWS = [("CO-197 N/A | CPT 90837-95 POS 02 | Payer: Lakeshore HMO | Precertification absent.", "AUTH")]
ROWS += [(f"{carc} N/A | {line} | Payer: {payer} | {note}", label)
         for label, (carc, note) in NOTES.items() for payer in PAYERS for line in LINES]
TEXTS, LABELS = [t for t, _ in ROWS], [y for _, y in ROWS]
IDS = [f"rec-{i}" for i in range(len(ROWS))]
QUERY = "CO-197 N/A | CPT 90834 POS 11 | Payer: Pioneer Employer Plan | Claim denied."


@pytest.mark.slow
@pytest.mark.parametrize("mix", [None, 0.5])
def test_hybrid_finds_by_exact_code_a_record_the_dense_retriever_misses(mix):
    dense = create_engine("knn", retrieval="dense", k=3).fit(TEXTS, LABELS, ids=IDS)
    hybrid = create_engine("knn", retrieval="hybrid", mix=mix, k=3).fit(TEXTS, LABELS, ids=IDS)
    assert "rec-0" not in [e.ref for e in dense.retrieve(QUERY, k=3)]  # MiniLM ranks payer/CPT look-alikes first
    found = hybrid.retrieve(QUERY, k=3)
    assert found[0].ref == "rec-0" and found[0].category == "AUTH"  # evidence refs are record ids
    assert [e.ref for e in hybrid.retrieve_batch([QUERY], k=3)[0]] == [e.ref for e in found]
    assert hybrid.predict([QUERY])[0] == "AUTH"


def test_information_gain_weighs_category_codes_over_shared_fields():
    index = LexicalIndex.from_texts(TEXTS)
    classes = sorted(set(LABELS))
    point_class = np.array([classes.index(y) for y in LABELS])
    gain = information_gain(index.word, point_class, len(classes))
    word = LexicalIndex.from_texts(["pioneer", "coverage"]).word
    shared, telling = (int(word[i].indices[0]) for i in range(2))
    assert gain[shared] < 0.05 and gain[telling] > 0.5  # a payer in every category vs a note of one category


def test_recall_at_k_on_a_hand_made_case():
    truth = ["A", "B", "D", "D"]
    ranked = [["A", "B", "C"],  # hit at 1
              ["A", "C", "B"],  # hit at 3
              ["C", "C", "C", "C", "C", "D"],  # hit at 6 only
              []]  # nothing retrieved
    assert recall_at_k(truth, ranked, ks=(1, 2, 3, 5, 6, 20)) == {1: 0.25, 2: 0.25, 3: 0.5, 5: 0.5, 6: 0.75, 20: 0.75}
    with pytest.raises(ValueError, match="2 labels but 1 ranked"):
        recall_at_k(["A", "B"], [["A"]])


def test_choose_mix_picks_the_side_that_separates_the_classes(monkeypatch):
    # Two classes: the dense side is noise, the lexical side tells them apart; leave-one-out must choose lexical.
    rng = np.random.default_rng(0)
    point_class = np.repeat([0, 1], 20)
    lexical_pts = np.eye(2)[point_class] + 0.05 * rng.standard_normal((40, 2))
    dense_pts = rng.standard_normal((40, 8))
    queries = np.arange(40)
    mix, temperature, accuracy = choose_mix(lambda rows: (dense_pts[rows] @ dense_pts.T / 8, lexical_pts[rows] @ lexical_pts.T),
                                            queries, point_class, 2, k=5)
    assert mix <= 0.2 and accuracy == 1.0 and temperature > 0
    # Computed a few query rows at a time (bounded memory), the choice is the same.
    monkeypatch.setattr("taxonomist.retrieval.CHUNK_CELLS", 3 * 40)
    sides = lambda rows: (dense_pts[rows] @ dense_pts.T / 8, lexical_pts[rows] @ lexical_pts.T)
    assert choose_mix(sides, queries, point_class, 2, k=5) == (mix, temperature, accuracy)


@pytest.mark.slow
def test_save_load_round_trip_and_old_dense_models(tmp_path):
    engine = create_engine("knn", k=3).fit(TEXTS, LABELS, ids=IDS)
    saved = engine.save(tmp_path / "hybrid")
    manifest = Manifest.read(saved)
    assert {"knn_lexical.npz", "knn_retrieval.json"} <= set(manifest.files)  # both covered by the model id
    loaded = load_engine(saved)
    assert loaded.model_id == engine.model_id
    assert (loaded.retrieval, loaded.mix_, loaded.temperature_) == (engine.retrieval, engine.mix_, engine.temperature_)
    for a, b in zip(loaded.lexical_.weights, engine.lexical_.weights):
        np.testing.assert_array_equal(a, b)
    assert (sparse.csr_matrix(loaded.lexical_.char) != engine.lexical_.char).nnz == 0
    assert [e.ref for e in loaded.retrieve(QUERY, k=5)] == [e.ref for e in engine.retrieve(QUERY, k=5)]
    assert list(loaded.predict(TEXTS)) == list(engine.predict(TEXTS))

    # A model saved before hybrid retrieval (no retrieval/mix parameters, no lexical files) loads as dense.
    old = tmp_path / "old"
    create_engine("knn", k=3, retrieval="dense", temperature=0.05).fit(TEXTS, LABELS, ids=IDS).save(old)
    (old / "knn_retrieval.json").unlink()
    data = json.loads((old / MANIFEST).read_text())
    for key in ("retrieval", "mix"):
        data["params"].pop(key)
    data.pop("id")
    data["files"] = _digests(old)
    Manifest(**data).write(old)
    was_old = load_engine(old)
    assert (was_old.retrieval, was_old.mix_, was_old.temperature_, was_old.lexical_) == ("dense", 1.0, 0.05, None)
    assert was_old.retrieve(QUERY, k=3)[0].ref != "rec-0"

    # A hybrid model whose lexical file is gone fails with one line naming it.
    (saved / "knn_lexical.npz").unlink()
    with pytest.raises(EngineError, match="missing knn_lexical.npz") as err:
        load_engine(saved)
    assert "\n" not in str(err.value)


def test_bad_retrieval_parameters_are_clear_errors():
    with pytest.raises(EngineError, match="retrieval='bm42'"):
        create_engine("knn", retrieval="bm42").fit(TEXTS, LABELS)
    with pytest.raises(EngineError, match="mix=1.5"):
        create_engine("knn", mix=1.5).fit(TEXTS, LABELS)
