"""Core metrics on hand-computed cases."""

from __future__ import annotations

import pytest

from taxonomist import metrics


def test_accuracy_macro_f1_and_abstentions():
    truth = ["a", "a", "b", "b", "c"]
    pred = ["a", "NONE", "b", "a", "c"]
    assert metrics.accuracy(truth, pred) == pytest.approx(0.6)
    # F1: a = 2*1/(2+1+1) = 0.5, b = 2/(2+0+1) = 2/3, c = 1
    assert metrics.macro_f1(truth, pred) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert metrics.abstain_rate(pred) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="5 true labels but 4 predictions"):
        metrics.accuracy(truth, pred[:4])


def test_ece_and_reliability_bins():
    conf = [0.9, 0.9, 0.9, 0.9, 0.6, 0.6]
    correct = [True, True, True, False, True, False]
    # bin 0.9: acc 0.75, |0.75-0.9| * 4; bin 0.6: acc 0.5, |0.5-0.6| * 2  -> (0.6 + 0.2) / 6
    assert metrics.ece(conf, correct, n_bins=10) == pytest.approx(0.8 / 6)
    bins = metrics.reliability_bins(conf, correct, n_bins=10)
    assert sum(b.count for b in bins) == 6 and bins[9].count == 4 and bins[9].accuracy == 0.75
    assert metrics.ece([1.0], [True]) == 0.0


def test_top_confusions_and_oos():
    truth = ["a", "a", "a", "b", "oos", "oos"]
    pred = ["b", "b", "a", "a", "NONE", "a"]
    assert metrics.top_confusions(truth, pred, 2) == [("a", "b", 2), ("b", "a", 1)]
    scores = metrics.oos_metrics(truth, pred)
    assert scores == {"in_scope_accuracy": pytest.approx(0.25), "oos_recall": pytest.approx(0.5)}
