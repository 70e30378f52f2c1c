"""The few figures a comparison reports for a run, taken from `taxonomist.metrics`."""

from __future__ import annotations

import numpy as np

__all__ = ["summary", "accuracy", "macro_f1", "ece", "reliability"]

try:  # the project's metrics module (engines issue); one implementation for the whole project
    from ..metrics import accuracy as _accuracy, ece as _ece, macro_f1 as _macro_f1
except ImportError:  # pragma: no cover - until taxonomist.metrics lands
    _accuracy = _ece = _macro_f1 = None


def accuracy(y_true, y_pred) -> float:
    if _accuracy is not None:
        return float(_accuracy(y_true, y_pred))
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return float((y_true == y_pred).mean()) if len(y_true) else 0.0


def macro_f1(y_true, y_pred) -> float:
    if _macro_f1 is not None:
        return float(_macro_f1(y_true, y_pred))
    from sklearn.metrics import f1_score

    return float(f1_score(list(map(str, y_true)), list(map(str, y_pred)), average="macro", zero_division=0)) if len(y_true) else 0.0


def reliability(y_true, y_pred, confidence, bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram)."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    conf = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
            "confidence": float(conf[mask].mean()) if n else None,
            "accuracy": float((y_true[mask] == y_pred[mask]).mean()) if n else None,
        })
    return out


def ece(y_true, y_pred, confidence, bins: int = 10) -> float:
    if _ece is not None:
        try:
            return float(_ece(y_true, y_pred, confidence))
        except TypeError:
            pass
    n = len(y_true)
    if not n:
        return 0.0
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(y_true, y_pred, confidence, bins) if b["n"]))


def summary(y_true, y_pred, confidence) -> dict[str, float]:
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "ece": ece(y_true, y_pred, confidence),
        "mean_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
    }
