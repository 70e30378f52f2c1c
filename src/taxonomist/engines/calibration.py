"""Calibration and abstention for any engine: temperature scaling fitted on held-out data, and a threshold.

`calibrate(engine, texts, labels)` fits one temperature on held-out data so
that confidences match accuracy (reported as expected calibration error
before and after), optionally chooses an abstention threshold, and attaches
the resulting `Calibrator` to the engine as `calibrator_`. The engine contract
(`engines/base.py`) applies it in `predict_proba`/`predict`, stores it in the
manifest and restores it on load, so every engine gets it without code of its
own. Held-out rows whose label is not one of the engine's classes (CLINC150's
`oos`) do not enter the temperature fit; they are what the threshold should
catch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import EngineError
from ..metrics import ece as expected_calibration_error

__all__ = ["Calibrator", "calibrate", "fit_temperature", "choose_threshold", "wilson_lower"]


@dataclass
class Calibrator:
    """A fitted temperature (probabilities become softmax(log p / T)) and an optional abstention threshold."""

    temperature: float = 1.0
    threshold: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    n: int = 0
    min_accuracy: float | None = None
    confidence_level: float | None = None
    accuracy: float | None = None  # top-1 accuracy on the in-scope held-out rows, before any abstention

    def apply(self, proba: np.ndarray) -> np.ndarray:
        if self.temperature == 1.0 or len(proba) == 0:
            return proba
        z = np.log(np.clip(proba, 1e-12, 1.0)) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood of the true class indices `y`."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(proba, dtype=float), 1e-12, 1.0))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[rows, y] - np.log(np.exp(z).sum(axis=1))).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.02), np.log(50.0)), method="bounded")
    return float(np.exp(result.x))


def wilson_lower(successes: np.ndarray | float, n: int, z: float) -> np.ndarray:
    """Lower end of the Wilson score interval for a proportion `successes / n` (z = 1.645: one-sided 95%)."""
    p = np.asarray(successes, dtype=float) / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, *, min_accuracy: float, confidence_level: float | None = None
) -> float | None:
    """The highest confidence threshold that keeps accuracy (abstentions count as wrong) >= `min_accuracy`.

    `confidence`/`correct` are for the in-scope held-out rows. None when even
    no threshold reaches `min_accuracy`. With `confidence_level` (e.g. 0.95)
    the held-out accuracy must clear `min_accuracy` with that one-sided
    confidence (Wilson lower bound), not just as a point estimate: accuracy
    measured on a few thousand held-out rows is itself off by up to a point,
    so a threshold chosen at exactly the target lands below it on new data
    about half of the time.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    if confidence_level is not None and not 0.5 <= confidence_level < 1:
        raise EngineError(f"confidence_level={confidence_level!r} is invalid; expected a probability in [0.5, 1), e.g. 0.95")
    if n == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    # Accuracy when the threshold is the i-th highest confidence: correct among the top i+1, over n.
    hits = np.cumsum(ok[order])
    if confidence_level is None:
        acc_at = hits / n
    else:
        from scipy.stats import norm

        acc_at = wilson_lower(hits, n, float(norm.ppf(confidence_level)))
    if acc_at[-1] < min_accuracy:
        return None
    feasible = np.flatnonzero(acc_at >= min_accuracy)
    i = int(feasible[0])  # the fewest kept rows (highest threshold) that still reach the target
    return float(conf[order][i])


def calibrate(
    engine,
    texts: Iterable[str],
    labels: Iterable[str],
    *,
    threshold: float | str | None = None,
    min_accuracy: float = 0.95,
    confidence_level: float | None = None,
) -> Calibrator:
    """Fit a temperature on held-out `texts`/`labels` and attach it to `engine` (returns the Calibrator).

    `threshold`: None (never abstain), a number, or "auto": the highest
    threshold keeping held-out accuracy on in-scope rows >= `min_accuracy`
    (rows with labels outside `engine.classes_` are out-of-scope); with
    `confidence_level` the held-out accuracy must clear `min_accuracy` at that
    one-sided confidence (see `choose_threshold`).
    """
    engine._check_fitted()
    texts = list(texts)
    labels = [str(y) for y in labels]
    if len(texts) != len(labels):
        raise EngineError(f"calibrate: {len(texts)} texts but {len(labels)} labels; they must be the same length")
    engine.calibrator_ = None  # fit on the engine's raw probabilities
    raw = engine.predict_proba(texts)
    index = {c: i for i, c in enumerate(engine.classes_)}
    in_scope = np.array([y in index for y in labels], dtype=bool)
    if in_scope.sum() < 2:
        raise EngineError(
            f"calibrate: only {int(in_scope.sum())} held-out rows have a category the engine knows; "
            "hold out more labelled data (e.g. --calibrate 0.1)"
        )
    y = np.array([index[v] for v, k in zip(labels, in_scope) if k])
    raw_in = raw[in_scope]
    temperature = fit_temperature(raw_in, y)
    cal = Calibrator(temperature=temperature, n=int(in_scope.sum()))
    proba = cal.apply(raw_in)
    cal.accuracy = float((proba.argmax(axis=1) == y).mean())
    cal.ece_before = expected_calibration_error(raw_in.max(axis=1), raw_in.argmax(axis=1) == y)
    cal.ece_after = expected_calibration_error(proba.max(axis=1), proba.argmax(axis=1) == y)
    if threshold == "auto":
        cal.min_accuracy = min_accuracy
        cal.confidence_level = confidence_level
        cal.threshold = choose_threshold(
            proba.max(axis=1), proba.argmax(axis=1) == y, min_accuracy=min_accuracy, confidence_level=confidence_level
        )
    elif threshold is not None:
        cal.threshold = float(threshold)
    engine.calibrator_ = cal
    return cal
