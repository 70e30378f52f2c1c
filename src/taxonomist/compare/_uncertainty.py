"""The uncertainty of a comparison's figures: Wilson intervals, paired bootstrap differences, decay per month.

Every procedure here is deterministic given its seed and written so that it can
be recomputed from the stored predictions (tests/test_report.py does):

- a proportion p on n records: the two-sided 95% Wilson interval of (p * n, n);
- a difference between two runs (two engines, or two retrain policies) on the
  same records: per record, the mean correctness over a run's seeds; records in
  ascending id order; `rng = np.random.default_rng(seed)`,
  `idx = rng.integers(0, n, size=(reps, n))`; the 2.5th and 97.5th percentiles
  of `(a - b)[idx].mean(axis=1)`;
- decay per month: the least-squares slope of monthly accuracy against the
  month; its interval resamples the records within each month (months in
  order, one `rng.integers(0, n_m, size=(reps, n_m))` per month);
- the share left to people at a target accuracy on answered records: the
  scored records fall in two halves by `review_half(record_id)`; each half is
  routed with the threshold chosen on the other half (the lowest one whose
  answered records reach the target, as `choose_threshold` does), so no record
  is routed by a threshold fitted to it. The share and the accuracy on the
  answered records carry Wilson intervals.

A figure on fewer than `MIN_N` records is inconclusive: reported, never used
to recommend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..engines.calibration import choose_threshold, wilson_interval

__all__ = ["MIN_N", "REPS", "proportion", "paired_difference", "per_record", "decay_per_month", "review_half", "review_share"]

MIN_N = 100
REPS = 2000


def proportion(value: float, n: int) -> dict[str, Any]:
    """A proportion with its 95% Wilson interval, n and whether it is too small to conclude from."""
    if n <= 0:
        return {"value": float(value), "lo": None, "hi": None, "n": 0, "inconclusive": True}
    lo, hi = wilson_interval(float(value) * n, n)
    return {"value": float(value), "lo": float(lo), "hi": float(hi), "n": int(n), "inconclusive": bool(n < MIN_N)}


def review_half(record_id: str) -> int:
    """0 or 1: which half of the scored records a record falls in, from its id alone (stable across runs)."""
    return hashlib.blake2b(str(record_id).encode(), digest_size=1).digest()[0] & 1


def review_share(ids: Sequence[str], confidence: np.ndarray, correct: np.ndarray, *, target: float) -> dict[str, Any]:
    """The share of records left to people so that the answered ones are `target` right, cross-fitted over two halves.

    A threshold chosen on the very records it is then scored on looks better than it is; here each half is
    routed by the threshold chosen on the other half. `thresholds[h]` is the one chosen ON half h (None: no
    threshold reaches the target there, so the other half goes to people entirely).
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    half = np.array([review_half(i) for i in ids], dtype=int)
    thresholds: list[float | None] = []
    for h in (0, 1):
        on = half == h
        thresholds.append(choose_threshold(conf[on], ok[on], min_accuracy=target) if on.any() else None)
    answered = np.zeros(len(conf), dtype=bool)
    for h in (0, 1):
        thr = thresholds[1 - h]
        if thr is not None:
            answered |= (half == h) & (conf >= thr)
    n = len(conf)
    out = proportion(float(1.0 - answered.mean()) if n else 1.0, n)
    acc = (proportion(float(ok[answered].mean()), int(answered.sum())) if answered.any()
           else {"value": None, "lo": None, "hi": None, "n": 0, "inconclusive": True})  # nothing answered
    return {**out, "thresholds": thresholds, "answered_accuracy": acc}


def per_record(runs: Sequence[Any]) -> dict[str, float]:
    """Record id -> correctness averaged over the runs (seeds) that scored it."""
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for r in runs:
        for i, ok in zip(r.ids.tolist(), r.correct.tolist()):
            total[str(i)] = total.get(str(i), 0.0) + float(ok)
            count[str(i)] = count.get(str(i), 0) + 1
    return {i: total[i] / count[i] for i in total}


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], *, seed: int = 0, reps: int = REPS) -> dict[str, Any]:
    """Mean of a - b over the records both scored, with its paired-bootstrap 95% interval."""
    ids = sorted(set(a) & set(b))
    n = len(ids)
    if n == 0:
        return {"diff": None, "lo": None, "hi": None, "n": 0, "seed": seed, "reps": reps, "inconclusive": True}
    d = np.array([a[i] - b[i] for i in ids], dtype=float)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(reps, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": n, "seed": seed, "reps": reps,
            "inconclusive": bool(n < MIN_N)}


def decay_per_month(months: Sequence[int], correct: Sequence[np.ndarray], *, seed: int = 0, reps: int = REPS) -> dict[str, Any]:
    """Slope of accuracy per month (negative = decay) with a 95% interval from resampling records within months."""
    x = np.asarray(months, dtype=float)
    n = int(sum(len(c) for c in correct))
    if len(x) < 2 or any(len(c) == 0 for c in correct):
        return {"slope": None, "lo": None, "hi": None, "n": n, "seed": seed, "reps": reps, "inconclusive": True}
    xc = x - x.mean()
    y = np.array([np.mean(c) for c in correct], dtype=float)
    slope = float(xc @ y / (xc @ xc))
    rng = np.random.default_rng(seed)
    ys = np.stack([np.asarray(c, dtype=float)[rng.integers(0, len(c), size=(reps, len(c)))].mean(axis=1) for c in correct], axis=1)
    boot = ys @ xc / (xc @ xc)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"slope": slope, "lo": float(lo), "hi": float(hi), "n": n, "seed": seed, "reps": reps,
            "inconclusive": bool(n < MIN_N)}
