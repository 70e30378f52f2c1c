"""head specifics: a refit reuses cached embeddings (embeds nothing), binary tasks, saved weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taxonomist.engines import create_engine, load_engine
from taxonomist.errors import EngineError

from ._data import read_csv

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"

TRAIN, TEST = read_csv("banking77_small_train.csv"), read_csv("banking77_small_test.csv")


def test_refit_embeds_nothing_and_is_accurate():
    first = create_engine("head").fit(*TRAIN)
    acc = (first.predict(TEST[0]) == np.array(TEST[1])).mean()
    assert acc >= 0.8, acc
    again = create_engine("head", C=5.0).fit(*TRAIN)
    assert again.embedder_.n_encoded == 0  # every training text came from the cache
    # MiniLM in the precision this CPU runs fastest ("...@bf16" where it has AMX), as its cache id says
    assert again.base_model_ == again.embedder_.model_id and again.base_model_.startswith("sentence-transformers/all-MiniLM-L6-v2")


def test_binary_and_save_load(tmp_path):
    keep = ("exchange_rate", "get_physical_card")
    texts = [t for t, y in zip(*TRAIN) if y in keep]
    labels = [y for y in TRAIN[1] if y in keep]
    engine = create_engine("head").fit(texts, labels)
    proba = engine.predict_proba(["what is the exchange rate for euros", "I want a physical card"])
    assert proba.shape == (2, 2) and list(engine.classes_[proba.argmax(axis=1)]) == list(keep)
    engine.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["head_weights.npz", "manifest.json"]
    np.testing.assert_allclose(load_engine(tmp_path / "m").predict_proba(texts), engine.predict_proba(texts), atol=1e-9)


def test_taxonomy_definitions_are_training_rows_and_a_defined_category_needs_no_example(tmp_path):
    from taxonomist.taxonomy import Taxonomy

    keep = ("exchange_rate", "get_physical_card", "card_arrival")
    texts = [t for t, y in zip(*TRAIN) if y in keep[:2]]
    labels = [y for y in TRAIN[1] if y in keep[:2]]
    tax = Taxonomy.from_labels(keep).add("lost_or_stolen_card", "lost or stolen card", group="ALL", author="test",
            definition="The customer's card was lost or stolen and must be blocked.").taxonomy
    tax.save(tmp_path / "tax.yaml")
    engine = create_engine("head", taxonomy=str(tmp_path / "tax.yaml")).fit(texts, labels)
    # card_arrival and lost_or_stolen_card have only their definition, no example.
    assert list(engine.classes_) == sorted([*keep, "lost_or_stolen_card"])
    assert engine.taxonomy_version_ == tax.version_id
    queries = ["my card was stolen yesterday, please block it", "what is the exchange rate for euros"]
    assert list(engine.predict(queries)) == ["lost_or_stolen_card", "exchange_rate"]
    without = create_engine("head", taxonomy=str(tmp_path / "tax.yaml"), use_definitions=False).fit(texts, labels)
    assert list(without.classes_) == list(keep[:2])  # nothing else to learn those categories from

    engine.save(tmp_path / "m")
    assert (tmp_path / "m" / "taxonomy.yaml").is_file()
    (tmp_path / "tax.yaml").unlink()  # the saved copy is enough to load and refit
    again = load_engine(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(queries), engine.predict_proba(queries), atol=1e-9)
    assert list(again.fit(texts, labels).classes_) == list(engine.classes_)


def test_a_warm_start_from_the_last_model_ends_where_a_cold_fit_does_in_fewer_iterations():
    texts, labels = TRAIN
    earlier = [i for i, y in enumerate(labels) if y != labels[0]][: len(labels) * 3 // 4]  # one category is new later
    last = create_engine("head").fit([texts[i] for i in earlier], [labels[i] for i in earlier])
    cold = create_engine("head").fit(texts, labels)
    warm = create_engine("head").fit(texts, labels, init=last)
    assert warm.n_iter_ < cold.n_iter_, (warm.n_iter_, cold.n_iter_)
    assert labels[0] in warm.classes_ and labels[0] not in last.classes_
    same = (warm.predict(TEST[0]) == cold.predict(TEST[0])).mean()
    assert same >= 0.95, same
    assert (warm.predict(TEST[0]) == np.array(TEST[1])).mean() >= 0.8
    assert warm.manifest().extra["started_from"] == last.model_id and "started_from" not in cold.manifest().extra
    with pytest.raises(EngineError, match="a 'head' fit can only start from a 'head' model"):
        create_engine("head").fit(texts, labels, init=create_engine("tfidf").fit(texts, labels))
