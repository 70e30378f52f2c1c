"""The few figures a comparison reports for a run, from `taxonomist.metrics` (one implementation for the project)."""

from __future__ import annotations

import numpy as np

from ..metrics import accuracy as _accuracy, ece as _ece, macro_f1 as _macro_f1, reliability_bins
from ..taxonomy import ABSTAIN

__all__ = ["summary", "accuracy", "macro_f1", "ece", "reliability"]


def accuracy(y_true, y_pred) -> float:
    return float(_accuracy(y_true, y_pred))


def macro_f1(y_true, y_pred) -> float:
    return float(_macro_f1(y_true, y_pred))


def _correct(y_true, y_pred) -> np.ndarray:
    return np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)


def ece(y_true, y_pred, confidence) -> float:
    return float(_ece(confidence, _correct(y_true, y_pred)))


def reliability(y_true, y_pred, confidence, bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram)."""
    out = []
    for b in reliability_bins(confidence, _correct(y_true, y_pred), bins):
        out.append({"lo": float(b.lower), "hi": float(b.upper), "n": int(b.count),
                    "confidence": float(b.confidence) if b.count else None,
                    "accuracy": float(b.accuracy) if b.count else None})
    return out


def summary(y_true, y_pred, confidence) -> dict[str, float]:
    """Accuracy (NONE counted wrong), coverage (share answered), accuracy on the answered records, macro-F1, ECE."""
    pred = np.asarray(y_pred, dtype=object)
    answered = pred != ABSTAIN
    correct = _correct(y_true, y_pred)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "coverage": float(answered.mean()) if len(pred) else 0.0,
        "answered_accuracy": float(correct[answered].mean()) if answered.any() else 0.0,
        "macro_f1": macro_f1(y_true, y_pred),
        "ece": ece(y_true, y_pred, confidence),
        "mean_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
    }
