"""The service layer: train, classify, evaluate and review over the store. The CLI, compare and the API call it.

Nothing here prints or parses options: functions take a `Settings` (read once),
return typed results, and report progress through a callback. Every decision
is made by `Engine.predict_batch` (the one decision path) and every decision a
command makes about stored or supplied records goes to the store's decision log
(never the text).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EngineError, RecordError, StoreError
from .prediction import Prediction
from .taxonomy import ABSTAIN

if TYPE_CHECKING:
    from .engines.base import Engine
    from .records import Record
    from .store import Store
    from .taxonomy import Taxonomy

__all__ = [
    "Settings",
    "open_store",
    "store_records",
    "TrainResult",
    "train",
    "LoadedModel",
    "load_model",
    "Classification",
    "classify",
    "ClassifyRun",
    "output_row",
    "Evaluation",
    "evaluate",
    "score_predictions",
    "assign_file",
    "review_rows",
    "decision_stats",
    "taxonomy_impact",
]

Progress = Callable[[int, int | None], None]
"""`progress(done, total)`: called as work advances (total None when unknown)."""


def _no_progress(done: int, total: int | None) -> None:
    return None


@dataclass(frozen=True)
class Settings:
    """What every command shares, read once: the store, the home folder, who acts, the default target.

    `db` is a path or SQLAlchemy URL; None means the default store
    ($TAXONOMIST_DB, $TAXONOMIST_HOME/taxonomist.db, else the user data dir).
    `create` allows opening a store file that does not exist yet.
    """

    db: str | None = None
    home: Path | None = None
    who: str = ""
    target_accuracy: float = 0.95
    create: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        home = os.environ.get("TAXONOMIST_HOME")
        base = cls(
            db=os.environ.get("TAXONOMIST_DB") or None,
            home=Path(home) if home else None,
            who=os.environ.get("TAXONOMIST_AUTHOR") or _user(),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return base.replace(**given) if given else base

    def replace(self, **changes: Any) -> Settings:
        from dataclasses import replace

        return replace(self, **changes)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def open_store(settings: Settings, *, create: bool | None = None) -> Store:
    """Open the store; a named store file that does not exist is refused unless `create` (a typo must not make a new one)."""
    from .store import Store

    create = settings.create if create is None else create
    db = settings.db
    if db and "://" not in str(db) and not create:
        path = Path(str(db)).expanduser()
        if not path.exists():
            raise StoreError(
                f"no store at '{db}'; check --db, or pass --create to make a new store there"
            )
    return Store.open(db)


def store_records(
    store: Store,
    *,
    labelled: bool | None = True,
    since: dt.date | None = None,
    until: dt.date | None = None,
    source: str | None = None,
) -> list[Record]:
    """The store's records with their current labels (after every relabel), filtered by date and source."""
    return list(store.records(labelled=labelled, since=since, until=until, source=source))


# ----- train ----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model_id: str
    engine: str
    out: str
    records: int
    classes: int
    train_seconds: float
    taxonomy_version: str = ""
    held_out: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)
    registered: bool = False
    calibration_method: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    engine_name: str,
    records: Sequence[Record],
    *,
    out: str | Path,
    taxonomy: Taxonomy | None = None,
    taxonomy_path: str | Path | None = None,
    params: dict[str, Any] | None = None,
    calibrate: float = 0.0,
    calibrate_folds: int | None = None,
    target_accuracy: float | None = None,
    policy: str = "answered",
    confidence_level: float = 0.95,
    seed: int = 0,
    store: Store | None = None,
    activate: bool = False,
    say: Callable[[str], None] = lambda _m: None,
) -> TrainResult:
    """Fit an engine on labelled records, calibrate it, save it to `out` and register it in `store`.

    Labels must be active codes of `taxonomy` when one is given: a label the
    taxonomy retired with a successor is refused with the fix (relabel the
    store, or train from it with `--db`); nothing is dropped silently.
    With `target_accuracy`, `calibrate` defaults to 0.1 and the threshold is
    chosen under `policy` (see `engines.calibration.choose_threshold`).
    `calibrate_folds=K` instead calibrates on out-of-fold probabilities of every
    record (K extra fits; the model itself is fitted on all of them): a
    threshold chosen on thousands of rows rather than a 10% hold-out promises
    the same accuracy at a larger and steadier coverage. By default (None) an
    engine that is cheap to refit (`Engine.cheap_to_refit`) uses 5 folds when
    a target is given and no hold-out share is; others use the hold-out.
    """
    from .engines import create_engine
    from .engines.calibration import calibrate as fit_calibration
    from .splits import stratified_split

    if not records:
        raise RecordError("no labelled records to train on; import some, or check --since/--until/--source")
    unlabelled = [r for r in records if not r.label]
    if unlabelled:
        raise RecordError(
            f"{len(unlabelled)} record(s) have no label (first: id '{unlabelled[0].id}'); label them, drop them, "
            "or name the label column with --label-col"
        )
    if taxonomy is not None:
        counts = Counter(r.label for r in records if r.label not in set(taxonomy.codes))
        if counts:
            shown = ", ".join(f"{c} ({n})" for c, n in counts.most_common(6))
            hints = []
            for code in counts:
                if code in taxonomy and taxonomy[code].successors:
                    hints.append(f"{code} → {'/'.join(taxonomy[code].successors)}")
            fix = (f"the taxonomy changed since these labels were written ({'; '.join(hints[:4])}): train from the "
                   "store, whose history follows every change (`taxonomist train ENGINE --db D`), or relabel the file"
                   if hints else "add them with `taxonomist taxonomy add` or fix the labels")
            raise RecordError(
                f"{sum(counts.values())} record(s) carry labels that are not active in taxonomy {taxonomy.version_id}: "
                f"{shown}; {fix}"
            )
    model = create_engine(engine_name, **(params or {}))
    # An engine that takes the target itself (the cascade) chooses its thresholds on cross-fitted data: no hold-out.
    own_target = "target_accuracy" in model.get_params()
    if own_target:
        if target_accuracy is not None:
            model.set_params(target_accuracy=target_accuracy)
        if "confidence_level" in model.get_params() and "confidence_level" not in (params or {}):
            model.set_params(confidence_level=confidence_level)
        calibrate, calibrate_folds = 0.0, 0
    else:
        if calibrate_folds is None:
            cheap = getattr(type(model), "cheap_to_refit", False)
            calibrate_folds = 5 if target_accuracy is not None and calibrate <= 0 and cheap else 0
        if calibrate_folds >= 2:
            calibrate = 0.0
        elif target_accuracy is not None and calibrate <= 0:
            calibrate = 0.1
    if taxonomy is not None and "taxonomy" in model.get_params():
        model.set_params(taxonomy=str(taxonomy_path) if taxonomy_path is not None else taxonomy)
    labels = np.array([r.label for r in records], dtype=object)
    if calibrate > 0:
        fit_idx, held_idx = stratified_split(labels, calibrate, seed)
    else:
        fit_idx, held_idx = np.arange(len(records)), np.array([], dtype=int)
    fit_records = [records[i] for i in fit_idx]
    held = [records[i] for i in held_idx]
    say(f"fitting {engine_name} on {len(fit_records)} records, {len({r.label for r in fit_records})} categories"
        + (f"; {len(held)} held out for calibration" if held else ""))
    model.fit([r.text for r in fit_records], [r.label for r in fit_records], ids=[r.id for r in fit_records])
    if taxonomy is not None and not getattr(model, "taxonomy_version_", ""):
        model.taxonomy_version_ = taxonomy.version_id
    result = TrainResult(
        model_id="", engine=engine_name, out=str(out), records=len(fit_records), classes=len(model.classes_),
        train_seconds=round(float(model.train_seconds_), 2), taxonomy_version=str(getattr(model, "taxonomy_version_", "") or ""),
        held_out=len(held), calibration_method="hold-out" if held else "",
    )
    cal = None
    cal_args = dict(threshold="auto" if target_accuracy is not None else None,
                    min_accuracy=target_accuracy if target_accuracy is not None else 0.95,
                    confidence_level=confidence_level, policy=policy)
    if calibrate_folds and calibrate_folds >= 2:
        from .engines.calibration import calibrate_from_proba, out_of_fold_proba

        say(f"cross-fitting {calibrate_folds} folds for calibration (every record scored by a model that did not see it)")
        oof = out_of_fold_proba(lambda: create_engine(engine_name, **model.get_params()), [r.text for r in records],
                                [r.label for r in records], folds=calibrate_folds, seed=seed, classes=model.classes_,
                                on_fold=lambda k, n: say(f"fold {k}/{n} done"))
        cal = calibrate_from_proba(model, oof, [r.label for r in records], **cal_args)
        result.held_out = len(records)
        result.calibration_method = f"{calibrate_folds}-fold cross-fitting"
    elif held:
        cal = fit_calibration(model, [r.text for r in held], [r.label for r in held], **cal_args)
    if cal is not None:
        result.calibration = {
            "temperature": round(cal.temperature, 4), "ece_before": round(cal.ece_before or 0.0, 4),
            "ece_after": round(cal.ece_after or 0.0, 4), "threshold": cal.threshold, "policy": cal.policy,
            "target_accuracy": target_accuracy, "held_out_accuracy": round(cal.accuracy or 0.0, 4),
            "coverage": round(cal.coverage, 4) if cal.coverage is not None else None,
            "answered_accuracy": round(cal.answered_accuracy, 4) if cal.answered_accuracy is not None else None,
        }
        if target_accuracy is not None:
            if cal.max_coverage_note:
                result.notes.append(f"no threshold reaches {target_accuracy:.0%} on answered records: "
                                    f"{cal.max_coverage_note}; every record will go to review")
            elif cal.threshold is not None:
                result.notes.append(
                    f"held-out accuracy is {cal.accuracy:.1%} on {cal.n} rows; at threshold {cal.threshold:.3f} the "
                    f"model answers {cal.coverage:.1%} of records, {cal.answered_accuracy:.1%} of them right "
                    f"(>= {target_accuracy:.0%} at {confidence_level:.0%} confidence); the other "
                    f"{1 - cal.coverage:.1%} go to review"
                )
            else:
                result.notes.append(f"no threshold keeps overall accuracy >= {target_accuracy:.0%}; none set")
    if own_target and hasattr(model, "summary"):
        result.calibration = model.summary()
        result.notes.extend(model.summary_lines())
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save(out)
    result.model_id = model.model_id
    if store is not None:
        store.save_model(model.manifest(), Path(out).resolve(), metrics={**result.calibration, "records": len(fit_records)},
                         status="active" if activate else None)
        result.registered = True
    return result


# ----- models ---------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    engine: Engine
    path: Path
    model_id: str
    registered: dict[str, Any] | None = None  # the store's row, when the model came from the registry


def load_model(ref: str | Path, store: Store | None = None) -> LoadedModel:
    """A model from a directory, or from the store's registry by id (or unique prefix) or `active`."""
    from .engines import load_engine

    path = Path(str(ref)).expanduser()
    if path.is_dir():
        engine = load_engine(path)
        row = None
        if store is not None:
            try:
                row = store.model(engine.model_id)
            except StoreError:
                row = None
        return LoadedModel(engine, path, engine.model_id, row)
    if store is None:
        raise EngineError(f"model '{ref}' is not a directory; pass a model directory, or --db to look it up in a store")
    row = store.model(str(ref))
    if not row.get("path") or not Path(row["path"]).is_dir():
        raise EngineError(
            f"model {row['id']} is registered but its directory '{row.get('path')}' is gone; train it again or "
            "register the moved directory (`taxonomist models register DIR`)"
        )
    engine = load_engine(row["path"])
    if engine.model_id != row["id"]:
        raise EngineError(
            f"the directory '{row['path']}' now holds model {engine.model_id}, not the registered {row['id']}; "
            "register it again or restore the directory"
        )
    return LoadedModel(engine, Path(row["path"]), row["id"], row)


# ----- classify -------------------------------------------------------------------------------
@dataclass
class Classification:
    """What a classify run did: counts by outcome, the run id in the decision log, the version warning."""

    run_id: str | None
    model_id: str
    taxonomy_version: str
    records: int = 0
    answered: int = 0
    reasons: Counter = field(default_factory=Counter)
    warning: str = ""
    skipped: int = 0  # input rows that were not records (no text, no id)

    @property
    def coverage(self) -> float:
        return self.answered / self.records if self.records else 0.0


def classify(
    engine: Engine,
    records: Iterable[Record],
    *,
    store: Store | None = None,
    taxonomy: Taxonomy | None = None,
    batch_size: int = 256,
    top_k: int = 3,
    to_review: bool = True,
    who: str = "",
    total: int | None = None,
    on_batch: Callable[[list[Record], list[Prediction]], None] | None = None,
    progress: Progress = _no_progress,
    warn: Callable[[str], None] = lambda _m: None,
) -> Classification:
    """Classify records in batches through the one decision path; log every decision in `store`.

    `taxonomy` (default: the store's latest) is the version decisions are
    valid in: a model trained on an older version has its answers mapped or
    abstaining, and `warn` is called once naming both versions. NONE decisions
    join the review queue when `to_review`. `on_batch(records, predictions)`
    is called after each batch is logged (the CLI writes its output file there).
    Without a store no evidence is computed (`Prediction.evidence` is empty): only the log keeps it.
    """
    with ClassifyRun(engine, store=store, taxonomy=taxonomy, to_review=to_review, who=who, warn=warn) as run:
        batch: list[Record] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= batch_size:
                _classify_batch(engine, batch, run, top_k, on_batch)
                progress(run.result.records, total)
                batch = []
        if batch:
            _classify_batch(engine, batch, run, top_k, on_batch)
            progress(run.result.records, total)
    return run.result


def _classify_batch(engine, batch, run: ClassifyRun, top_k, on_batch) -> None:
    # Evidence goes to the decision log only; without a store it would be computed and thrown away.
    preds = engine.predict_batch([r.text for r in batch], ids=[r.id for r in batch], top_k=top_k, code_map=run.code_map,
                                 evidence=run.store is not None)
    run.log([r.id for r in batch], preds)
    if on_batch is not None:
        on_batch(batch, preds)


class ClassifyRun:
    """The bookkeeping of one classify run, whoever calls `predict_batch` (this process, or Ray's workers).

    Opening it resolves the taxonomy the decisions are valid in (the store's
    latest by default) into `code_map` (pass it to `predict_batch`), warns once
    when the model was trained on another version, and starts a run in the
    decision log; `log(ids, predictions)` writes a batch of decisions there (NONE
    ones to the review queue when `to_review`) and counts them in `result`;
    leaving it records the run as ok, or interrupted on an exception.
    """

    def __init__(self, engine: Engine, *, store: Store | None = None, taxonomy: Taxonomy | None = None,
                 to_review: bool = True, who: str = "", warn: Callable[[str], None] = lambda _m: None,
                 params: dict[str, Any] | None = None) -> None:
        if taxonomy is None and store is not None:
            taxonomy = store.get_taxonomy()
        self.store, self.to_review, self.who = store, to_review, who
        self.code_map = engine.code_map(taxonomy) if taxonomy is not None else None
        self.result = Classification(
            run_id=None, model_id=engine.model_id,
            taxonomy_version=self.code_map.current_version if self.code_map else str(getattr(engine, "taxonomy_version_", "")))
        if self.code_map is not None and self.code_map.changed:
            self.result.warning = self.code_map.summary()
            warn(self.result.warning)
        self._params = {"model_id": engine.model_id, "taxonomy_version": self.result.taxonomy_version, **(params or {})}

    def __enter__(self) -> ClassifyRun:
        if self.store is not None:
            self.result.run_id = self.store.start_run("classify", self._params)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.store is None or self.result.run_id is None:
            return
        r = self.result
        summary = {"records": r.records, "answered": r.answered, "reasons": dict(r.reasons)}
        if exc_type is None:
            self.store.finish_run(r.run_id, "ok", summary)
            return
        try:
            self.store.finish_run(r.run_id, "interrupted", summary)
        except StoreError:
            # A Ctrl-C inside a batch's commit can leave that transaction's lock held until the interrupt has
            # unwound; marking the run then fails on the lock. The run stays 'running' in the log, and the
            # interrupt (exit 130, how to resume) is what the user must see, not "the store is locked".
            pass

    def log(self, ids: Sequence[str], preds: Sequence[Prediction]) -> None:
        store, result = self.store, self.result
        if store is not None:
            store.add_predictions(zip(ids, preds), run_id=result.run_id)
            if self.to_review:
                store.add_review_items(
                    ({"record_id": rid, "reason": p.reason, "score": p.confidence,
                      "suggested": p.alternatives[0].category if p.alternatives else None, "model_id": p.model_id,
                      "details": {k: p.extra[k] for k in ("note", "model_category") if k in p.extra}}
                     for rid, p in zip(ids, preds) if p.category == ABSTAIN),
                    who=self.who or _user(), run_id=result.run_id,
                )
        self.count([p.category for p in preds], [p.reason for p in preds])

    def count(self, categories: Sequence[str], reasons: Sequence[str | None]) -> None:
        """Count decisions in `result` without logging them (a run without a store)."""
        result = self.result
        for category, reason in zip(categories, reasons):
            result.records += 1
            if category == ABSTAIN:
                result.reasons[reason or "none"] += 1
            else:
                result.answered += 1
                if reason:
                    result.reasons[reason] += 1


def output_row(record_id: str, p: Prediction) -> dict[str, Any]:
    """What a predictions file holds of one decision (no text): the columns of `classify --output`."""
    return {"id": record_id, "category": p.category, "confidence": round(p.confidence, 4), "reason": p.reason,
            "alternatives": [{"category": a.category, "score": round(a.score, 4)} for a in p.alternatives],
            "model_id": p.model_id, "taxonomy_version": p.taxonomy_version}


# ----- evaluate -------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """Figures on labelled records, as review routing needs them."""

    model_id: str
    records: int
    coverage: float  # share answered (not NONE)
    answered_accuracy: float | None  # accuracy on the answered records
    accuracy: float  # over all records, NONE counted wrong
    top1_accuracy: float  # the model's best guess on every record, ignoring abstention
    macro_f1: float
    ece: float | None
    abstain_reasons: dict[str, int]
    top_confusions: list[dict[str, Any]]
    taxonomy_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        d["abstain_rate"] = 1.0 - self.coverage
        return d


def score_predictions(truth: Sequence[str], preds: Sequence[Prediction], *, model_id: str = "",
                      oos_label: str | None = None) -> Evaluation:
    """Coverage, accuracy on answered and overall, reasons, confusions: from decisions, as made."""
    from . import metrics

    truth = [str(t) for t in truth]
    pred = np.array([p.category for p in preds], dtype=object)
    top = np.array([p.alternatives[0].category if p.alternatives else p.category for p in preds], dtype=object)
    conf = np.array([p.alternatives[0].score if p.alternatives else p.confidence for p in preds], dtype=float)
    t = np.asarray(truth, dtype=object)
    answered = pred != ABSTAIN
    known = t != oos_label if oos_label else np.ones(len(t), dtype=bool)
    n = len(t)
    ev = Evaluation(
        model_id=model_id,
        records=n,
        coverage=float(answered.mean()) if n else 0.0,
        answered_accuracy=float((pred[answered] == t[answered]).mean()) if answered.any() else None,
        accuracy=metrics.accuracy(truth, pred),
        top1_accuracy=float((top == t).mean()) if n else 0.0,
        macro_f1=metrics.macro_f1(truth, pred),
        ece=metrics.ece(conf[known], (top == t)[known]) if known.any() else None,
        abstain_reasons=dict(Counter(p.reason or "none" for p in preds if p.category == ABSTAIN)),
        top_confusions=[{"true": a, "predicted": b, "count": c} for a, b, c in metrics.top_confusions(truth, pred, 10)],
        taxonomy_version=preds[0].taxonomy_version if preds else "",
    )
    if oos_label:
        ev.extra.update(metrics.oos_metrics(truth, pred, oos_label=oos_label))
    return ev


def evaluate(
    engine: Engine,
    records: Sequence[Record],
    *,
    taxonomy: Taxonomy | None = None,
    oos_label: str | None = None,
    batch_size: int = 512,
    progress: Progress = _no_progress,
) -> Evaluation:
    """Score a model on labelled records through the one decision path (no decision is logged)."""
    code_map = engine.code_map(taxonomy) if taxonomy is not None else None
    preds: list[Prediction] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        preds.extend(engine.predict_batch([r.text for r in chunk], top_k=3, evidence=False, code_map=code_map))
        progress(len(preds), len(records))
    return score_predictions([r.label for r in records], preds, model_id=engine.model_id, oos_label=oos_label)


# ----- review -----------------------------------------------------------------------------------
def assign_file(store: Store, path: Path, *, who: str) -> int:
    """Apply a CSV of decisions (`id,category`) in one transaction through the label journal."""
    import csv

    if not path.is_file():
        raise RecordError(f"decisions file '{path}' does not exist")
    pairs: list[tuple[str, str]] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        id_col = cols.get("id") or cols.get("record_id")
        cat_col = cols.get("category") or cols.get("label")
        if not id_col or not cat_col:
            raise RecordError(f"'{path}': expected columns id,category (found: {', '.join(reader.fieldnames or []) or 'none'})")
        for line, row in enumerate(reader, 2):
            rid, cat = (row.get(id_col) or "").strip(), (row.get(cat_col) or "").strip()
            if not rid or not cat:
                raise RecordError(f"'{path}' line {line}: both id and category are required; nothing was assigned")
            pairs.append((rid, cat))
    if not pairs:
        raise RecordError(f"'{path}' has no decisions")
    written = store.assign_many(pairs, who=who, reason="review:file")
    store.close_review_items({rid for rid, _ in pairs}, who=who, resolution="corrected")
    return written


def review_rows(store: Store, *, limit: int = 50, reason: str | None = None, excerpt: int = 80,
                model: LoadedModel | None = None) -> list[dict[str, Any]]:
    """The review queue joined with what a reviewer needs: text excerpt, current label, the model's suggestion.

    Records whose label is not an active code (after a split, without an item)
    are included too. The suggestion comes from the item, else the latest
    decision, else `model` when given.
    """
    items = store.review_queue(reason=reason)
    seen = {i["record_id"] for i in items}
    for rid, cat in store.needs_review():
        if rid not in seen:
            items.append({"record_id": rid, "reason": "not_active", "suggested": None, "score": None,
                          "current_label": cat, "details": {}})
            seen.add(rid)
    items = items[:limit]
    ids = [i["record_id"] for i in items]
    records = {r.id: r for r in store.records(ids)}
    latest = store.latest_decisions(ids)
    missing = [rid for rid in ids if not next((i for i in items if i["record_id"] == rid), {}).get("suggested")
               and rid not in latest and rid in records]
    fresh: dict[str, Prediction] = {}
    if model is not None and missing:
        preds = model.engine.predict_batch([records[r].text for r in missing], ids=missing, evidence=False,
                                           taxonomy=store.get_taxonomy())
        fresh = dict(zip(missing, preds))
    out = []
    for item in items:
        rid = item["record_id"]
        rec = records.get(rid)
        suggestion, score = item.get("suggested"), item.get("score")
        if not suggestion and rid in latest:
            d = latest[rid]
            alts = d.get("alternatives") or []
            suggestion = d["category"] if d["category"] != ABSTAIN else (alts[0]["category"] if alts else None)
            score = d.get("confidence")
        if not suggestion and rid in fresh:
            p = fresh[rid]
            suggestion = p.category if p.category != ABSTAIN else (p.alternatives[0].category if p.alternatives else None)
            score = p.confidence
        text = rec.text if rec is not None else ""
        out.append({
            "record_id": rid, "reason": item["reason"], "current_label": item.get("current_label"),
            "suggested": suggestion, "score": score,
            "excerpt": (text[:excerpt] + ("…" if len(text) > excerpt else "")) if text else "",
            "details": item.get("details") or {},
        })
    return out


# ----- the review service: statistics and taxonomy impact -----------------------------------------
def decision_stats(store: Store, *, model_id: str | None = None, months: int = 12) -> dict[str, Any]:
    """What the decision log says: volume, coverage, abstain reasons, category mix by month, and a drift signal.

    Months are those of the decision (when it was made), the latest `months`.
    Drift compares the latest month against the training period: the category
    mix of the store's current labels (what `train` reads) by total variation
    distance (0 same mix, 1 disjoint), and mean confidence against the model's
    first month of decisions (the closest the log has to its training period).
    Only the decisions of `model_id` count when given.
    """
    volume: Counter = Counter()
    answered: Counter = Counter()
    conf_sum: Counter = Counter()
    reasons: Counter = Counter()
    mix: dict[str, Counter] = {}
    for d in store.iter_predictions(model_id):
        created = d["created"]
        month = created.strftime("%Y-%m") if created is not None else "undated"
        volume[month] += 1
        conf_sum[month] += float(d["confidence"] or 0.0)
        mix.setdefault(month, Counter())[d["category"]] += 1
        if d["category"] == ABSTAIN:
            reasons[d["reason"] or "none"] += 1
        else:
            answered[month] += 1
    shown = sorted(volume)[-months:]
    total = sum(volume.values())
    labelled = store.stats()["by_category"]
    drift: dict[str, Any] = {"reference": "current labels in the store (the training data)", "month": None,
                             "mix_shift": None, "mean_confidence": None, "reference_confidence": None,
                             "confidence_shift": None}
    if shown:
        latest = shown[-1]
        drift["month"] = latest
        answered_mix = Counter({c: n for c, n in mix[latest].items() if c != ABSTAIN})
        drift["mix_shift"] = round(_total_variation(answered_mix, Counter(labelled)), 4) if labelled else None
        first = sorted(volume)[0]
        drift["mean_confidence"] = round(conf_sum[latest] / volume[latest], 4)
        drift["reference_confidence"] = round(conf_sum[first] / volume[first], 4)
        drift["reference_month"] = first
        drift["confidence_shift"] = round(drift["mean_confidence"] - drift["reference_confidence"], 4)
    return {
        "model_id": model_id,
        "decisions": total,
        "answered": sum(answered.values()),
        "coverage": round(sum(answered.values()) / total, 4) if total else None,
        "abstain_reasons": dict(reasons.most_common()),
        "by_month": [
            {"month": m, "decisions": volume[m], "coverage": round(answered[m] / volume[m], 4),
             "mean_confidence": round(conf_sum[m] / volume[m], 4), "categories": dict(mix[m].most_common())}
            for m in shown
        ],
        "labelled_mix": dict(sorted(labelled.items())),
        "drift": drift,
    }


def _total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def taxonomy_impact(store: Store, change: Any, *, engine: Engine | None = None) -> dict[str, Any]:
    """What applying a taxonomy `Change` would do, before it is applied: nothing is written.

    Counts the current labels that would be relabelled (per old code) or sent to
    review, the records whose latest decision names a changed code, and, for
    `engine`, how each of its changed codes would read in the new version
    (`maps` to a successor or `abstains` to review), from `engine.code_map`.
    """
    by_category = store.stats()["by_category"]
    relabel = {str(k): str(v) for k, v in change.relabel.items()}
    review = [str(c) for c in change.review]
    touched = set(relabel) | set(review)
    latest: dict[str, str] = {}
    for d in store.iter_predictions():
        latest[d["record_id"]] = d["category"]
    decisions = Counter(c for c in latest.values() if c in touched)
    out: dict[str, Any] = {
        "operation": change.entry.op,
        "summary": change.entry.summary,
        "new_version": change.taxonomy.version_id,
        "relabelled": {c: by_category.get(c, 0) for c in relabel},
        "relabelled_total": sum(by_category.get(c, 0) for c in relabel),
        "mapping": relabel,
        "to_review": {c: by_category.get(c, 0) for c in review},
        "to_review_total": sum(by_category.get(c, 0) for c in review),
        "decisions_affected": dict(decisions),
        "decisions_affected_total": sum(decisions.values()),
        "model": None,
    }
    if engine is not None:
        cmap = engine.code_map(change.taxonomy)
        codes = {code: {"outcome": "maps" if fate.target is not None else "abstains", "target": fate.target,
                        "reason": fate.reason, "note": fate.note}
                 for code, fate in cmap.fates.items() if fate.reason}
        out["model"] = {"model_id": engine.model_id, "changed_codes": codes,
                        "maps": sorted(c for c, v in codes.items() if v["outcome"] == "maps"),
                        "abstains": sorted(c for c, v in codes.items() if v["outcome"] == "abstains")}
    return out
