"""`cascade`: a cheap engine first, a stronger engine or an LLM when unsure, people last, at a promised accuracy.

Each stage is any registered engine (`stages=["tfidf", ["head", {...}], "llm"]`).
A stage answers a record when its calibrated confidence clears the stage's
threshold; otherwise the record goes on to the next stage, carrying the stage's
`shortlist_k` most likely categories (an `llm` stage prompts with that
shortlist). What the last stage will not answer is NONE with reason
`deferred_to_review` and goes to people. `Prediction.route` names the stage
that answered ("review" when none did).

Thresholds are chosen, not set by hand (Arora et al. 2024; FrugalGPT, Chen et
al. 2023): `fit` cross-fits every stage (stratified K folds, or one hold-out
split) to get out-of-fold probabilities of every record, fits one temperature
per stage on them, measures each stage's seconds per record, and searches a
grid of per-stage thresholds (quantiles of each stage's out-of-fold
confidence; the last stage's threshold exactly) for the combination whose
answered records reach `target_accuracy` at the Wilson lower bound with the
highest coverage, taking the cheapest within `coverage_tolerance` of it. An
expensive stage (an LLM priced by tokens) is cross-fitted on a sample of
`expensive_sample` records only: it is fitted without them and asked about
each with the shortlist the previous stage gave it out of fold.

Cost per record of a stage = its measured seconds per record x the CPU price
of the project's price table (`taxonomist/compare/prices.yaml`, `serve_cpu_per_hour`),
or, for an LLM behind an API, its tokens at that table's `llm_api` prices.

`add_examples` gives reviewed (or LLM) answers to every stage that takes
examples without retraining (knn, llm); `distill` retrains the other stages
on their training data plus those answers (Cache & Distil, Ramirez et al. 2024).

Saved as one sub-folder per stage (each a complete saved model) plus
`cascade.json` (temperatures, thresholds, costs: covered by the model id),
summarised in the manifest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import EngineError
from ..prediction import Prediction, Reason
from ..splits import stratified_folds, stratified_split
from ..taxonomy import ABSTAIN
from .base import (
    ENGINES,
    Engine,
    Manifest,
    _as_texts,
    _ensure_registered,
    create_engine,
    load_engine,
    register_engine,
)
from .calibration import ANSWER_NOTHING, fit_temperature, softmax, wilson_lower

__all__ = ["CascadeEngine", "CascadePlan", "search_thresholds", "stage_specs"]

CASCADE_FILE = "cascade.json"
#: Route of a record no stage answered.
REVIEW = "review"
_EPS = 1e-9


def stage_specs(stages: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise `stages` to [(engine name, params)]: "tfidf", ["head", {...}] or {"engine": name, "params": {...}}."""
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    if not isinstance(stages, Sequence) or len(stages) == 0:
        raise EngineError(f"cascade: stages={stages!r} is invalid; expected a non-empty list such as "
                          "['tfidf', ['head', {'epochs': 2}], 'llm'] or 'tfidf,head,llm'")
    specs = []
    for i, s in enumerate(stages):
        if isinstance(s, str):
            specs.append((s, {}))
        elif isinstance(s, Mapping) and "engine" in s:
            specs.append((str(s["engine"]), dict(s.get("params") or {})))
        elif isinstance(s, Sequence) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], Mapping):
            specs.append((s[0], dict(s[1])))
        else:
            raise EngineError(f"cascade: stage #{i + 1} ({s!r}) is invalid; expected an engine name, "
                              "[name, params] or {'engine': name, 'params': {...}}")
    _ensure_registered()
    for i, (name, _) in enumerate(specs):
        if name == CascadeEngine.name:
            raise EngineError(f"cascade: stage #{i + 1} is itself a cascade; list its stages directly instead")
        if name not in ENGINES:
            raise EngineError(f"cascade: stage #{i + 1} names unknown engine '{name}' (known: {', '.join(sorted(ENGINES))})")
    return specs


# ----- the threshold search ----------------------------------------------------------------------
@dataclass
class CascadePlan:
    """Chosen thresholds and what they give on the out-of-fold records."""

    thresholds: list[float]
    target_accuracy: float | None
    feasible: bool
    n: int
    coverage: float  # share answered by some stage
    answered_accuracy: float | None
    accuracy_lower: float | None  # Wilson lower bound of answered accuracy at the confidence level
    stage_shares: list[float]  # share of all records each stage answered
    reach: list[float]  # share of all records each stage had to look at
    cost_per_record: float  # dollars
    note: str = ""
    stage_costs: list[float] = field(default_factory=list)
    #: With `max_drop`: the cascade's accuracy loss against the last stage alone on the same records, and its
    #: one-sided upper bound (paired, at the search's z).
    drop: float | None = None
    drop_upper: float | None = None

    @property
    def to_people(self) -> float:
        return 1.0 - self.coverage

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["to_people"] = self.to_people
        out["cost_per_1000"] = self.cost_per_record * 1000
        return out


def search_thresholds(
    confidence: Sequence[np.ndarray],
    correct: Sequence[np.ndarray],
    costs: Sequence[float],
    *,
    target_accuracy: float,
    z: float = 1.645,
    defer: bool = True,
    grid: int = 21,
    coverage_tolerance: float = 0.005,
    max_drop: float | None = None,
) -> CascadePlan:
    """The stage thresholds meeting `target_accuracy` on answered records (Wilson bound at `z`) at the lowest cost.

    `confidence[s]`, `correct[s]`: each stage's calibrated top confidence and
    whether its top answer is right, on the same held-out records. `costs[s]`:
    dollars per record the stage looks at. Every stage but the last tries
    `grid` quantiles of its confidence plus "answer nothing"; the last stage's
    threshold is exact (the lowest that keeps the target, as
    `calibration.choose_threshold`). Among feasible combinations the highest
    coverage wins, and within `coverage_tolerance` of it the cheapest.
    With `defer=False` the last stage answers everything (nobody reviews) and
    the target is the accuracy over all records.

    `max_drop` (with `defer=False`): instead of `target_accuracy`, the cascade
    must stay within `max_drop` of the last stage alone on the same records, at
    a one-sided paired bound: with d = (last stage right) - (cascade right) per
    record, mean(d) + z * sd(d) / sqrt(n) <= max_drop. Only records an earlier
    stage answers can differ, so this asks that the cheap stages' answers be,
    at the bound, about as often right as the last stage's on those very records
    (the lowest cheap thresholds that keep it win, being the cheapest). No
    constant depends on the data: the tolerance and the confidence are stated.
    """
    conf = [np.asarray(c, dtype=float) for c in confidence]
    ok = [np.asarray(c, dtype=bool) for c in correct]
    n, S = len(conf[0]), len(conf)
    if n == 0:
        raise EngineError("cascade: no held-out records to choose thresholds on; give more training data")
    def levels_grid(c: np.ndarray, levels: np.ndarray) -> list[float]:
        return [*np.unique(np.quantile(c, np.clip(levels, 0.0, 1.0))).tolist(), ANSWER_NOTHING]

    paired = max_drop is not None and not defer

    def paired_drop(right: np.ndarray) -> tuple[float, float]:
        """(loss, its upper bound) of a routing whose per-record correctness is `right`, against the last stage alone."""
        d = ok[-1].astype(float) - right
        sd = float(d.std(ddof=1)) if n > 1 else 0.0
        return float(d.mean()), float(d.mean() + z * sd / np.sqrt(n))

    def evaluate(combo: Sequence[float]) -> tuple | None:
        remaining = np.ones(n, dtype=bool)
        right = np.zeros(n, dtype=bool)
        hits = answered = 0
        cost = 0.0
        shares, reach = [], []
        for s, t in enumerate(combo):
            reach.append(remaining.mean())
            cost += costs[s] * remaining.mean()
            take = remaining & (conf[s] >= t)
            right[take] = ok[s][take]
            hits += int(ok[s][take].sum())
            answered += int(take.sum())
            shares.append(take.mean())
            remaining &= ~take
        reach.append(remaining.mean())
        cost += costs[-1] * remaining.mean()
        rest = np.flatnonzero(remaining)
        if not defer:
            last_t, j = 0.0, len(rest)
            h, k = hits + int(ok[-1][rest].sum()), answered + len(rest)
            if paired:
                right[rest] = ok[-1][rest]
                if paired_drop(right)[1] > max_drop:
                    return None
            elif k and wilson_lower(h, k, z) < target_accuracy:
                return None
        else:
            order = rest[np.argsort(-conf[-1][rest], kind="stable")]
            sorted_conf = conf[-1][order]
            h_at = hits + np.r_[0, np.cumsum(ok[-1][order])]
            k_at = answered + np.arange(len(order) + 1)
            # cut j answers the first j rows; only between different confidences (ties go together)
            cut = np.r_[True, sorted_conf[1:] < sorted_conf[:-1], True] if len(order) else np.array([True])
            lower = np.where(k_at > 0, wilson_lower(h_at, np.maximum(k_at, 1), z), 1.0)
            ok_cut = np.flatnonzero((lower >= target_accuracy) & cut)
            if not len(ok_cut):  # not even the earlier stages alone keep the target
                return None
            j = int(ok_cut[-1])
            last_t = float(sorted_conf[j - 1]) if j > 0 else ANSWER_NOTHING
            h, k = int(h_at[j]), int(k_at[j])
        return (k / n, cost, [float(t) for t in combo] + [last_t], [*shares, j / n], reach, h, k, right)

    def choose(found: list[tuple]) -> tuple:
        top = max(c[0] for c in found)
        near = [c for c in found if c[0] >= top - coverage_tolerance]
        return min(near, key=lambda c: (round(c[1], 12), -c[0]))

    step = 1.0 / max(grid - 1, 1)
    coarse = [levels_grid(c, np.linspace(0.0, 1.0, grid)) for c in conf[:-1]]
    candidates = [c for c in map(evaluate, itertools.product(*coarse)) if c is not None]
    if candidates and S > 1:
        # Refine around the best: the quantile grid is coarse, and a cheap stage cut a step too high hands
        # records to an expensive one for nothing.
        first = choose(candidates)
        fine = []
        for s, c in enumerate(conf[:-1]):
            t = first[2][s]
            level = float((c < t).mean()) if t <= 1.0 else 1.0
            fine.append(levels_grid(c, np.linspace(level - step, level + step, grid)))
        candidates += [c for c in map(evaluate, itertools.product(*fine)) if c is not None]
    candidates = [c for c in candidates if c[6] > 0]  # answering nothing is no plan: it is the fallback below
    # (with max_drop the last stage answering everything always qualifies: its loss is 0)
    if not candidates:  # nothing keeps the target: send everything to people (or, without deferral, the last stage)
        thresholds = [ANSWER_NOTHING] * (S - 1) + ([ANSWER_NOTHING] if defer else [0.0])
        k = 0 if defer else n
        h = 0 if defer else int(ok[-1].sum())
        return CascadePlan(
            thresholds=thresholds, target_accuracy=target_accuracy, feasible=False, n=n, coverage=k / n,
            answered_accuracy=h / k if k else None, accuracy_lower=float(wilson_lower(h, k, z)) if k else None,
            stage_shares=[0.0] * (S - 1) + [k / n], reach=[1.0] * S, cost_per_record=float(sum(costs)),
            note=(f"no thresholds reach {target_accuracy:.1%} on answered records at the bound; "
                  + ("every record goes to review" if defer else f"the last stage answers all at {h / n:.1%}")),
            stage_costs=[float(c) for c in costs],
        )
    coverage, cost, thresholds, shares, reach, h, k, right = choose(candidates)
    drop, drop_upper = paired_drop(right) if paired else (None, None)
    return CascadePlan(
        thresholds=[float(t) for t in thresholds], target_accuracy=target_accuracy, feasible=True, n=n, coverage=float(coverage),
        answered_accuracy=h / k if k else None, accuracy_lower=float(wilson_lower(h, k, z)) if k else None,
        stage_shares=[float(s) for s in shares], reach=[float(r) for r in reach], cost_per_record=float(cost),
        stage_costs=[float(c) for c in costs], drop=drop, drop_upper=drop_upper,
    )


# ----- the engine ------------------------------------------------------------------------------------
@dataclass
class _Routed:
    proba: np.ndarray  # the answering (or, deferred, the last) stage's calibrated distribution
    confidence: np.ndarray
    stage: np.ndarray  # index of the answering stage, -1: deferred
    costs: np.ndarray
    extras: list[dict[str, Any]]
    evidence: list[tuple]


@register_engine
class CascadeEngine(Engine):
    """Stages tried in order; each answers what it is sure of, the rest goes on, then to people.

    Parameters (keyword-only, stored unchanged):
        stages: engines in order of cost, see `stage_specs`.
        target_accuracy: accuracy promised on answered records (Wilson lower bound at `confidence_level`).
        confidence_level: one-sided confidence of that bound (0.5: the point estimate).
        defer: True: what the last stage is unsure of goes to people; False: the last stage answers
            everything and `target_accuracy` is the accuracy over all records.
        max_drop: with defer=False, "as accurate as the last stage alone, within max_drop": the cheap
            stages answer only where the cascade's loss against the last stage on the same held-out
            records stays within max_drop at a paired one-sided bound at `confidence_level`
            (`search_thresholds`; confidence_level=0.5: the point estimate).
        folds: k >= 2 cross-fits every cheap stage on k stratified folds; None: one `holdout` split.
        holdout: the share held out when folds is None.
        shortlist_k: categories a stage hands on with a record it does not answer.
        expensive_sample: records an expensive (token-priced) stage is asked during fitting.
        grid: threshold candidates per stage (quantiles of its held-out confidence).
        coverage_tolerance: coverage given up for a cheaper combination.
        thresholds: one threshold per stage to use instead of the chosen ones (routing by hand).
        prices: price table YAML (default: taxonomist/compare/prices.yaml).
        taxonomy: handed to every stage that takes one (knn, head, llm).
        seed: folds, hold-out and sample.
    """

    name: ClassVar[str] = "cascade"
    family: ClassVar[str] = "combined"
    label: ClassVar[str] = "cascade (cheap first)"
    budget_kind: ClassVar[str] = "embed"
    # Two cheap stages and no deferral: the contract is about the engine; tests/test_cascade.py covers the rest.
    test_params: ClassVar[dict] = {"stages": [["tfidf", {"C": 0.05, "scale": 3.0}], "tfidf"], "folds": 3,
                                   "defer": False, "target_accuracy": 0.6}
    demo_caps: ClassVar[dict] = {"max_train": 1500, "max_test": 300, "seeds": 1, "ks": ("all",), "policies": ("never",),
                                 "event_ks": (25,)}

    def __init__(
        self,
        *,
        stages: Any = ("tfidf", "head"),
        target_accuracy: float = 0.95,
        confidence_level: float = 0.95,
        defer: bool = True,
        max_drop: float | None = None,
        folds: int | None = 5,
        holdout: float = 0.2,
        shortlist_k: int = 5,
        expensive_sample: int = 300,
        grid: int = 21,
        coverage_tolerance: float = 0.005,
        thresholds: Sequence[float] | None = None,
        prices: str | None = None,
        taxonomy: Any = None,
        seed: int = 0,
    ) -> None:
        self.stages = stages
        self.target_accuracy = target_accuracy
        self.confidence_level = confidence_level
        self.defer = defer
        self.max_drop = max_drop
        self.folds = folds
        self.holdout = holdout
        self.shortlist_k = shortlist_k
        self.expensive_sample = expensive_sample
        self.grid = grid
        self.coverage_tolerance = coverage_tolerance
        self.thresholds = thresholds
        self.prices = prices
        self.taxonomy = taxonomy
        self.seed = seed

    # ----- fit ------------------------------------------------------------------------------
    def _validate(self) -> list[tuple[str, dict[str, Any]]]:
        specs = stage_specs(self.stages)
        if not 0.0 < float(self.target_accuracy) <= 1.0:
            raise EngineError(f"cascade: target_accuracy={self.target_accuracy!r} is invalid; expected a share in (0, 1], e.g. 0.95")
        if not 0.5 <= float(self.confidence_level) < 1.0:
            raise EngineError(f"cascade: confidence_level={self.confidence_level!r} is invalid; expected [0.5, 1), e.g. 0.95")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise EngineError(f"cascade: folds={self.folds!r} is invalid; expected None or an integer >= 2 (e.g. 5)")
        if self.folds is None and not 0.0 < float(self.holdout) < 0.9:
            raise EngineError(f"cascade: holdout={self.holdout!r} is invalid; expected a fraction in (0, 0.9)")
        if self.thresholds is not None and len(self.thresholds) != len(specs):
            raise EngineError(f"cascade: thresholds={list(self.thresholds)!r} is invalid; expected {len(specs)} numbers, "
                              "one per stage")
        return specs

    def _make_stage(self, name: str, params: dict[str, Any]) -> Engine:
        engine = create_engine(name, **params)
        if self.taxonomy is not None and "taxonomy" in engine.get_params() and "taxonomy" not in params:
            engine.set_params(taxonomy=self.taxonomy)
        return engine

    def _price_table(self) -> Any:
        from ..prices import load_prices

        return load_prices(self.prices)

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        specs = self._validate()
        classes = [str(c) for c in self.classes_]
        y = np.searchsorted(self.classes_, labels)
        rng = np.random.default_rng(self.seed)
        prices = self._price_table()
        n, S = len(texts), len(specs)
        if self.folds:
            fold = stratified_folds(y, self.folds, rng)
            if np.bincount(fold, minlength=self.folds).min() == 0:
                raise EngineError(f"cascade: folds={self.folds} leaves a fold empty with {n} examples; use fewer folds")
            held = np.arange(n)
        else:
            _, held = stratified_split(y, float(self.holdout), rng)
            if len(held) == 0:
                raise EngineError("cascade: the held-out split is empty (every class has one example); "
                                  "give each category at least two examples")
            fold = np.full(n, -1)
            fold[held] = 0
        expensive = [self._expensive(name, params) for name, params in specs]
        if any(expensive):
            k = min(len(held), int(self.expensive_sample))
            held = np.sort(rng.choice(held, size=k, replace=False))
        oof = np.zeros((S, len(held), len(classes)))
        refused = np.zeros((S, len(held)), dtype=bool)  # an LLM that gave no valid code never answers
        seconds = np.zeros(S)
        stage_costs = np.zeros(S)
        shortlists: list[list[str]] | None = None
        stages: list[Engine] = []
        for s, (name, params) in enumerate(specs):
            if expensive[s]:
                raw, secs, answers = self._fit_predict(name, params, texts, labels, held, shortlists)
                oof[s] = raw
                refused[s] = [a.category == ABSTAIN for a in answers]
                seconds[s] = secs
                stage_costs[s] = float(np.mean([self._answer_cost(prices, a, secs) for a in answers])) if answers else secs * prices.serve_cpu_per_hour / 3600
            else:
                fold_ids = range(self.folds) if self.folds else [0]
                spent, counted = 0.0, 0
                full = np.zeros((n, len(classes)))
                for f in fold_ids:
                    train_idx, test_idx = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
                    engine = self._make_stage(name, params).fit([texts[i] for i in train_idx], labels[train_idx])
                    start = time.perf_counter()
                    full[test_idx] = _aligned(engine.predict_proba([texts[i] for i in test_idx]), engine.classes_, classes)
                    spent += time.perf_counter() - start
                    counted += len(test_idx)
                oof[s] = full[held]
                seconds[s] = spent / max(counted, 1)
                stage_costs[s] = prices.serve_cost(seconds[s])
            stages.append(self._make_stage(name, params).fit(texts, labels))
            k = max(1, int(self.shortlist_k))
            shortlists = [[classes[j] for j in np.argsort(-row, kind="stable")[:k]] for row in oof[s]]
        y_held = y[held]
        temps = [fit_temperature(oof[s], y_held) for s in range(S)]
        calibrated = [softmax(np.log(np.clip(oof[s], 1e-12, 1.0)), t) for s, t in zip(range(S), temps)]
        # A refusal is counted as a wrong answer at confidence 0: conservative (at predict time it is never answered).
        conf = [np.where(refused[s], 0.0, c.max(axis=1)) for s, c in enumerate(calibrated)]
        correct = [(c.argmax(axis=1) == y_held) & ~refused[s] for s, c in enumerate(calibrated)]
        target = float(self.target_accuracy)
        z = _z(self.confidence_level)
        max_drop = None
        if not self.defer and self.max_drop is not None:
            max_drop = float(self.max_drop)
            target = float(correct[-1].mean()) - max_drop  # reported; the search bounds the paired loss instead
        plan = search_thresholds(conf, correct, stage_costs.tolist(), target_accuracy=target, z=z, defer=bool(self.defer),
                                 grid=int(self.grid), coverage_tolerance=float(self.coverage_tolerance), max_drop=max_drop)
        self.stages_ = stages
        self.stage_names_ = _stage_names([name for name, _ in specs])
        self.temperatures_ = np.asarray(temps, dtype=float)
        self.thresholds_ = list(plan.thresholds)
        self.stage_seconds_ = [float(s) for s in seconds]
        self.stage_costs_ = [float(c) for c in stage_costs]
        self.plan_ = plan
        self.stage_accuracy_ = [float(c.mean()) for c in correct]
        self.oof_ = {"confidence": conf, "correct": correct, "costs": self.stage_costs_, "z": z, "max_drop": max_drop}
        self.added_ = ([], [])
        tax_versions = [str(getattr(st, "taxonomy_version_", "") or "") for st in stages]
        self.taxonomy_version_ = next((v for v in tax_versions if v), "")

    def _expensive(self, name: str, params: dict[str, Any]) -> bool:
        return ENGINES[name].cost_kind == "tokens"

    def _fit_predict(self, name, params, texts, labels, held, shortlists):
        """An expensive stage, fitted without the sample and asked about each sampled record with its shortlist."""
        keep = np.setdiff1d(np.arange(len(texts)), held)
        engine = self._make_stage(name, params).fit([texts[i] for i in keep], labels[keep])
        start = time.perf_counter()
        raw, answers = self._stage_proba(engine, [texts[i] for i in held], shortlists)
        secs = (time.perf_counter() - start) / max(len(held), 1)
        return raw, secs, answers

    def _answer_cost(self, prices: Any, answer: Any, seconds: float) -> float:
        """An LLM answer's cost: its tokens at the API prices, or for a local model its seconds at the CPU price."""
        extra = answer.extra
        if extra.get("from_cache") or extra.get("routed") != "llm":
            return 0.0
        if str(extra.get("model", "")).startswith("llama.cpp"):
            return prices.serve_cost(answer.latency_ms / 1000.0 if answer.latency_ms else seconds)
        return prices.llm_cost(extra.get("prompt_tokens", 0), extra.get("completion_tokens", 0), extra.get("cached_tokens", 0))

    def _stage_proba(self, stage: Engine, texts: list[str], shortlists: list[list[str]] | None) -> tuple[np.ndarray, list | None]:
        """The stage's raw distribution over the cascade's classes (and, for an LLM, its answers)."""
        classes = [str(c) for c in self.classes_]
        if hasattr(stage, "shortlisted_answers"):
            answers = stage.shortlisted_answers(texts, shortlists=shortlists)
            raw = stage.answers_proba(answers)
            return _aligned(raw, stage.classes_, classes), answers
        return _aligned(stage.predict_proba(texts), stage.classes_, classes), None

    # ----- predict ------------------------------------------------------------------------------
    def _active_thresholds(self) -> list[float]:
        return [float(t) for t in (self.thresholds if self.thresholds is not None else self.thresholds_)]

    def _route(self, texts: list[str], *, evidence: bool = False) -> _Routed:
        n, C = len(texts), len(self.classes_)
        thresholds = self._active_thresholds()
        last = len(self.stages_) - 1
        out = _Routed(proba=np.zeros((n, C)), confidence=np.zeros(n), stage=np.full(n, -1), costs=np.zeros(n),
                      extras=[{} for _ in range(n)], evidence=[() for _ in range(n)])
        remaining = np.arange(n)
        shortlists: list[list[str]] | None = None
        prices = self._price_table() if any(hasattr(s, "shortlisted_answers") for s in self.stages_) else None
        for s, stage in enumerate(self.stages_):
            if not len(remaining):
                break
            sub = [texts[i] for i in remaining]
            raw, answers = self._stage_proba(stage, sub, shortlists)
            cal = softmax(np.log(np.clip(raw, 1e-12, 1.0)), float(self.temperatures_[s]))
            conf = cal.max(axis=1)
            refused = np.zeros(len(remaining), dtype=bool)
            if answers is not None:
                # An LLM that gave no valid code, or chose NONE, did not answer, whatever the threshold.
                refused = np.array([a.category == ABSTAIN for a in answers], dtype=bool)
                conf = np.where(refused, 0.0, conf)
                for j, i in enumerate(remaining):
                    out.costs[i] += self._answer_cost(prices, answers[j], self.stage_seconds_[s])
                    out.extras[i].update({k: v for k, v in answers[j].extra.items() if k != "routed"})
            else:
                out.costs[remaining] += self.stage_costs_[s]
            if shortlists is not None:
                for j, i in enumerate(remaining):
                    out.extras[i]["shortlist"] = list(shortlists[j])
            out.proba[remaining] = cal
            out.confidence[remaining] = conf
            take = _stage_answers(conf, thresholds[s], final=s == last and not self.defer)
            out.stage[remaining[take]] = s
            if evidence:
                for j in np.flatnonzero(take):
                    i = remaining[j]
                    out.evidence[i] = (tuple(answers[j].evidence) if answers is not None
                                       else tuple(stage._evidence(texts[i], raw[j])))
            k = max(1, int(self.shortlist_k))
            classes = self.classes_
            shortlists = [[str(classes[c]) for c in np.argsort(-row, kind="stable")[:k]] for row in cal[~take]]
            remaining = remaining[~take]
        for i in range(n):
            out.extras[i]["stage"] = int(out.stage[i])
            out.extras[i]["stages_tried"] = int(out.stage[i]) + 1 if out.stage[i] >= 0 else len(self.stages_)
        return out

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._route(texts).proba

    def predict_batch(self, texts, *, ids: Sequence[str] | None = None, top_k: int = 5, evidence: bool = True,
                      taxonomy: Any = None, code_map: Any = None) -> list[Prediction]:
        """The one decision path: the answering stage's distribution through `decide`; unanswered rows deferred."""
        self._check_fitted()
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise EngineError(f"predict_batch: {len(texts)} texts but {len(ids)} ids; give one id per text or none")
        start = time.perf_counter()
        routed = self._route(texts, evidence=evidence)
        proba = routed.proba
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is not None and len(proba):
            proba = calibrator.apply(proba)
        deferred = routed.stage < 0
        preds = self._decide(
            proba, texts, ids=ids, top_k=top_k, taxonomy=taxonomy, code_map=code_map,
            evidence=routed.evidence if evidence else None, start=start,
            forced=[Reason.DEFERRED if d else None for d in deferred],
            forced_confidence=routed.confidence.tolist(), costs=routed.costs.tolist(), extras=routed.extras,
        )
        return [dataclasses.replace(p, route=REVIEW if s < 0 else self.stage_names_[s]) for p, s in zip(preds, routed.stage)]

    # ----- learning from the expensive answers ---------------------------------------------------------
    def add_examples(self, texts: Sequence[str], labels: Sequence[str]) -> list[str]:
        """Give reviewed (or LLM) answers to every stage that takes examples without retraining; returns their names.

        The examples are also kept (in memory) for `distill`.
        """
        self._check_fitted()
        texts = _as_texts(texts)
        labels = [str(y) for y in labels]
        if len(texts) != len(labels):
            raise EngineError(f"add_examples: {len(texts)} texts but {len(labels)} labels; they must be the same length")
        unknown = sorted(set(labels) - {str(c) for c in self.classes_})
        if unknown:
            raise EngineError(f"add_examples: label(s) {', '.join(unknown[:5])} are not among the cascade's categories; "
                              "train the cascade again to add a category")
        updated = []
        for name, stage in zip(self.stage_names_, self.stages_):
            if hasattr(stage, "add_examples"):
                stage.add_examples(texts, labels)
                updated.append(name)
        added = getattr(self, "added_", ([], []))
        self.added_ = (added[0] + texts, added[1] + labels)
        self.saved_manifest_ = None
        return updated

    def distill(self, texts: Sequence[str], labels: Sequence[str], *, stages: Sequence[int] | None = None) -> list[str]:
        """Retrain the stages that cannot take examples (by default every such stage but the last) on `texts`/`labels`
        (their training data) plus the examples given to `add_examples`. Temperatures and thresholds are kept.
        Returns the names of the stages retrained."""
        self._check_fitted()
        extra_texts, extra_labels = getattr(self, "added_", ([], []))
        all_texts = _as_texts(texts) + list(extra_texts)
        all_labels = np.asarray([str(y) for y in labels] + list(extra_labels), dtype=object)
        which = list(stages) if stages is not None else [
            s for s, st in enumerate(self.stages_[:-1]) if not hasattr(st, "add_examples")]
        done = []
        for s in which:
            old = self.stages_[s]
            fresh = create_engine(old.name, **old.get_params(deep=False)).fit(all_texts, all_labels)
            if getattr(old, "taxonomy_version_", "") and not getattr(fresh, "taxonomy_version_", ""):
                fresh.taxonomy_version_ = old.taxonomy_version_
            self.stages_[s] = fresh
            done.append(self.stage_names_[s])
        self.saved_manifest_ = None
        return done

    # ----- report ----------------------------------------------------------------------------------
    def plan_at(self, target_accuracy: float) -> CascadePlan:
        """The plan the search would choose at another target, on the same out-of-fold records (after fit only)."""
        oof = getattr(self, "oof_", None)
        if oof is None:
            raise EngineError("cascade: out-of-fold results exist only after fit (not after load); train it again")
        return search_thresholds(oof["confidence"], oof["correct"], oof["costs"], target_accuracy=target_accuracy,
                                 z=oof["z"], defer=bool(self.defer), grid=int(self.grid),
                                 coverage_tolerance=float(self.coverage_tolerance), max_drop=oof.get("max_drop"))

    def stage_outputs(self, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Every stage's answer for every text (for evaluation at many targets without predicting again).

        Per stage: `confidence` (calibrated; 0 where an LLM refused), `category` (its top class) and `cost`
        (dollars per record). Each stage gets the shortlist of the stage before it, as in routing.
        """
        self._check_fitted()
        texts = _as_texts(texts)
        prices = self._price_table()
        out = []
        shortlists: list[list[str]] | None = None
        k = max(1, int(self.shortlist_k))
        for s, stage in enumerate(self.stages_):
            raw, answers = self._stage_proba(stage, texts, shortlists)
            cal = softmax(np.log(np.clip(raw, 1e-12, 1.0)), float(self.temperatures_[s]))
            conf = cal.max(axis=1)
            if answers is not None:
                conf = np.where([a.category == ABSTAIN for a in answers], 0.0, conf)
                cost = np.array([self._answer_cost(prices, a, self.stage_seconds_[s]) for a in answers])
            else:
                cost = np.full(len(texts), self.stage_costs_[s])
            out.append({"confidence": conf, "category": self.classes_[cal.argmax(axis=1)], "cost": cost})
            shortlists = [[str(self.classes_[c]) for c in np.argsort(-row, kind="stable")[:k]] for row in cal]
        return out

    def routed_at(self, outputs: list[dict[str, np.ndarray]], thresholds: Sequence[float]) -> dict[str, np.ndarray]:
        """Routing of `stage_outputs` at `thresholds`: the answering stage (-1: people), the category and the cost."""
        n = len(outputs[0]["confidence"])
        stage = np.full(n, -1)
        cost = np.zeros(n)
        category = np.full(n, ABSTAIN, dtype=object)
        remaining = np.ones(n, dtype=bool)
        last = len(outputs) - 1
        for s, (o, t) in enumerate(zip(outputs, thresholds)):
            cost[remaining] += o["cost"][remaining]
            take = remaining & _stage_answers(o["confidence"], t, final=s == last and not self.defer)
            stage[take] = s
            category[take] = o["category"][take]
            remaining &= ~take
        return {"stage": stage, "category": category, "cost": cost}

    def summary(self) -> dict[str, Any]:
        """What training chose: thresholds, share per stage, share to people, accuracy, cost per 1,000 (held-out)."""
        self._check_fitted()
        plan = self.plan_
        return {
            "stages": list(self.stage_names_),
            "thresholds": [round(t, 4) if t < 1 else "never" for t in self._active_thresholds()],
            "target_accuracy": plan.target_accuracy,
            "feasible": plan.feasible,
            "held_out": plan.n,
            "stage_shares": {nm: round(s, 4) for nm, s in zip(self.stage_names_, plan.stage_shares)},
            "to_people": round(plan.to_people, 4),
            "answered_accuracy": None if plan.answered_accuracy is None else round(plan.answered_accuracy, 4),
            "accuracy_lower": None if plan.accuracy_lower is None else round(plan.accuracy_lower, 4),
            "cost_per_1000": round(plan.cost_per_record * 1000, 6),
            "seconds_per_record": {nm: round(s, 6) for nm, s in zip(self.stage_names_, self.stage_seconds_)},
            "stage_accuracy": {nm: round(a, 4) for nm, a in zip(self.stage_names_, self.stage_accuracy_)},
            **({"drop": round(plan.drop, 4), "drop_upper": round(plan.drop_upper, 4)} if plan.drop is not None else {}),
            **({"note": plan.note} if plan.note else {}),
        }

    def summary_lines(self) -> list[str]:
        """The summary in words, for the CLI."""
        plan = self.plan_
        names = " -> ".join(self.stage_names_)
        shown = " / ".join("never" if t >= 1 else f"{t:.3f}" for t in self._active_thresholds())
        shares = ", ".join(f"{nm} answers {s:.1%}" for nm, s in zip(self.stage_names_, plan.stage_shares))
        lines = [f"cascade {names}: thresholds {shown} (chosen on {plan.n} held-out records)",
                 f"{shares}; left to people {plan.to_people:.1%}"]
        if plan.answered_accuracy is not None:
            lines.append(f"accuracy on answered {plan.answered_accuracy:.1%} (>= {plan.accuracy_lower:.1%} at the bound; "
                         f"target {plan.target_accuracy:.1%}); cost ${plan.cost_per_record * 1000:.6f} per 1,000 records")
        if plan.drop is not None:
            lines.append(f"accuracy lost against the last stage alone on the same records: {plan.drop:.2%} "
                         f"(at most {plan.drop_upper:.2%} at the bound; allowed {self.max_drop:.2%})")
        if plan.note:
            lines.append(plan.note)
        return lines

    # ----- save / load ---------------------------------------------------------------------------------
    def _stage_dir(self, s: int) -> str:
        return f"stages/{s:02d}-{self.stages_[s].name}"

    def _save_weights(self, directory: Path) -> dict[str, Any]:
        listing = []
        for s, stage in enumerate(self.stages_):
            sub = self._stage_dir(s)
            stage.save(directory / sub)
            listing.append({"engine": stage.name, "name": self.stage_names_[s], "dir": sub,
                            "temperature": float(self.temperatures_[s]), "threshold": float(self.thresholds_[s]),
                            "seconds_per_record": self.stage_seconds_[s], "cost_per_record": self.stage_costs_[s],
                            "held_out_accuracy": self.stage_accuracy_[s], "model_id": stage.model_id})
        plan = self.plan_.to_dict()
        (directory / CASCADE_FILE).write_text(json.dumps({"stages": listing, "plan": plan}, indent=2, sort_keys=True) + "\n")
        return {"stages": listing, "plan": plan}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        path = directory / CASCADE_FILE
        data = json.loads(path.read_text(encoding="utf-8"))
        listing = data.get("stages") or []
        if not listing:
            raise EngineError(f"'{directory}': {CASCADE_FILE} lists no stages; save the model again")
        stages = []
        for entry in listing:
            sub = directory / entry["dir"]
            if not sub.is_dir():
                raise EngineError(f"'{directory}': stage folder '{entry['dir']}' is missing; copy the whole model directory")
            stages.append(load_engine(sub))
        self.stages_ = stages
        self.stage_names_ = [e["name"] for e in listing]
        self.temperatures_ = np.asarray([e["temperature"] for e in listing], dtype=float)
        self.thresholds_ = [float(e["threshold"]) for e in listing]
        self.stage_seconds_ = [float(e["seconds_per_record"]) for e in listing]
        self.stage_costs_ = [float(e["cost_per_record"]) for e in listing]
        self.stage_accuracy_ = [float(e["held_out_accuracy"]) for e in listing]
        plan = {k: v for k, v in data["plan"].items() if k in CascadePlan.__dataclass_fields__}
        self.plan_ = CascadePlan(**plan)
        self.added_ = ([], [])

    def _libraries(self) -> tuple[str, ...]:
        names: list[str] = []
        for st in getattr(self, "stages_", []):
            names.extend(st._libraries())
        return tuple(dict.fromkeys(names))


def _stage_names(names: list[str]) -> list[str]:
    """Stage names for `route`: the engine's name, numbered when an engine appears twice."""
    return [nm if names.count(nm) == 1 else f"{nm}#{names[:i + 1].count(nm)}" for i, nm in enumerate(names)]


def _aligned(proba: np.ndarray, stage_classes: Sequence[Any], classes: list[str]) -> np.ndarray:
    """A stage's probabilities in the cascade's column order (classes it lacks get ~0; rows renormalised)."""
    proba = np.asarray(proba, dtype=float)
    stage_classes = [str(c) for c in stage_classes]
    if stage_classes == classes:
        return proba
    out = np.full((len(proba), len(classes)), _EPS)
    col = {c: j for j, c in enumerate(classes)}
    for k, c in enumerate(stage_classes):
        j = col.get(c)
        if j is not None:
            out[:, j] += proba[:, k]
    return out / out.sum(axis=1, keepdims=True)


def _z(confidence_level: float) -> float:
    if float(confidence_level) <= 0.5:
        return 0.0
    from scipy.stats import norm

    return float(norm.ppf(float(confidence_level)))


def _stage_answers(confidence: np.ndarray, threshold: float, *, final: bool) -> np.ndarray:
    """Which records a stage answers: those it did not refuse (a refusal has confidence 0) whose calibrated
    confidence clears its threshold; a last stage that may not defer answers everything it did not refuse.
    The one routing rule, for predictions (`_route`) and for what-if routing of stored outputs (`routed_at`).
    """
    answered = confidence > 0
    return answered if final else answered & (confidence >= threshold)
