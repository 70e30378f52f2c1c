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
  order, one `rng.integers(0, n_m, size=(reps, n_m))` per month).

A figure on fewer than `MIN_N` records is inconclusive: reported, never used
to recommend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..engines.calibration import wilson_interval

__all__ = ["MIN_N", "REPS", "proportion", "paired_difference", "per_record", "decay_per_month"]

MIN_N = 100
REPS = 2000


def proportion(value: float, n: int) -> dict[str, Any]:
    """A proportion with its 95% Wilson interval, n and whether it is too small to conclude from."""
    if n <= 0:
        return {"value": float(value), "lo": None, "hi": None, "n": 0, "inconclusive": True}
    lo, hi = wilson_interval(float(value) * n, n)
    return {"value": float(value), "lo": float(lo), "hi": float(hi), "n": int(n), "inconclusive": bool(n < MIN_N)}


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
