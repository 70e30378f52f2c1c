"""Calibration and abstention: temperature scaling, threshold choice, out-of-scope detection (CLINC150 subset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taxonomist.engines import create_engine, load_engine
from taxonomist.engines.calibration import Calibrator, calibrate, choose_threshold, fit_temperature
from taxonomist.errors import EngineError
from taxonomist.metrics import ece, oos_metrics
from taxonomist.taxonomy import ABSTAIN

from ._data import read_csv

DATA = Path(__file__).parent / "data"




TRAIN, VAL, TEST = (read_csv(f"clinc150_small_{s}.csv") for s in ("train", "val", "test"))


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    true_t = 2.5
    # Draw labels from softmax(logits / true_t); the model reports softmax(logits) (overconfident).
    p_true = np.exp(logits / true_t)
    p_true /= p_true.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p_true])
    reported = np.exp(logits)
    reported /= reported.sum(axis=1, keepdims=True)
    assert fit_temperature(reported, y) == pytest.approx(true_t, rel=0.1)


def test_overall_policy_is_the_highest_threshold_that_keeps_accuracy():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    # 80% accuracy overall; keeping the top 7 gives 7/10 = 70% (abstentions count as wrong).
    assert choose_threshold(conf, correct, min_accuracy=0.7, policy="overall") == pytest.approx(0.5)
    assert choose_threshold(conf, correct, min_accuracy=0.8, policy="overall") == pytest.approx(0.4)
    assert choose_threshold(conf, correct, min_accuracy=0.9, policy="overall") is None


def test_answered_policy_is_the_lowest_threshold_whose_answers_meet_the_target():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    correct = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    # Answering the top 8: 7/8 = 87.5% right; the top 9: 7/9 = 77.8%; everything: 70%.
    assert choose_threshold(conf, correct, min_accuracy=0.85) == pytest.approx(0.4)
    assert choose_threshold(conf, correct, min_accuracy=0.7) == pytest.approx(0.2)
    # 100% only among the top 3: the answered policy still answers them, the overall one cannot.
    assert choose_threshold(conf, correct, min_accuracy=1.0) == pytest.approx(0.9)
    assert choose_threshold(conf, correct, min_accuracy=1.0, policy="overall") is None
    with pytest.raises(EngineError, match="policy"):
        choose_threshold(conf, correct, min_accuracy=0.9, policy="best")


def test_answered_policy_answers_tied_confidences_together():
    conf = np.array([0.9, 0.9, 0.9, 0.5])
    correct = np.array([1, 1, 0, 1], dtype=bool)
    # Cutting inside the tie (2 of the 0.9s, 100%) is impossible: 0.9 answers all three (67%).
    assert choose_threshold(conf, correct, min_accuracy=0.9) is None
    assert choose_threshold(conf, correct, min_accuracy=0.75) == pytest.approx(0.5)  # 3 of 4
    assert choose_threshold(conf, np.array([1, 1, 0, 0], dtype=bool), min_accuracy=0.6) == pytest.approx(0.9)


def test_answered_policy_with_a_wilson_bound_keeps_its_promise_on_new_data():
    """Chosen on one sample, the answered records of a fresh sample of the same source are >= 95% right."""
    rng = np.random.default_rng(3)

    def sample(n):
        conf = rng.random(n)
        return conf, rng.random(n) < 0.6 + 0.4 * conf  # ~80% overall, near 100% at the top

    conf, ok = sample(20_000)
    t = choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=0.95)
    assert t is not None
    fresh_conf, fresh_ok = sample(200_000)
    answered = fresh_conf >= t
    assert fresh_ok[answered].mean() >= 0.95
    assert 0.1 < answered.mean() < 0.9  # answers a real share, sends the rest to review


def _flat_near_target(n=8000, flat=0.4, wrong=0.041):
    """Held-out rows whose top `flat` share is 1 - `wrong` right all the way down (flat near a 95% target, as
    generated denials are), with confident calibrated-looking confidences there, the rest 70% right."""
    k = int(n * flat)
    conf = np.r_[np.linspace(0.999, 0.99, k), np.linspace(0.9, 0.3, n - k)]
    ok = np.arange(n) % 10 < 7
    ok[:k] = True
    ok[np.round(np.arange(0.5 / wrong, k, 1 / wrong)).astype(int)] = False
    return conf, ok


def test_answered_policy_answers_where_accuracy_is_flat_near_the_target():
    """A search over every threshold finds none, even one paying for only log2 m (~13) tests; one gate test,
    placed by the confidences alone, passes, and what it answers is right >= 95% of the time."""
    from scipy.stats import norm

    from taxonomist.engines.calibration import wilson_lower

    conf, ok = _flat_near_target()
    kept = np.arange(1, len(ok) + 1)
    z_search = norm.ppf(1 - 0.05 / np.ceil(np.log2(len(ok))))
    assert not (wilson_lower(np.cumsum(ok), kept, z_search) >= 0.95).any()  # the search alone: nothing
    t = choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=0.95)
    assert t is not None
    answered = conf >= t
    assert 0.25 < answered.mean() <= 0.4  # inside the flat 40%, most of it
    assert ok[answered].mean() >= 0.95


def test_answered_policy_search_pays_for_every_threshold_it_searches():
    """The search returns the lowest of the m thresholds below the gate that pass, so each of the m is a test:
    the answered rows clear the Wilson bound at 1 - 0.05 / m (here 3,300 rows, 96.6% right). A bound paying
    for log2 m tests (a bisection's) would add 800 rows that are 93% right (4,100 rows, 95.9%), leaving a
    batch of new records little margin above 95%."""
    from scipy.stats import norm

    from taxonomist.engines.calibration import wilson_lower

    n_top, n_rest = 2000, 6000
    conf = np.r_[np.linspace(0.999, 0.99, n_top), np.linspace(0.9, 0.3, n_rest)]
    ok = np.r_[np.arange(n_top) % 100 != 0, np.arange(n_rest) % 100 >= 7]  # 99% right, then 93%
    t = choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=0.95)
    k = int((conf >= t).sum())
    kept, hits = np.arange(1, len(ok) + 1), np.cumsum(ok)
    start = n_top  # the gate's threshold: where the confident block ends
    m = len(ok) - start
    every = wilson_lower(hits, kept, float(norm.ppf(1 - 0.05 / m))) >= 0.95
    log2 = wilson_lower(hits, kept, float(norm.ppf(1 - 0.05 / np.ceil(np.log2(m))))) >= 0.95
    assert k == int(np.flatnonzero(every)[-1]) + 1  # the lowest threshold that clears the bound for m tests
    assert int(np.flatnonzero(log2)[-1]) + 1 > k + 500  # the log2 m bound would go much further
    assert 0.95 < ok[:k].mean()


def test_answered_policy_refuses_when_accuracy_is_just_below_the_target():
    """95% confidence: over draws whose records are all 94.5% right, it answers something at most ~5% of the
    time. Testing every threshold at the uncorrected level instead answers in ~17% of them."""
    answered_any = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        conf, ok = rng.random(7000), rng.random(7000) < 0.945
        answered_any += choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=0.95) is not None
    assert answered_any <= 10


def test_answered_policy_refuses_when_the_gate_fails_and_says_why():
    from taxonomist.engines.calibration import _infeasible_note

    conf, ok = _flat_near_target(n=2000, flat=0.5, wrong=0.048)  # 95.2% right in the top half: too few rows
    assert choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=0.95) is None
    assert choose_threshold(conf, ok, min_accuracy=0.95) is not None  # the point estimate would answer
    note = _infeasible_note(conf, ok, 0.95, 0.95)
    assert "at most 50% of records can be answered at >= 95% (point estimate)" in note
    assert "not >= 95% at 95% confidence, so none is answered" in note


def test_threshold_with_a_confidence_level_leaves_a_margin_that_shrinks_with_more_data():
    rng = np.random.default_rng(0)
    for n, margin_range in ((1_000, (0.015, 0.04)), (100_000, (0.0015, 0.004))):  # 1.645 standard errors
        conf = rng.random(n)
        correct = rng.random(n) < 0.5 + 0.5 * conf  # more confident, more often right (~75% overall)
        kept_accuracy = lambda t: correct[conf >= t].sum() / n  # noqa: E731
        point = choose_threshold(conf, correct, min_accuracy=0.6, policy="overall")
        bounded = choose_threshold(conf, correct, min_accuracy=0.6, confidence_level=0.95, policy="overall")
        assert bounded < point  # keeps more rows: a margin for the estimate's own error
        assert kept_accuracy(point) == pytest.approx(0.6, abs=1 / n)
        assert margin_range[0] < kept_accuracy(bounded) - 0.6 < margin_range[1]
    assert choose_threshold(conf, correct, min_accuracy=0.76, confidence_level=0.95, policy="overall") is None  # ~75%
    with pytest.raises(EngineError, match="confidence_level"):
        choose_threshold(conf, correct, min_accuracy=0.6, confidence_level=1.5)


def test_calibrator_round_trips_as_a_dict():
    cal = Calibrator(temperature=1.7, threshold=0.4, ece_before=0.2, ece_after=0.05, n=10)
    assert Calibrator.from_dict(cal.to_dict()) == cal
    p = np.array([[0.7, 0.2, 0.1]])
    softer = cal.apply(p)
    assert softer.sum() == pytest.approx(1.0) and softer[0, 0] < 0.7 and softer.argmax() == 0


@pytest.fixture(scope="module")
def tfidf():
    return create_engine("tfidf").fit(*TRAIN)


def test_calibrate_lowers_ece_and_detects_out_of_scope(tfidf, tmp_path):
    raw_test = tfidf.predict_proba(TEST[0])
    cal = calibrate(tfidf, *VAL, threshold="auto", min_accuracy=0.8, policy="overall")
    try:
        assert cal.n == sum(y != "oos" for y in VAL[1])  # oos rows are not in the temperature fit
        assert cal.temperature != 1.0 and cal.ece_after < cal.ece_before
        assert cal.threshold is not None and 0 < cal.threshold < 1

        # Applied by the contract: probabilities change, ranking does not.
        proba = tfidf.predict_proba(TEST[0])
        assert not np.allclose(proba, raw_test)
        np.testing.assert_array_equal(proba.argmax(axis=1), raw_test.argmax(axis=1))
        ins = np.array([y != "oos" for y in TEST[1]])
        correct = proba.argmax(axis=1) == np.array([list(tfidf.classes_).index(y) if y != "oos" else -1 for y in TEST[1]])
        assert ece(proba[ins].max(axis=1), correct[ins]) < ece(raw_test[ins].max(axis=1), correct[ins]) + 0.05

        pred = tfidf.predict(TEST[0])
        scores = oos_metrics(TEST[1], pred)
        assert scores["oos_recall"] >= 0.3, scores  # abstentions catch out-of-scope queries
        assert np.mean(pred[~ins] == ABSTAIN) > np.mean(pred[ins] == ABSTAIN)

        # Saved in the manifest and restored on load.
        tfidf.save(tmp_path / "m")
        loaded = load_engine(tmp_path / "m")
        assert loaded.calibrator_ == cal
        np.testing.assert_allclose(loaded.predict_proba(TEST[0]), proba, atol=1e-9)
        assert list(loaded.predict(TEST[0])) == list(pred)
    finally:
        tfidf.calibrator_ = None


def test_engine_threshold_parameter_wins_over_calibrator(tfidf):
    calibrate(tfidf, *VAL, threshold=0.99)
    try:
        assert (tfidf.predict(TEST[0]) == ABSTAIN).mean() > 0.5
        tfidf.set_params(threshold=0.0001)
        assert (tfidf.predict(TEST[0]) == ABSTAIN).mean() == 0
    finally:
        tfidf.set_params(threshold=None)
        tfidf.calibrator_ = None


def test_an_unreachable_target_sends_everything_to_review_and_says_why(tfidf):
    cal = calibrate(tfidf, *VAL, threshold="auto", min_accuracy=0.999, confidence_level=0.95)
    try:
        assert cal.threshold > 1.0 and cal.coverage == 0.0
        assert "held-out accuracy is" in cal.max_coverage_note and "hold out more" in cal.max_coverage_note
        preds = tfidf.predict_batch(TEST[0][:5])
        assert all(p.category == ABSTAIN and p.reason == "below_threshold" for p in preds)
    finally:
        tfidf.calibrator_ = None


def test_calibrate_needs_known_labels(tfidf):
    with pytest.raises(EngineError, match="only 0 held-out rows"):
        calibrate(tfidf, ["a", "b"], ["oos", "oos"])
    with pytest.raises(EngineError, match="2 texts but 1 labels"):
        calibrate(tfidf, ["a", "b"], ["oos"])
