"""Classification metrics on plain arrays (numpy only): accuracy, macro-F1, calibration error, confusions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .taxonomy import ABSTAIN

__all__ = [
    "accuracy",
    "macro_f1",
    "ece",
    "reliability_bins",
    "ReliabilityBin",
    "top_confusions",
    "abstain_rate",
    "oos_metrics",
]


def _arrays(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray([str(v) for v in y_true], dtype=object)
    p = np.asarray([str(v) for v in y_pred], dtype=object)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions; they must be the same length")
    return t, p


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Share of exact matches; an abstention (`NONE`) counts as wrong unless the truth is `NONE`."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(t == p)) if len(t) else 0.0


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Unweighted mean F1 over the classes present in the truth (abstentions are misses)."""
    t, p = _arrays(y_true, y_pred)
    scores = []
    for c in sorted(set(t.tolist())):
        tp = np.sum((t == c) & (p == c))
        fp = np.sum((t != c) & (p == c))
        fn = np.sum((t == c) & (p != c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def abstain_rate(y_pred: Sequence[str]) -> float:
    p = np.asarray([str(v) for v in y_pred], dtype=object)
    return float(np.mean(p == ABSTAIN)) if len(p) else 0.0


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean confidence in the bin
    accuracy: float  # share correct in the bin


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 15) -> list[ReliabilityBin]:
    """Equal-width confidence bins with their mean confidence and accuracy (for reliability diagrams)."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            ReliabilityBin(float(edges[b]), float(edges[b + 1]), n, float(conf[m].mean()) if n else 0.0, float(ok[m].mean()) if n else 0.0)
        )
    return out


def ece(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 15) -> float:
    """Expected calibration error: count-weighted |accuracy - confidence| over equal-width bins."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return float(sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / total)


def top_confusions(y_true: Sequence[str], y_pred: Sequence[str], n: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (true, predicted) error pairs, most frequent first."""
    t, p = _arrays(y_true, y_pred)
    pairs = Counter((a, b) for a, b in zip(t.tolist(), p.tolist()) if a != b)
    return [(a, b, c) for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def oos_metrics(y_true: Sequence[str], y_pred: Sequence[str], *, oos_label: str = "oos") -> dict[str, float]:
    """Out-of-scope evaluation: in-scope accuracy (abstaining counts as wrong) and oos recall (abstaining is right)."""
    t, p = _arrays(y_true, y_pred)
    ins = t != oos_label
    in_acc = float(np.mean(t[ins] == p[ins])) if ins.any() else 0.0
    oos_recall = float(np.mean(np.isin(p[~ins], [ABSTAIN, oos_label]))) if (~ins).any() else 0.0
    return {"in_scope_accuracy": in_acc, "oos_recall": oos_recall}
