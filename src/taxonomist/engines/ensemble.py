"""`ensemble`: a calibrated combination of other engines (e.g. tfidf + head + finetune).

Fitting holds out a stratified split, fits every member on the rest, and on the
held-out split learns (1) one temperature per member, so that each member's
probabilities are calibrated before they are mixed, and (2) how to combine them:

- `combine="loglinear"` (default): p ∝ exp(Σ w_m log p_m), weights w ≥ 0 summing to 1;
- `combine="linear"`: p = Σ w_m p_m, weights summing to 1;
- `combine="stacking"`: a multinomial logistic regression over the members' log-probabilities.

Weights are learnt by minimising log-loss on the held-out split unless given. Then
the members are refitted on all the data (`refit=True`, or only the ones named, so
that an expensive member can keep its first fit). With few examples per category
a held-out split is too small to learn from (10 per intent leaves one each), so
`folds=k` cross-fits instead: every member is fitted k times, each time without
one fold, and the temperatures and weights are learnt on the out-of-fold
probabilities of *every* example; the members are then fitted once more on all the
data (k + 1 fits each). Saved as one sub-folder per member
(each a complete saved model with its own manifest) plus this engine's manifest,
which lists the members, their temperatures and weights; stacking coefficients go in
`stacking.npz` (plain arrays, loaded with `allow_pickle=False`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineError
from ..prediction import Evidence
from ..splits import stratified_split
from .base import ENGINES, Engine, Manifest, _ensure_registered, create_engine, load_engine, register_engine
from .calibration import fit_temperature
from .calibration import log_softmax as _log_softmax

__all__ = ["EnsembleEngine", "member_specs"]

COMBINES = ("loglinear", "linear", "stacking")
STACKING_FILE = "stacking.npz"
_EPS = 1e-7


def member_specs(members: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise `members` to [(engine name, params)].

    Accepted per member: "tfidf", ("finetune", {"epochs": 2}), or
    {"engine": "finetune", "params": {...}}.
    """
    if isinstance(members, str) or not isinstance(members, Sequence) or len(members) == 0:
        raise EngineError(f"ensemble: members={members!r} is invalid; expected a non-empty list such as "
                          "('tfidf', 'head') or [('finetune', {'epochs': 2}), 'tfidf']")
    specs = []
    for i, m in enumerate(members):
        if isinstance(m, str):
            specs.append((m, {}))
        elif isinstance(m, Mapping) and "engine" in m:
            specs.append((str(m["engine"]), dict(m.get("params") or {})))
        elif isinstance(m, Sequence) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], Mapping):
            specs.append((m[0], dict(m[1])))
        else:
            raise EngineError(f"ensemble: member #{i} ({m!r}) is invalid; expected an engine name, "
                              "(name, params) or {'engine': name, 'params': {...}}")
        if specs[-1][0] == "ensemble":
            raise EngineError(f"ensemble: member #{i} is itself an ensemble; list its members directly instead")
    _ensure_registered()
    for i, (name, _) in enumerate(specs):
        if name not in ENGINES:
            raise EngineError(f"ensemble: member #{i} names unknown engine '{name}' (known: {', '.join(sorted(ENGINES))})")
    return specs


@register_engine
class EnsembleEngine(Engine):
    """Calibrated combination of member engines.

    Parameters (keyword-only, stored unchanged):
        members: engines to combine, see `member_specs`.
        weights: one non-negative weight per member (normalised to sum 1); None = learnt.
            Ignored by `combine="stacking"`.
        combine: "loglinear", "linear" or "stacking".
        holdout: stratified share held out to learn temperatures and weights.
        folds: None, or k >= 2 to learn them on out-of-fold probabilities of every
            example instead (k + 1 fits per member; `holdout` and `refit` are then unused).
        refit: True = refit every member on all the data after learning the weights;
            False = keep the members fitted without the held-out split; or a list of
            member engine names to refit (e.g. ["tfidf", "head"], sparing finetune).
        seed: makes the held-out split repeatable.
        threshold: abstain (predict NONE) below this confidence.
    """

    name: ClassVar[str] = "ensemble"
    family: ClassVar[str] = "combined"
    label: ClassVar[str] = "ensemble"
    budget_kind: ClassVar[str] = "embed"
    # Two cheap, different members: the contract is about the combination, test_ensemble.py covers finetune in it.
    test_params: ClassVar[dict] = {"members": ["tfidf", ["tfidf", {"C": 0.02, "scale": 3.0}]]}
    demo_caps: ClassVar[dict] = {"max_train": 1500, "max_test": 300, "seeds": 1, "ks": ("all",), "policies": ("never",),
                                 "event_ks": (25,)}

    def __init__(
        self,
        *,
        members: Sequence[Any] = ("tfidf", "head"),
        weights: Sequence[float] | None = None,
        combine: str = "loglinear",
        holdout: float = 0.2,
        refit: bool | Sequence[str] = True,
        folds: int | None = None,
        seed: int = 0,
        threshold: float | None = None,
    ) -> None:
        self.members = members
        self.weights = weights
        self.combine = combine
        self.holdout = holdout
        self.refit = refit
        self.folds = folds
        self.seed = seed
        self.threshold = threshold

    # ----- fit ---------------------------------------------------------------------------
    def _validate(self) -> list[tuple[str, dict[str, Any]]]:
        specs = member_specs(self.members)
        if self.combine not in COMBINES:
            raise EngineError(f"ensemble: combine={self.combine!r} is invalid; expected one of {', '.join(COMBINES)}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise EngineError(f"ensemble: folds={self.folds!r} is invalid; expected None or an integer >= 2 (e.g. 5)")
        if not 0.0 < float(self.holdout) < 0.9:
            raise EngineError(f"ensemble: holdout={self.holdout!r} is invalid; expected a fraction in (0, 0.9)")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            if w.shape != (len(specs),) or (w < 0).any() or w.sum() <= 0:
                raise EngineError(f"ensemble: weights={list(self.weights)!r} is invalid; expected {len(specs)} "
                                  "non-negative numbers (one per member), not all zero")
        if not isinstance(self.refit, bool):
            names = {n for n, _ in specs}
            unknown = [r for r in self.refit if r not in names]
            if isinstance(self.refit, str) or unknown:
                raise EngineError(f"ensemble: refit={self.refit!r} is invalid; expected True, False or a list of "
                                  f"member names (members: {', '.join(sorted(names))})")
        return specs

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:

        specs = self._validate()
        classes = list(self.classes_)
        y = np.searchsorted(self.classes_, labels)
        rng = np.random.default_rng(self.seed)
        if self.folds:
            engines, held_logp, member_seconds, held_idx = self._cross_fit(specs, texts, labels, y, rng)
        else:
            fit_idx, held_idx = stratified_split(y, float(self.holdout), rng)
            if len(held_idx) == 0:
                raise EngineError("ensemble: the held-out split is empty (every class has one example); "
                                  "give each category at least two examples")
            fit_texts = [texts[i] for i in fit_idx]
            held_texts = [texts[i] for i in held_idx]
            engines, held_logp, member_seconds = [], [], []
            for name, params in specs:
                start = time.perf_counter()
                engine = create_engine(name, **params).fit(fit_texts, labels[fit_idx])
                member_seconds.append(time.perf_counter() - start)
                engines.append(engine)
                held_logp.append(_aligned_log_proba(engine, held_texts, classes))
        y_held = y[held_idx]
        temps = [_fit_temperature(lp, y_held) for lp in held_logp]
        calibrated = [_log_softmax(lp / t) for lp, t in zip(held_logp, temps)]
        self.temperatures_ = np.asarray(temps, dtype=float)
        self.member_holdout_accuracy_ = [float((lp.argmax(1) == y_held).mean()) for lp in held_logp]

        self.stacking_coef_ = self.stacking_intercept_ = None
        if self.combine == "stacking":
            self.weights_ = np.full(len(specs), 1.0 / len(specs))
            self.stacking_coef_, self.stacking_intercept_ = _fit_stacking(calibrated, y_held, len(classes), self.seed)
        elif self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            self.weights_ = w / w.sum()
        else:
            self.weights_ = _fit_weights(calibrated, y_held, self.combine)
        combined = self._combine(calibrated)
        self.holdout_accuracy_ = float((combined.argmax(1) == y_held).mean())
        self.holdout_log_loss_ = float(-np.log(np.clip(combined[np.arange(len(y_held)), y_held], _EPS, None)).mean())

        if self.folds:  # _cross_fit already fitted every member on all the data
            to_refit = set()
        else:
            to_refit = {n for n, _ in specs} if self.refit is True else set() if self.refit is False else set(self.refit)
        for i, (name, params) in enumerate(specs):
            if name in to_refit:
                start = time.perf_counter()
                engines[i] = create_engine(name, **params).fit(texts, labels)
                member_seconds[i] += time.perf_counter() - start
        self.members_ = engines
        self.member_seconds_ = [round(s, 3) for s in member_seconds]

    def _cross_fit(self, specs, texts: list[str], labels: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        """Out-of-fold log-probabilities of every example per member, and each member fitted on all the data."""
        classes = list(self.classes_)
        fold = np.empty(len(y), dtype=int)
        for c in np.unique(y):  # stratified: each class dealt round-robin over the folds
            members = rng.permutation(np.flatnonzero(y == c))
            fold[members] = (np.arange(len(members)) + int(rng.integers(self.folds))) % self.folds
        if np.bincount(fold, minlength=self.folds).min() == 0:
            raise EngineError(f"ensemble: folds={self.folds} leaves a fold empty with {len(y)} examples; use fewer folds")
        engines, out_of_fold, member_seconds = [], [], []
        for name, params in specs:
            start = time.perf_counter()
            logp = np.zeros((len(y), len(classes)))
            for k in range(self.folds):
                train, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
                engine = create_engine(name, **params).fit([texts[i] for i in train], labels[train])
                logp[held] = _aligned_log_proba(engine, [texts[i] for i in held], classes)
            engines.append(create_engine(name, **params).fit(texts, labels))
            member_seconds.append(time.perf_counter() - start)
            out_of_fold.append(logp)
        return engines, out_of_fold, member_seconds, np.arange(len(y))

    # ----- predict ----------------------------------------------------------------------------
    def _member_log_probas(self, texts: list[str]) -> list[np.ndarray]:
        classes = list(self.classes_)
        return [_log_softmax(_aligned_log_proba(m, texts, classes) / t) for m, t in zip(self.members_, self.temperatures_)]

    def _combine(self, logps: list[np.ndarray]) -> np.ndarray:
        if self.combine == "stacking":
            x = np.concatenate(logps, axis=1)
            return np.exp(_log_softmax(x @ self.stacking_coef_.T + self.stacking_intercept_))
        return _pool(logps, self.weights_, self.combine)

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        logps = self._member_log_probas(texts)
        self._last_member_logp = logps
        return self._combine(logps)

    def member_probas(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Each member's calibrated probabilities (columns = `classes_`), keyed by `index:engine`."""
        self._check_fitted()
        return {f"{i}:{m.name}": np.exp(lp) for i, (m, lp) in enumerate(zip(self.members_, self._member_log_probas(list(texts))))}

    def _evidence(self, text: str, proba: np.ndarray) -> tuple:
        logps = getattr(self, "_last_member_logp", None)
        if not logps or len(logps[0]) != 1:
            return ()
        out = []
        for i, (member, lp) in enumerate(zip(self.members_, logps)):
            best = int(lp[0].argmax())
            out.append(Evidence(kind="vote", category=str(self.classes_[best]), score=float(math.exp(lp[0, best])),
                                ref=f"{member.name} (weight {self.weights_[i]:.3f})"))
        return tuple(out)

    # ----- save / load --------------------------------------------------------------------------
    def _member_dir(self, i: int) -> str:
        return f"members/{i:02d}-{self.members_[i].name}"

    def _save_weights(self, directory: Path) -> dict[str, Any]:
        listing = []
        for i, member in enumerate(self.members_):
            sub = self._member_dir(i)
            member.save(directory / sub)
            listing.append({"engine": member.name, "dir": sub, "temperature": float(self.temperatures_[i]),
                            "weight": float(self.weights_[i]), "model_id": member.model_id})
        if self.combine == "stacking":
            np.savez(directory / STACKING_FILE, coef=self.stacking_coef_, intercept=self.stacking_intercept_)
        return {
            "members": listing,
            "holdout_accuracy": getattr(self, "holdout_accuracy_", None),
            "holdout_log_loss": getattr(self, "holdout_log_loss_", None),
            "member_holdout_accuracy": getattr(self, "member_holdout_accuracy_", None),
            "member_seconds": getattr(self, "member_seconds_", None),
        }

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        listing = manifest.extra.get("members")
        if not listing:
            raise EngineError(f"'{directory}': the ensemble manifest lists no members; re-save the model")
        members = []
        for entry in listing:
            sub = directory / entry["dir"]
            if not sub.is_dir():
                raise EngineError(f"'{directory}': member folder '{entry['dir']}' is missing; copy the whole model directory")
            members.append(load_engine(sub))
        self.members_ = members
        self.temperatures_ = np.asarray([e["temperature"] for e in listing], dtype=float)
        self.weights_ = np.asarray([e["weight"] for e in listing], dtype=float)
        self.holdout_accuracy_ = manifest.extra.get("holdout_accuracy")
        self.stacking_coef_ = self.stacking_intercept_ = None
        if self.combine == "stacking":
            with np.load(directory / STACKING_FILE, allow_pickle=False) as data:
                self.stacking_coef_, self.stacking_intercept_ = data["coef"], data["intercept"]

    def _libraries(self) -> tuple[str, ...]:
        names: list[str] = []
        for m in getattr(self, "members_", []):
            names.extend(m._libraries())
        return tuple(dict.fromkeys(names))


# ----- the maths ---------------------------------------------------------------------------------
def _aligned_log_proba(engine: Engine, texts: list[str], classes: list[str]) -> np.ndarray:
    """The member's log-probabilities in the ensemble's column order (absent classes get ~0 probability)."""
    proba = engine.predict_proba(texts)
    out = np.full((len(texts), len(classes)), _EPS)
    col = {c: j for j, c in enumerate(classes)}
    for k, c in enumerate(engine.classes_):
        j = col.get(str(c))
        if j is not None:
            out[:, j] = np.maximum(proba[:, k], _EPS)
    out /= out.sum(axis=1, keepdims=True)
    return np.log(out)


def _nll(logp: np.ndarray, y: np.ndarray) -> float:
    return float(-logp[np.arange(len(y)), y].mean())


def _fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    return fit_temperature(logp, y, log_probs=True, bounds=(0.05, 20.0))


def _pool(logps: list[np.ndarray], weights: np.ndarray, combine: str) -> np.ndarray:
    if combine == "linear":
        return sum(w * np.exp(lp) for w, lp in zip(weights, logps))
    return np.exp(_log_softmax(sum(w * lp for w, lp in zip(weights, logps))))


def _fit_weights(logps: list[np.ndarray], y: np.ndarray, combine: str) -> np.ndarray:
    """Weights on the simplex that minimise held-out log-loss (softmax parametrisation)."""
    from scipy.optimize import minimize

    if len(logps) == 1:
        return np.ones(1)

    def loss(v: np.ndarray) -> float:
        w = np.exp(v - v.max())
        w /= w.sum()
        p = _pool(logps, w, combine)
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    res = minimize(loss, np.zeros(len(logps)), method="Nelder-Mead" if len(logps) <= 3 else "Powell",
                   options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000} if len(logps) <= 3 else {"maxiter": 2000})
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def _fit_stacking(logps: list[np.ndarray], y: np.ndarray, n_classes: int, seed: int):
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate(logps, axis=1)
    lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(x, y)
    coef = np.zeros((n_classes, x.shape[1]))
    intercept = np.full(n_classes, -30.0)
    present = lr.classes_
    if len(present) == 2:
        coef[present[1]], coef[present[0]] = lr.coef_[0] / 2, -lr.coef_[0] / 2
        intercept[present[1]], intercept[present[0]] = lr.intercept_[0] / 2, -lr.intercept_[0] / 2
    else:
        coef[present] = lr.coef_
        intercept[present] = lr.intercept_
    return coef, intercept
