"""Label audit: find the records of a labelled history whose label looks wrong, with the evidence to judge each.

How it works (`audit`):

1. Cross-fitting: stratified K folds (seeded); each fold's records are scored by
   engines fitted on the other folds only, so no record is judged by a model that
   saw its label. Several engines are averaged column by column; a category
   absent from a fold's training part gets probability 0 there.
2. Confident learning (Northcutt, Jiang, Chuang, JAIR 2021), written here:
   per-category thresholds t_j = mean out-of-fold probability of category j over
   the records labelled j, and the confident joint C[given][true] (records
   labelled i whose probability of j clears t_j, counted under the most likely
   such j). It is kept for inspection (`AuditResult.learning.confident_joint`).
3. How many labels are wrong: label noise of this kind does not depend on the
   text, so among the records the models are surest of the share whose label
   disagrees estimates the flip rate from each predicted category to each other
   one. Texts that do not determine their category (a generic code and remark
   shared by siblings) also disagree, and they are less sure, so that share
   grows with how far down the confidence ranking one counts. The estimate
   therefore takes, per predicted category, the share d labelled i among its
   surest `confident_fraction` f (a quarter by default) and among the surest
   half of those, and extrapolates linearly to the very surest: rate =
   2 d(f/2) - d(f), clipped to [0, d(f/2)] per pair. The sum of these is the
   estimated number of wrong labels; the noise matrix is d(f) per pair scaled
   to that sum, because d(f/2) rests on half as many records and per pair it
   is noisier (`extrapolate=False`: d(f) as it is). Issue 14, generated
   denials, same probabilities and ranking, estimated / true wrong labels:
   seed 7, 80,000: 2,461 / 2,441 (d(f) alone 2,701); seed 11, 80,000: 2,410 /
   2,469 (2,801); seed 7, 20,000: 581 / 593 (668); seed 11, 20,000: 686 / 619
   (761). Closer on all four, and so is the estimate per category (sum of
   |estimated - true| over categories 217-435 vs 232-538 for d(f) alone; the
   extrapolated pairs themselves gave 308-860). Extrapolating from f and 2f
   instead was further on one (502 for 593). Table and commands:
   docs/benchmarks.md, "Label audit".
   Scaled by how many records each category has, this gives the noise matrix,
   the noise rate per category and the most frequent given -> suggested pairs.
   The mean-threshold joint of step 2 counts texts that are merely ambiguous
   between two siblings as noise (on 20,000 generated denials it flagged 2,007
   records for 593 wrong labels), which is why the count comes from the surest
   records instead.
4. Ranking: score = (1 - w) * (1 - p[given]) + w * max(0, p[suggested] - p[given])
   with w = `margin_weight` (self-confidence and margin in one number in [0, 1];
   w = 0 by default: on generated denials pure self-confidence ranked best, see
   `benchmarks/audit.py`, which measures the alternatives); the flagged set is the top of the ranking, as many records as step 3 estimates
   are wrong (prune by noise rate, over all categories at once).

Evidence per suspect: the nearest labelled records by TF-IDF cosine over all the
audited texts (ids and current labels, never their text) and, given a taxonomy,
both categories' definitions.

The audit reads ids, texts and labels only: a record's other fields (such as the
demo data's hidden `label_is_noise`) never reach it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ExperimentError

__all__ = [
    "Neighbour",
    "Suspect",
    "CategoryNoise",
    "ConfusedPair",
    "NoiseEstimate",
    "ConfidentLearning",
    "AuditResult",
    "audit",
    "out_of_fold_proba",
    "confident_learning",
    "noise_estimate",
    "cleaned_labels",
    "records_to_audit",
    "review_evidence",
]

#: A progress callback: (steps done, steps in all, what is being done).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Neighbour:
    """A labelled record close to a suspect (its id and current label; never its text)."""

    id: str
    label: str
    similarity: float


@dataclass(frozen=True)
class Suspect:
    """A record whose label looks wrong: what it says, what it probably is, and why."""

    id: str
    given: str
    suggested: str
    score: float
    rank: int
    p_given: float
    p_suggested: float
    flagged: bool
    neighbours: tuple[Neighbour, ...] = ()
    given_definition: str = ""
    suggested_definition: str = ""

    @property
    def neighbour_labels(self) -> str:
        """`id:label` of each neighbour, space-separated (the suspects CSV column)."""
        return " ".join(f"{n.id}:{n.label}" for n in self.neighbours)


@dataclass(frozen=True)
class CategoryNoise:
    """How many records labelled `category` are estimated to belong to another one."""

    category: str
    records: int
    estimated_wrong: float
    noise_rate: float
    flagged: int


@dataclass(frozen=True)
class ConfusedPair:
    """About `estimated` records labelled `given` look like `suggested`."""

    given: str
    suggested: str
    estimated: float
    flagged: int

    def sentence(self) -> str:
        return f"about {round(self.estimated):,} records labelled {self.given} look like {self.suggested}"


@dataclass(frozen=True)
class NoiseEstimate:
    """The history's estimated label noise: overall, per category, and the most frequent confusions."""

    records: int
    estimated_wrong: float
    noise_rate: float
    flagged: int
    categories: tuple[CategoryNoise, ...]
    pairs: tuple[ConfusedPair, ...]


@dataclass(frozen=True)
class ConfidentLearning:
    """The confident-learning quantities over out-of-fold probabilities (columns = `classes`).

    `thresholds[j]`: mean probability of category j over the records labelled j.
    `confident_joint[i, j]`: records labelled i confidently counted as j (Northcutt et al.).
    `noise_matrix[i, j]`: estimated records labelled i that truly are j (i != j; diagonal 0).
    """

    thresholds: np.ndarray
    confident_joint: np.ndarray
    noise_matrix: np.ndarray

    @property
    def estimated_wrong(self) -> float:
        return float(self.noise_matrix.sum())


@dataclass
class AuditResult:
    """Everything an audit found; `suspects` are ranked, most suspicious first."""

    ids: tuple[str, ...]
    given: np.ndarray
    classes: np.ndarray
    proba: np.ndarray
    score: np.ndarray
    suggested: np.ndarray
    flagged: np.ndarray
    learning: ConfidentLearning
    suspects: list[Suspect]
    engines: tuple[str, ...]
    folds: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    #: Categories left out because they have fewer records than folds (with skip_small), and their record counts.
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        """Indices of all records, most suspicious first."""
        return _order(self.score, self.proba[np.arange(len(self.given)), self.given])

    def noise_estimate(self, *, top_pairs: int = 10) -> NoiseEstimate:
        return noise_estimate(self, top_pairs=top_pairs)


# ----- step 1: out-of-fold probabilities -------------------------------------------------------
def _check_labels(labels: Sequence[str], folds: int) -> None:
    if folds < 2:
        raise ExperimentError(f"--folds must be at least 2 (got {folds}): each record is scored by a model that did not see it")
    if not labels:
        raise ExperimentError("no labelled records to audit; import a labelled history first (`taxonomist import`)")
    counts: dict[str, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    if len(counts) < 2:
        only = next(iter(counts))
        raise ExperimentError(
            f"all {len(labels):,} labelled records are in one category ('{only}'); an audit compares categories, "
            "so it needs at least 2"
        )
    small = sorted((n, c) for c, n in counts.items() if n < folds)
    if small:
        shown = ", ".join(f"'{c}' ({n})" for n, c in small[:8]) + (f", ... ({len(small)} in all)" if len(small) > 8 else "")
        raise ExperimentError(
            f"--folds {folds} needs at least {folds} records in every category; too few in {shown}; "
            + (f"lower --folds (to at most {small[0][0]}) or " if small[0][0] >= 2 else "")
            + "leave them out of the audit (--skip-small)"
        )


def out_of_fold_proba(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    engines: Sequence[str] = ("tfidf",),
    folds: int = 5,
    seed: int = 0,
    engine_params: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int = 1,
    on_progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, proba): each record's probabilities from engines fitted on the other folds, averaged over engines.

    `engine_params` maps an engine name to its keyword parameters. Columns of
    `proba` follow `classes` (sorted category codes). The folds are
    `calibration.out_of_fold_proba`'s (stratified, seeded); `jobs` > 1 fits that
    many folds at once in separate processes (each holds its own copy of the texts).
    """
    from .engines import create_engine
    from .engines.calibration import out_of_fold_proba as cross_fit

    labels = [str(y) for y in labels]
    if len(texts) != len(labels):
        raise ExperimentError(f"{len(texts)} texts but {len(labels)} labels; they must be the same length")
    _check_labels(labels, folds)
    if not engines:
        raise ExperimentError("no engine given; name at least one, e.g. --engines tfidf")
    params = dict(engine_params or {})
    texts = [str(t) for t in texts]
    classes = np.array(sorted(set(labels)), dtype=object)
    proba = np.zeros((len(labels), len(classes)))
    for e, name in enumerate(engines):
        kwargs = dict(params.get(name, {}))

        def fold_done(k: int, total: int, name: str = name, e: int = e) -> None:
            if on_progress is not None:
                on_progress(e * folds + k, len(engines) * folds, f"{name}: fold {k}/{total}")

        if on_progress is not None:
            on_progress(e * folds, len(engines) * folds, f"{name}: {folds} folds" + (f", {jobs} at a time" if jobs > 1 else ""))
        proba += cross_fit(lambda name=name, kwargs=kwargs: create_engine(name, **kwargs), texts, labels, folds=folds,
                           seed=seed, classes=classes, on_fold=fold_done, jobs=jobs)
    if on_progress is not None:
        on_progress(len(engines) * folds, len(engines) * folds, "scored")
    proba /= len(engines)
    sums = proba.sum(axis=1, keepdims=True)
    return classes, np.divide(proba, sums, out=np.zeros_like(proba), where=sums > 0)


# ----- step 2-3: confident learning and the noise estimate ----------------------------------
def confident_learning(
    proba: np.ndarray, given: np.ndarray, *, confident_fraction: float = 0.25, extrapolate: bool = True
) -> ConfidentLearning:
    """Thresholds, confident joint and estimated noise matrix from out-of-fold `proba` and given label indices.

    `extrapolate=False` takes the flip rates among the surest `confident_fraction` as they are (the estimate
    before issue 14's extrapolation, kept for the benchmark's comparison).
    """
    if not 0 < confident_fraction <= 1:
        raise ExperimentError(f"confident_fraction must be in (0, 1] (got {confident_fraction})")
    n, k = proba.shape
    given = np.asarray(given, dtype=int)
    counts = np.bincount(given, minlength=k)
    sums = np.bincount(given, weights=proba[np.arange(n), given], minlength=k)
    # A category nobody is labelled with can never be "confidently" suggested.
    thresholds = np.divide(sums, counts, out=np.full(k, np.inf), where=counts > 0)

    above = proba >= thresholds
    confident = np.where(above, proba, -np.inf).argmax(axis=1)
    has = above.any(axis=1)
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (given[has], confident[has]), 1)

    # Flip rates true j -> given i, from the surest records predicted j: the share labelled i among the surest
    # fraction f of them; the total is the one extrapolated linearly to the very surest from f and f/2 (see the
    # module docstring).
    predicted = proba.argmax(axis=1)
    top = proba.max(axis=1)
    noise = np.zeros((k, k))
    extrapolated = 0.0
    for j in range(k):
        members = np.nonzero(predicted == j)[0]
        if len(members) == 0:
            continue
        ranked = members[np.argsort(-top[members], kind="stable")]
        flips = _flip_rates(ranked, given, j, k, confident_fraction)
        noise[:, j] = flips * len(members)  # noise[given i, true j]
        if extrapolate:
            half = _flip_rates(ranked, given, j, k, confident_fraction / 2)
            extrapolated += float(np.clip(2 * half - flips, 0.0, half).sum()) * len(members)
    if extrapolate and noise.sum() > 0:
        noise *= extrapolated / noise.sum()
    return ConfidentLearning(thresholds=thresholds, confident_joint=joint, noise_matrix=noise)


def _flip_rates(ranked: np.ndarray, given: np.ndarray, j: int, k: int, fraction: float) -> np.ndarray:
    """Share of each given label among the surest `fraction` of `ranked` (records predicted j, surest first); j's own is 0."""
    surest = ranked[: max(1, int(np.ceil(fraction * len(ranked))))]
    rates = np.bincount(given[surest], minlength=k) / len(surest)
    rates[j] = 0.0
    return rates


def _scores(proba: np.ndarray, given: np.ndarray, margin_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score, suggested index, p[given], p[suggested]) for every record."""
    rows = np.arange(len(given))
    p_given = proba[rows, given]
    others = proba.copy()
    others[rows, given] = -np.inf
    suggested = others.argmax(axis=1)
    p_suggested = proba[rows, suggested]
    score = (1 - margin_weight) * (1 - p_given) + margin_weight * np.clip(p_suggested - p_given, 0, None)
    return score, suggested, p_given, p_suggested


def _order(score: np.ndarray, p_given: np.ndarray) -> np.ndarray:
    # Ties in the score (a saturated 1 - p[given] reads 1.0 below p = 1e-16) go to the smaller p[given],
    # then input order.
    return np.lexsort((np.arange(len(score)), p_given, -score))


# ----- evidence ---------------------------------------------------------------------------------
def _neighbours(
    texts: Sequence[str], ids: Sequence[str], labels: np.ndarray, which: np.ndarray, k: int
) -> list[tuple[Neighbour, ...]]:
    """The k most similar other records (TF-IDF cosine) of each record in `which`."""
    if k <= 0 or len(which) == 0:
        return [() for _ in which]
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, dtype=np.float32)
    x = vec.fit_transform(texts)
    out: list[tuple[Neighbour, ...]] = []
    for start in range(0, len(which), 256):
        rows = which[start : start + 256]
        sim = (x[rows] @ x.T).toarray()
        sim[np.arange(len(rows)), rows] = -1.0  # not itself
        take = min(k, sim.shape[1] - 1)
        best = np.argpartition(-sim, take - 1, axis=1)[:, :take] if take > 0 else np.zeros((len(rows), 0), int)
        for r, cand in enumerate(best):
            cand = cand[np.lexsort((cand, -sim[r, cand]))]
            out.append(tuple(Neighbour(ids[c], str(labels[c]), round(float(sim[r, c]), 4)) for c in cand))
    return out


def _definition(taxonomy: Any, code: str) -> str:
    if taxonomy is None or code not in taxonomy:
        return ""
    return taxonomy[code].describe()


# ----- the audit --------------------------------------------------------------------------------
def audit(
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    engines: Sequence[str] = ("tfidf",),
    folds: int = 5,
    seed: int = 0,
    engine_params: Mapping[str, Mapping[str, Any]] | None = None,
    taxonomy: Any = None,
    confident_fraction: float = 0.25,
    margin_weight: float = 0.0,
    top: int | None = None,
    neighbours: int = 5,
    skip_small: bool = False,
    jobs: int = 1,
    on_progress: Progress | None = None,
    oof: tuple[np.ndarray, np.ndarray] | None = None,
    calibrate: bool = True,
) -> AuditResult:
    """Audit a labelled history given as parallel `ids`, `texts` and `labels`.

    `suspects` holds the flagged set, or the `top` records of the ranking when
    `top` is given (flagged or not). `taxonomy` (a `Taxonomy`) adds both
    categories' definitions to each suspect. With `skip_small`, the records of
    categories with fewer records than `folds` are left out (listed in `skipped`)
    instead of raising. `oof`: (classes, proba) already computed by
    `out_of_fold_proba` for the audited records (after skip_small), e.g. cached
    by a benchmark; the engines are then not fitted again. `calibrate`: the
    out-of-fold probabilities are temperature-scaled first (one temperature fitted
    on them against the given labels, `engines.calibration.fit_temperature`), so
    that self-confidence and the confident-learning counts read calibrated
    probabilities rather than an engine's raw scores.
    """
    ids = [str(i) for i in ids]
    labels = [str(y) for y in labels]
    if not (len(ids) == len(texts) == len(labels)):
        raise ExperimentError(f"{len(ids)} ids, {len(texts)} texts and {len(labels)} labels; they must be the same length")
    if len(set(ids)) != len(ids):
        raise ExperimentError("record ids must be unique within an audit; the same id appears twice")
    if not 0 <= margin_weight <= 1:
        raise ExperimentError(f"margin_weight must be in [0, 1] (got {margin_weight})")
    skipped: dict[str, int] = {}
    if skip_small:
        counts: dict[str, int] = {}
        for y in labels:
            counts[y] = counts.get(y, 0) + 1
        skipped = {c: n for c, n in sorted(counts.items()) if n < folds}
        if skipped:
            keep = [i for i, y in enumerate(labels) if y not in skipped]
            ids, texts, labels = [ids[i] for i in keep], [texts[i] for i in keep], [labels[i] for i in keep]
    if oof is not None:
        classes, proba = oof
        if proba.shape != (len(labels), len(classes)) or set(labels) - set(classes.tolist()):
            raise ExperimentError(f"oof: probabilities of shape {proba.shape} do not match {len(labels)} records "
                                  "and their labels; compute them with out_of_fold_proba on the same records")
    else:
        classes, proba = out_of_fold_proba(
            texts, labels, engines=engines, folds=folds, seed=seed, engine_params=engine_params, jobs=jobs,
            on_progress=on_progress,
        )
    given = np.searchsorted(classes, np.asarray(labels, dtype=object))
    temperature = None
    if calibrate:
        from .engines.calibration import fit_temperature, softmax

        temperature = float(fit_temperature(proba, given))
        proba = softmax(np.log(np.clip(proba, 1e-12, 1.0)), temperature)
    learning = confident_learning(proba, given, confident_fraction=confident_fraction)
    score, suggested, p_given, p_suggested = _scores(proba, given, margin_weight)
    order = _order(score, p_given)
    n_flag = min(int(round(learning.estimated_wrong)), len(order))
    flagged = np.zeros(len(order), dtype=bool)
    flagged[order[:n_flag]] = True

    shown = order[: top if top is not None else n_flag]
    given_codes = classes[given]
    evidence = _neighbours([str(t) for t in texts], ids, given_codes, shown, neighbours)
    suspects = [
        Suspect(
            id=ids[i],
            given=str(classes[given[i]]),
            suggested=str(classes[suggested[i]]),
            score=float(score[i]),
            rank=r,
            p_given=float(p_given[i]),
            p_suggested=float(p_suggested[i]),
            flagged=bool(flagged[i]),
            neighbours=evidence[r - 1],
            given_definition=_definition(taxonomy, str(classes[given[i]])),
            suggested_definition=_definition(taxonomy, str(classes[suggested[i]])),
        )
        for r, i in enumerate(shown, 1)
    ]
    return AuditResult(
        ids=tuple(ids), given=given, classes=classes, proba=proba, score=score, suggested=suggested,
        flagged=flagged, learning=learning, suspects=suspects, engines=tuple(engines), folds=folds, seed=seed,
        params={"confident_fraction": confident_fraction, "margin_weight": margin_weight, "temperature": temperature,
                "engine_params": {k: dict(v) for k, v in (engine_params or {}).items()}},
        skipped=skipped,
    )


def noise_estimate(result: AuditResult, *, top_pairs: int = 10) -> NoiseEstimate:
    """Noise rate per category (of the records labelled with it) and the most frequent given -> suggested pairs."""
    k = len(result.classes)
    noise = result.learning.noise_matrix
    counts = np.bincount(result.given, minlength=k)
    flagged_by_given = np.bincount(result.given[result.flagged], minlength=k)
    pair_flags: dict[tuple[int, int], int] = {}
    for i, j in zip(result.given[result.flagged], result.suggested[result.flagged]):
        pair_flags[(int(i), int(j))] = pair_flags.get((int(i), int(j)), 0) + 1
    wrong = noise.sum(axis=1)
    categories = tuple(
        CategoryNoise(
            category=str(result.classes[i]), records=int(counts[i]), estimated_wrong=round(float(wrong[i]), 1),
            noise_rate=round(float(wrong[i] / counts[i]), 4) if counts[i] else 0.0, flagged=int(flagged_by_given[i]),
        )
        for i in np.argsort(-wrong, kind="stable")
        if counts[i]
    )
    cells = [(noise[i, j], i, j) for i in range(k) for j in range(k) if i != j and noise[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    pairs = tuple(
        ConfusedPair(given=str(result.classes[i]), suggested=str(result.classes[j]), estimated=round(float(v), 1),
                     flagged=pair_flags.get((i, j), 0))
        for v, i, j in cells[:top_pairs]
    )
    n = len(result.given)
    total = float(noise.sum())
    return NoiseEstimate(
        records=n, estimated_wrong=round(total, 1), noise_rate=round(total / n, 4) if n else 0.0,
        flagged=int(result.flagged.sum()), categories=categories, pairs=pairs,
    )


def cleaned_labels(result: AuditResult, *, how: str = "relabel", top: int | None = None) -> list[str | None]:
    """The given labels with suspects corrected: flagged (or the `top` ranked) records get the suggested label
    (`how="relabel"`) or None (`how="drop"`)."""
    if how not in ("relabel", "drop"):
        raise ExperimentError(f"how must be 'relabel' or 'drop' (got '{how}')")
    chosen = np.zeros(len(result.given), dtype=bool)
    if top is None:
        chosen = result.flagged
    else:
        chosen[result.order[:top]] = True
    out: list[str | None] = [str(c) for c in result.classes[result.given]]
    for i in np.nonzero(chosen)[0]:
        out[i] = str(result.classes[result.suggested[i]]) if how == "relabel" else None
    return out


def records_to_audit(records: Iterable[Any]) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, labels) of labelled `Record`s; only these three attributes are read."""
    ids, texts, labels = [], [], []
    for r in records:
        if r.label:
            ids.append(r.id)
            texts.append(r.text)
            labels.append(r.label)
    return ids, texts, labels


def review_evidence(item: Mapping[str, Any], current_label: str | None, taxonomy: Any = None) -> dict[str, Any] | None:
    """What a reviewer needs to judge a review item the audit queued (reason `suspected_mislabel`); None otherwise.

    Both categories (code, name, definition from `taxonomy`), the out-of-fold
    probabilities of each, and the nearest labelled records with the labels they
    had when audited (ids and labels only). Used by `records review` and the web
    review page.
    """
    if item.get("reason") != "suspected_mislabel":
        return None
    details = item.get("details") or {}
    given = str(current_label or details.get("given") or "")
    suggested = str(item.get("suggested") or "")

    def category(code: str) -> dict[str, str]:
        cat = taxonomy[code] if taxonomy is not None and code and code in taxonomy else None
        return {"code": code, "name": getattr(cat, "name", "") if cat is not None else "",
                "definition": _definition(taxonomy, code)}

    return {
        "given": category(given), "suggested": category(suggested),
        "p_given": details.get("p_given"), "p_suggested": details.get("p_suggested"), "rank": details.get("rank"),
        "neighbours": [dict(n) for n in details.get("neighbours") or []],
        "engines": details.get("engines") or [],
    }
