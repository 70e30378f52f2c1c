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

__all__ = ["Calibrator", "calibrate", "fit_temperature", "choose_threshold", "wilson_lower", "wilson_interval", "POLICIES", "coverage_report",
           "softmax", "log_softmax", "ANSWER_NOTHING",
           "calibrate_from_proba", "out_of_fold_proba"]

#: How a target accuracy becomes a threshold. "answered" (the default, for review routing):
#: accuracy on the records the model answers must reach the target; the rest go to people.
#: "overall": accuracy over all in-scope records, abstentions counted wrong (out-of-scope detection, CLINC150).
POLICIES = ("answered", "overall")
#: A threshold no probability reaches: the model answers nothing, every record goes to review.
ANSWER_NOTHING = 1.0000000000000002


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
    policy: str | None = None  # see POLICIES
    coverage: float | None = None  # share of held-out rows answered at the threshold
    answered_accuracy: float | None = None  # accuracy on those answered rows
    max_coverage_note: str | None = None  # when the target cannot be met: why, in one line

    def apply(self, proba: np.ndarray) -> np.ndarray:
        if self.temperature == 1.0 or len(proba) == 0:
            return proba
        return softmax(np.log(np.clip(proba, 1e-12, 1.0)), self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` (numerically safe): the project's one softmax."""
    z = np.asarray(logits, dtype=float) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fit_temperature(
    proba: np.ndarray, y: np.ndarray, *, log_probs: bool = False, bounds: tuple[float, float] = (0.02, 50.0)
) -> float:
    """The temperature minimising negative log-likelihood of the true class indices `y`.

    `proba` holds probabilities, or log-probabilities/logits with `log_probs=True`.
    The one temperature fit of the project (calibration, ensemble members, fine-tuning).
    """
    from scipy.optimize import minimize_scalar

    arr = np.asarray(proba, dtype=float)
    logp = arr if log_probs else np.log(np.clip(arr, 1e-12, 1.0))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[rows, y] - np.log(np.exp(z).sum(axis=1))).mean())

    result = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(result.x))


def wilson_interval(successes: np.ndarray | float, n: np.ndarray | int, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """Both ends of the Wilson score interval for a proportion `successes / n` (default z: two-sided 95%)."""
    n = np.asarray(n, dtype=float)
    p = np.asarray(successes, dtype=float) / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def wilson_lower(successes: np.ndarray | float, n: np.ndarray | int, z: float) -> np.ndarray:
    """Lower end of the Wilson score interval for a proportion `successes / n` (z = 1.645: one-sided 95%)."""
    return wilson_interval(successes, n, z)[0]


def choose_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    min_accuracy: float,
    confidence_level: float | None = None,
    policy: str = "answered",
) -> float | None:
    """The threshold that meets `min_accuracy` under `policy`, or None when none does.

    "answered" (default): the LOWEST threshold whose accuracy on the answered
    rows (confidence >= threshold) reaches `min_accuracy` — the most records
    answered at the promised accuracy, the rest to review. "overall": the
    HIGHEST threshold keeping accuracy over all rows (abstentions counted
    wrong) at `min_accuracy`, for out-of-scope detection.

    With `confidence_level` (e.g. 0.95) the accuracy must clear the target at
    that one-sided confidence (Wilson lower bound), not just as a point
    estimate: a threshold chosen at exactly the target lands below it on new
    data about half of the time. Tied confidences are answered or not together.
    """
    if policy not in POLICIES:
        raise EngineError(f"policy={policy!r} is unknown; expected one of {', '.join(POLICIES)}")
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    if confidence_level is not None and not 0.5 <= confidence_level < 1:
        raise EngineError(f"confidence_level={confidence_level!r} is invalid; expected a probability in [0.5, 1), e.g. 0.95")
    if n == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    hits = np.cumsum(ok[order])
    # Only cut where the confidence changes: tied rows are answered or not together.
    cut = np.r_[sorted_conf[1:] < sorted_conf[:-1], True]
    if policy == "answered":
        return _answered_threshold(sorted_conf, hits, cut, min_accuracy, confidence_level)
    z = 0.0
    if confidence_level is not None:
        from scipy.stats import norm

        z = float(norm.ppf(confidence_level))
    acc_at = wilson_lower(hits, np.full(n, n), z) if z else hits / n
    feasible = np.flatnonzero((acc_at >= min_accuracy) & cut)
    if not len(feasible):
        return None
    return float(sorted_conf[int(feasible[0])])  # the fewest rows kept (highest threshold) that reach the target


def _answered_threshold(sorted_conf: np.ndarray, hits: np.ndarray, cut: np.ndarray, target: float,
                        confidence_level: float | None) -> float | None:
    """The lowest threshold whose answered records clear `target`: the most records answered at the promise.

    Without `confidence_level`: the point estimate must reach the target. With it (1 - delta), the rule is a
    serial gatekeeping test (Dmitrienko & Tamhane 2007; fixed-sequence testing as in Learn then Test,
    Angelopoulos et al. 2021) of the hypotheses "accuracy on answered at threshold t < target":

    1. Gate. One threshold, the start, is chosen from the calibrated confidences alone: the one where they
       leave the most room for being too optimistic (`_gate_start`). Its answered rows must clear the target
       at the one-sided Wilson bound at `confidence_level`, uncorrected: a single test, chosen before the
       correctness of any row is looked at. If they do not, nothing is answered (`_infeasible_note` says so).
    2. Search. Among thresholds below the start (more answered), the lowest whose answered rows clear the
       target at the Wilson bound corrected for every threshold searched (Bonferroni): confidence
       1 - delta / m, m the thresholds below the start. If none does, the start.

    Guarantee: with probability at least `confidence_level`, the accuracy on answered at the returned
    threshold, over records drawn like the held-out rows, is >= `target` (the gate and the search each hold
    their error to delta, and the search runs only once the gate is passed). Approximations: the Wilson
    normal approximation; the start depends on the held-out labels only through the fitted temperature.
    Why every threshold: the search returns the lowest of the m thresholds that pass, so any one of them
    passing by chance is an error; a correction for log2 m tests (selection with guaranteed risk, Geifman &
    El-Yaniv 2017) is guaranteed for a bisection, which tests log2 m of them, not for a scan of all m.
    Measured, the log2 m scan still kept the long-run promise (its nested tests are correlated), but left
    no margin for one batch, whose answered part scatters about sqrt(p (1 - p) / m) around the long-run
    accuracy. On 50 random 80/20 splits of generated denials (seeds 7, 11, 5, 23, 42;
    benchmarks/threshold_rules.py) the log2 m scan answered 58/34/27/52/47% of a ~1,800-record test split
    and left 6 of the 45 splits it answered below 95%; every-threshold answers 36/20/19/26/28% and leaves 2
    of 45 below (the same 5 splits answer nothing under both: there the gate fails).
    Why a gate: where accuracy is flat near the target (generated denials: ~96% from 10% to 50% coverage, the
    surest records diluted by wrong labels) a search alone, paying for many tests, answers nothing (with
    log2 m tests: 9 of the 30 splits); one test placed by the confidences passes in most of them.
    """
    cuts = np.flatnonzero(cut)  # candidate prefix ends, most confident first
    if not len(cuts):
        return None
    kept = cuts + 1
    if confidence_level is None:  # point estimates
        passing = np.flatnonzero(hits[cuts] / kept >= target)
        return float(sorted_conf[int(cuts[passing[-1]])]) if len(passing) else None
    from scipy.stats import norm

    start = _gate_start(sorted_conf, cuts, target, confidence_level)
    if wilson_lower(hits[cuts[start]], kept[start], float(norm.ppf(confidence_level))) < target:
        return None
    above = np.arange(start + 1, len(cuts))
    best = start
    if len(above):
        bound = wilson_lower(hits[cuts[above]], kept[above], float(norm.ppf(1 - (1 - confidence_level) / len(above))))
        passing = above[bound >= target]
        if len(passing):
            best = int(passing[-1])
    return float(sorted_conf[int(cuts[best])])


def _gate_start(sorted_conf: np.ndarray, cuts: np.ndarray, target: float, confidence_level: float) -> int:
    """Index into `cuts` of the gate's threshold, chosen without looking at correctness: where the calibrated
    confidences leave the most room for being too optimistic.

    The gate passes when the answered records' accuracy p clears target + z sqrt(target (1 - target) / k)
    (the Wilson/score test at k answered). Calibration expects p to be the mean confidence m of the answered,
    so the start maximises m - target - z sqrt(target (1 - target) / k): the largest overestimate of the
    accuracy the gate would survive. Small sets cannot clear the margin; large ones dilute m towards the
    target. (The chance of passing, which divides by sqrt(m (1 - m)), would chase a handful of records whose
    confidences are 0.9999 while label noise makes them no surer than the rest.)
    """
    from scipy.stats import norm

    kept = cuts + 1
    expected = np.cumsum(sorted_conf)[cuts] / kept
    z = float(norm.ppf(confidence_level))
    return int(np.argmax(expected - z * np.sqrt(target * (1 - target) / kept)))


def coverage_report(confidence: np.ndarray, correct: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Coverage (share answered), accuracy on answered and overall accuracy at a threshold, on held-out rows."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    n = len(conf)
    answered = conf >= threshold if threshold is not None else np.ones(n, dtype=bool)
    k = int(answered.sum())
    return {
        "n": n,
        "coverage": k / n if n else 0.0,
        "answered_accuracy": float(ok[answered].mean()) if k else None,
        "accuracy": float(ok.mean()) if n else None,
    }


def _infeasible_note(conf: np.ndarray, ok: np.ndarray, target: float, confidence_level: float | None) -> str:
    """Why the answered policy answers nothing on held-out data, and the most that could be answered at the point estimate."""
    n = len(conf)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(ok[order])
    point = hits / np.arange(1, n + 1)
    reach = np.flatnonzero(point >= target)
    most = (int(reach[-1]) + 1) / n if len(reach) else 0.0
    head = (f"held-out accuracy is {ok.mean():.1%} on {n} rows; at most {most:.0%} of records can be answered at "
            f">= {target:.0%} (point estimate)")
    if confidence_level is None:
        return f"{head}, none with 50% confidence"
    from scipy.stats import norm

    sorted_conf = conf[order]
    cuts = np.flatnonzero(np.r_[sorted_conf[1:] < sorted_conf[:-1], True])
    start = _gate_start(sorted_conf, cuts, target, confidence_level)
    k = int(cuts[start]) + 1
    gate = (f"; the records the confidences point to as surest, the top {k / n:.0%} ({k} rows), are "
            f"{hits[k - 1] / k:.1%} right, not >= {target:.0%} at {confidence_level:.0%} confidence, so none is answered")
    best_possible = float(wilson_lower(n, n, float(norm.ppf(confidence_level))))
    if best_possible < target:
        gate += (f"; with {n} held-out rows even all correct give a {confidence_level:.0%} lower bound of "
                 f"{best_possible:.1%}: hold out more (--calibrate)")
    return head + gate


def calibrate(
    engine,
    texts: Iterable[str],
    labels: Iterable[str],
    *,
    threshold: float | str | None = None,
    min_accuracy: float = 0.95,
    confidence_level: float | None = None,
    policy: str = "answered",
) -> Calibrator:
    """Fit a temperature on held-out `texts`/`labels` and attach it to `engine` (returns the Calibrator).

    `threshold`: None (never abstain), a number, or "auto": the threshold
    meeting `min_accuracy` on in-scope held-out rows under `policy` (rows with
    labels outside `engine.classes_` are out-of-scope; see `choose_threshold`).
    When no threshold meets it under the "answered" policy, the model answers
    nothing (`ANSWER_NOTHING`: everything goes to review) and
    `max_coverage_note` says why; under "overall" no threshold is set.
    """
    engine._check_fitted()
    texts = list(texts)
    labels = [str(y) for y in labels]
    if len(texts) != len(labels):
        raise EngineError(f"calibrate: {len(texts)} texts but {len(labels)} labels; they must be the same length")
    engine.calibrator_ = None  # fit on the engine's raw probabilities
    raw = engine.predict_proba(texts)
    return calibrate_from_proba(engine, raw, labels, threshold=threshold, min_accuracy=min_accuracy,
                                confidence_level=confidence_level, policy=policy)


def calibrate_from_proba(
    engine,
    raw: np.ndarray,
    labels: Iterable[str],
    *,
    threshold: float | str | None = None,
    min_accuracy: float = 0.95,
    confidence_level: float | None = None,
    policy: str = "answered",
) -> Calibrator:
    """`calibrate` from raw probabilities already computed (columns `engine.classes_`), e.g. out-of-fold ones."""
    labels = [str(y) for y in labels]
    raw = np.asarray(raw, dtype=float)
    if len(raw) != len(labels):
        raise EngineError(f"calibrate: {len(raw)} rows of probabilities but {len(labels)} labels")
    engine.saved_manifest_ = None  # the calibration is part of the model (and of its id)
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
    conf, ok = proba.max(axis=1), proba.argmax(axis=1) == y
    if threshold == "auto":
        cal.min_accuracy = min_accuracy
        cal.confidence_level = confidence_level
        cal.policy = policy
        cal.threshold = choose_threshold(conf, ok, min_accuracy=min_accuracy, confidence_level=confidence_level, policy=policy)
        if cal.threshold is None and policy == "answered":
            cal.threshold = ANSWER_NOTHING
            cal.max_coverage_note = _infeasible_note(conf, ok, min_accuracy, confidence_level)
    elif threshold is not None:
        cal.threshold = float(threshold)
    report = coverage_report(conf, ok, cal.threshold)
    cal.coverage, cal.answered_accuracy = report["coverage"], report["answered_accuracy"]
    engine.calibrator_ = cal
    return cal


def out_of_fold_proba(make_engine, texts: list[str], labels: list[str], *, folds: int, seed: int = 0,
                      classes: np.ndarray | None = None, on_fold=None, jobs: int = 1) -> np.ndarray:
    """Probabilities of every text from a model that did not see it: `folds` stratified folds, columns `classes`.

    `make_engine()` returns a fresh unfitted engine. A class missing from a fold's training part gets
    probability 0 there. Used to calibrate on all the data instead of a small hold-out, and by the label
    audit. `jobs` > 1 fits that many folds at once in separate processes (each holds a copy of the texts).
    """
    if folds < 2:
        raise EngineError(f"folds={folds}: cross-fitting needs at least 2 folds")
    y = np.asarray(labels, dtype=object)
    classes = np.array(sorted(set(y.tolist())), dtype=object) if classes is None else classes
    col = {c: i for i, c in enumerate(classes)}
    from ..splits import stratified_folds

    fold_of = stratified_folds(y, folds, seed)

    def fit_fold(k: int) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        held, fit = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        if not len(held):
            return held, [], None
        model = make_engine().fit([texts[i] for i in fit], y[fit].tolist())
        return held, [str(c) for c in model.classes_], model.predict_proba([texts[i] for i in held])

    if jobs > 1:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=jobs)(delayed(fit_fold)(k) for k in range(folds))
    else:
        parts = []
        for k in range(folds):
            parts.append(fit_fold(k))
            if on_fold is not None:
                on_fold(k + 1, folds)
    out = np.zeros((len(y), len(classes)))
    for held, fold_classes, proba in parts:
        for j, c in enumerate(fold_classes):
            out[held, col[c]] = proba[:, j]
    return out
