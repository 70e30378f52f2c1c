"""The `ensemble` engine: learnt weights on the simplex, calibrated members, saved member by member."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taxonomist.engines import create_engine, load_engine
from taxonomist.errors import EngineError

from ._data import read_csv

DATA = Path(__file__).parent / "data"


TRAIN = read_csv("banking77_small_train.csv")  # 20 intents x 15
TEST = read_csv("banking77_small_test.csv")  # 20 intents x 5
Y_TEST = np.asarray(TEST[1], dtype=object)

FT_FAST = {"epochs": 1, "train_layers": 1, "max_length": 32, "n_threads": 1, "verbose": False}
# Two cheap, different members for the tests that are about the combination itself.
CHEAP = ["tfidf", ["tfidf", {"C": 0.02, "scale": 3.0}]]


@pytest.fixture(scope="module")
def tfidf_finetune():
    """tfidf + finetune, the finetune member kept from its first fit (refit only tfidf)."""
    pytest.importorskip("torch")
    return create_engine(
        "ensemble", members=["tfidf", ["finetune", FT_FAST]], refit=["tfidf"], seed=0
    ).fit(*TRAIN)


@pytest.fixture(scope="module")
def cheap():
    return create_engine("ensemble", members=CHEAP, combine="loglinear").fit(*TRAIN)


@pytest.mark.slow
def test_weights_sum_to_one_and_ensemble_beats_its_worst_member(tfidf_finetune):
    ens = tfidf_finetune
    assert ens.weights_.shape == (2,)
    assert (ens.weights_ >= 0).all() and ens.weights_.sum() == pytest.approx(1.0)
    assert (ens.temperatures_ > 0).all()
    member_acc = {k: float(np.mean(ens.classes_[p.argmax(1)] == Y_TEST)) for k, p in ens.member_probas(TEST[0]).items()}
    acc = float(np.mean(ens.predict(TEST[0]) == Y_TEST))
    assert acc >= min(member_acc.values()), (acc, member_acc)
    assert acc >= 0.7


@pytest.mark.slow
def test_save_writes_each_member_in_its_own_folder_and_loads_identically(tfidf_finetune, tmp_path):
    ens = tfidf_finetune
    ens.save(tmp_path / "ens")
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    listed = manifest["extra"]["members"]
    assert [m["engine"] for m in listed] == ["tfidf", "finetune"]
    assert sum(m["weight"] for m in listed) == pytest.approx(1.0)
    for m in listed:
        sub = json.loads((tmp_path / "ens" / m["dir"] / "manifest.json").read_text())
        assert sub["engine"] == m["engine"]
    loaded = load_engine(tmp_path / "ens")
    np.testing.assert_allclose(loaded.predict_proba(TEST[0]), ens.predict_proba(TEST[0]), rtol=0, atol=1e-6)
    assert loaded.model_id == ens.model_id


@pytest.mark.slow
def test_predict_one_shows_each_members_vote(tfidf_finetune):
    p = tfidf_finetune.predict_one(TEST[0][0])
    votes = [e for e in p.evidence if e.kind == "vote"]
    assert [v.ref.split(" ")[0] for v in votes] == ["tfidf", "finetune"]
    assert all(v.category in set(tfidf_finetune.classes_) for v in votes)


def test_fixed_weights_are_normalised_and_used():
    ens = create_engine("ensemble", members=CHEAP, weights=[3, 1]).fit(*TRAIN)
    np.testing.assert_allclose(ens.weights_, [0.75, 0.25])
    only_first = create_engine("ensemble", members=CHEAP, weights=[1, 0]).fit(*TRAIN)
    member = only_first.member_probas(TEST[0])["0:tfidf"]
    np.testing.assert_allclose(only_first.predict_proba(TEST[0]), member, atol=1e-9)


@pytest.mark.parametrize("combine", ["linear", "stacking"])
def test_other_combinations_fit_save_and_load(combine, tmp_path):
    ens = create_engine("ensemble", members=CHEAP, combine=combine).fit(*TRAIN)
    proba = ens.predict_proba(TEST[0])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(ens.predict(TEST[0]) == Y_TEST) >= 0.6
    ens.save(tmp_path / "m")
    assert not list((tmp_path / "m").rglob("*.pkl"))
    np.testing.assert_allclose(load_engine(tmp_path / "m").predict_proba(TEST[0]), proba, rtol=0, atol=1e-9)


def test_learnt_weights_are_on_the_simplex_and_not_worse_than_worst(cheap):
    assert cheap.weights_.sum() == pytest.approx(1.0) and (cheap.weights_ >= 0).all()
    member_acc = [float(np.mean(cheap.classes_[p.argmax(1)] == Y_TEST)) for p in cheap.member_probas(TEST[0]).values()]
    assert float(np.mean(cheap.predict(TEST[0]) == Y_TEST)) >= min(member_acc)
    assert cheap.holdout_accuracy_ >= 0.5


def test_cross_fitting_learns_on_every_example_and_refits_members_on_all(tmp_path):
    engine = create_engine("ensemble", members=CHEAP, folds=3, seed=1).fit(*TRAIN)
    # Out-of-fold probabilities of all 300 examples: the held-out accuracy is over all of them.
    assert len(engine.member_holdout_accuracy_) == 2
    assert all(m.n_train_ == len(TRAIN[0]) for m in engine.members_)
    assert engine.weights_.sum() == pytest.approx(1.0) and 0.5 <= engine.holdout_accuracy_ <= 1.0
    member_acc = [float(np.mean(engine.classes_[p.argmax(1)] == Y_TEST)) for p in engine.member_probas(TEST[0]).values()]
    assert float(np.mean(engine.predict(TEST[0]) == Y_TEST)) >= min(member_acc)
    # The same folds and weights from a fresh fit with the same seed.
    again = create_engine("ensemble", members=CHEAP, folds=3, seed=1).fit(*TRAIN)
    np.testing.assert_allclose(again.weights_, engine.weights_)
    assert engine.member_seconds_[0] > 0
    engine.save(tmp_path / "m")
    np.testing.assert_allclose(load_engine(tmp_path / "m").predict_proba(TEST[0]), engine.predict_proba(TEST[0]), atol=1e-9)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"members": []}, "members=.*expected a non-empty list"),
        ({"members": "tfidf"}, "members=.*expected"),
        ({"members": [42]}, "member #0"),
        ({"members": ["tfidf", "ensemble"]}, "itself an ensemble"),
        ({"members": ["tfidf", "nope"]}, "unknown engine 'nope'"),
        ({"combine": "vote"}, "combine='vote'.*expected one of"),
        ({"weights": [1.0]}, "weights=.*expected 2"),
        ({"weights": [-1, 2]}, "weights=.*non-negative"),
        ({"refit": ["head"]}, "refit=.*member names"),
        ({"holdout": 0.0}, "holdout=.*fraction"),
        ({"folds": 1}, "folds=1 is invalid"),
        ({"folds": 2.5}, "folds=2.5 is invalid"),
        ({"folds": 400}, "folds=400 leaves a fold empty"),
    ],
)
def test_invalid_parameters_are_clear_errors(params, message):
    with pytest.raises(EngineError, match=message):
        create_engine("ensemble", **{"members": CHEAP, **params}).fit(*TRAIN)
