"""The one contract suite: every registered engine must pass it (sklearn's `parametrize_with_checks` idea).

A new engine is tested by registering it with `@register_engine` and adding a
row to `FAST_PARAMS` (parameters that keep it quick on 2 CPU cores). Engines
without a row run with their defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from taxonomist.engines import ENGINES, create_engine, load_engine
from taxonomist.engines.base import _ensure_registered
from taxonomist.errors import EngineError, MissingExtraError, NotFittedError
from taxonomist.prediction import Alternative, Prediction
from taxonomist.taxonomy import ABSTAIN

from ._data import read_csv

DATA = Path(__file__).parent / "data"

_ensure_registered()

#: engine name -> keyword parameters that make it fast enough for `make test`: each engine
#: class declares them (`test_params`), so a new engine needs no row here.
FAST_PARAMS: dict[str, dict] = {name: dict(cls.test_params) for name, cls in ENGINES.items()}

#: Minimum accuracy on the vendored 20-intent BANKING77 subset (300 train / 100 test),
#: low enough for small models, high enough that a broken engine fails.
MIN_ACCURACY: dict[str, float] = {"tfidf": 0.6, "knn": 0.7, "head": 0.7, "finetune": 0.7, "ensemble": 0.6}




TRAIN = read_csv("banking77_small_train.csv")
TEST = read_csv("banking77_small_test.csv")


def make(name: str, **overrides):
    try:
        return create_engine(name, **{**FAST_PARAMS.get(name, {}), **overrides})
    except MissingExtraError as exc:  # pragma: no cover - CI installs every extra
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=sorted(ENGINES))
def fitted(request):
    engine = make(request.param)
    return engine.fit(*TRAIN)


def test_fit_returns_self_and_learns_classes(fitted):
    assert list(fitted.classes_) == sorted(set(TRAIN[1]))
    assert fitted.n_train_ == len(TRAIN[0])


def test_predict_proba_shape_rows_and_column_order(fitted):
    proba = fitted.predict_proba(TEST[0])
    assert proba.shape == (len(TEST[0]), len(fitted.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba >= 0).all()
    # Column order = classes_: the argmax column names the predicted class.
    pred = fitted.predict(TEST[0])
    threshold = getattr(fitted, "threshold", None)
    if not threshold:
        assert list(pred) == list(fitted.classes_[proba.argmax(axis=1)])
    acc = np.mean(pred == np.asarray(TEST[1]))
    assert acc >= MIN_ACCURACY.get(fitted.name, 0.5), f"{fitted.name}: accuracy {acc:.2f} on the small subset"


def test_predict_is_a_class_or_abstain(fitted):
    allowed = set(fitted.classes_) | {ABSTAIN}
    assert set(fitted.predict(TEST[0])) <= allowed


def test_threshold_abstains(fitted):
    if "threshold" not in fitted.get_params():
        pytest.skip("engine has no threshold parameter")
    old = fitted.threshold
    try:
        fitted.set_params(threshold=1.01)  # above any probability: every record abstains
        assert set(fitted.predict(TEST[0][:5])) == {ABSTAIN}
        assert fitted.predict_one(TEST[0][0]).abstained
    finally:
        fitted.set_params(threshold=old)


def test_predict_one_returns_prediction(fitted):
    p = fitted.predict_one(TEST[0][0], top_k=3)
    assert isinstance(p, Prediction)
    assert p.category in set(fitted.classes_) | {ABSTAIN}
    assert 0.0 <= p.confidence <= 1.0
    assert len(p.alternatives) == 3 and all(isinstance(a, Alternative) for a in p.alternatives)
    assert [a.score for a in p.alternatives] == sorted((a.score for a in p.alternatives), reverse=True)
    assert p.model_id and p.model_id.startswith(fitted.name)
    assert p.latency_ms > 0


def test_save_load_round_trip_gives_identical_probabilities(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    assert not list((tmp_path / "model").glob("*.pkl")) and not list((tmp_path / "model").glob("*.pickle"))
    loaded = load_engine(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert list(loaded.classes_) == list(fitted.classes_)
    np.testing.assert_allclose(loaded.predict_proba(TEST[0]), fitted.predict_proba(TEST[0]), rtol=0, atol=1e-6)
    assert loaded.model_id == fitted.model_id


def test_manifest_fields(fitted, tmp_path):
    fitted.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("engine", "base_model", "taxonomy_version", "training_data_hash", "library_versions", "train_seconds", "params", "classes"):
        assert key in manifest, key
    assert manifest["engine"] == fitted.name
    assert manifest["training_data_hash"].startswith("sha256:")
    assert fitted.train_seconds_ > 0 and manifest["train_seconds"] == round(fitted.train_seconds_, 3)  # ms: a cached fit may be < 0.5 ms
    assert "numpy" in manifest["library_versions"] and "scikit-learn" in manifest["library_versions"]
    assert manifest["n_train"] == len(TRAIN[0])


def test_clone_gives_unfitted_copy_with_same_params(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(TEST[0][:2])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_not_fitted_error_before_fit(name):
    engine = make(name)
    with pytest.raises(NotFittedError, match="not fitted"):
        engine.predict_proba(["hello"])
    with pytest.raises(NotFittedError):
        engine.predict_one("hello")


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_mismatched_lengths_is_a_clear_error(name):
    with pytest.raises(EngineError, match="3 texts but 2 labels"):
        make(name).fit(["a", "b", "c"], ["x", "y"])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_single_string_is_rejected(name):
    with pytest.raises(EngineError, match="single string"):
        make(name).fit("just one text", ["x"])


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_works_in_pipeline_and_cross_val_score(name):
    texts, labels = np.asarray(TRAIN[0], dtype=object), np.asarray(TRAIN[1], dtype=object)
    pipe = Pipeline([("engine", make(name))])
    scores = cross_val_score(pipe, texts, labels, cv=3)
    assert len(scores) == 3
    assert scores.mean() >= MIN_ACCURACY.get(name, 0.5) - 0.1


def test_calibration_applies_and_survives_save_load(fitted, tmp_path):
    from taxonomist.engines.calibration import calibrate

    raw = fitted.predict_proba(TEST[0])
    cal = calibrate(fitted, TEST[0][::2], TEST[1][::2], threshold=0.5)
    try:
        assert cal.temperature > 0 and cal.ece_after is not None
        proba = fitted.predict_proba(TEST[0])
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(proba.argmax(axis=1), raw.argmax(axis=1))
        if getattr(fitted, "threshold", None) is None:
            assert list(fitted.predict(TEST[0])) == list(np.where(proba.max(axis=1) >= 0.5, fitted.classes_[proba.argmax(axis=1)], ABSTAIN))
        fitted.save(tmp_path / "m")
        loaded = load_engine(tmp_path / "m")
        assert loaded.calibrator_ == cal
        np.testing.assert_allclose(loaded.predict_proba(TEST[0]), proba, rtol=0, atol=1e-6)
    finally:
        fitted.calibrator_ = None
