"""`run_compare`: run every experiment for every engine and write results.json and the report."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..taxonomy import ABSTAIN, Crosswalk, Taxonomy
from . import _scores
from .audit_section import audit_history
from . import _uncertainty as U
from .costs import PriceTable, load_prices
from .dataset import Dataset
from .experiments import ALL, Comparison, EngineSpec, Progress, Settings, usable_cpus
from .runlog import RunLog

__all__ = ["run_compare", "open_store", "RESULTS", "SCHEMA_VERSION"]

RESULTS = "results.json"
SCHEMA_VERSION = 1


def run_compare(
    data: Dataset,
    taxonomy: Taxonomy | None,
    engines: Sequence[EngineSpec],
    *,
    out_dir: str | Path,
    settings: Settings | None = None,
    prices: PriceTable | None = None,
    store: Any | None = None,
    second_network: tuple[Dataset, Crosswalk] | None = None,
    progress: Progress | None = None,
    notes: Sequence[str] = (),
    write_report: bool = True,
    endpoints: Sequence[EngineSpec] = (),
    jobs: int | None = None,
) -> dict[str, Any]:
    """Run the four experiments and return the results dict (also written to `out_dir/results.json`).

    `endpoints`: LLM engines (e.g. an OpenAI-compatible server) measured once on a stratified sample of the
    test set (`Comparison.measure_endpoint`) instead of running every experiment.

    With a `store`, every prediction is stored under its run id; the results
    name those run ids, so each figure can be recomputed from the two.

    `jobs`: fits run side by side on this many threads (default: the CPUs this process may use); the
    figures do not depend on it.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prices = prices or load_prices()
    log = RunLog(store)
    if store is not None:
        _store_records(store, data, taxonomy, second_network)
    cmp = Comparison(data, taxonomy, engines, settings=settings, log=log, workdir=out / "work",
                     progress=progress, second_network=second_network, jobs=usable_cpus() if jobs is None else jobs)
    with cmp.parallel():
        cmp.precompute()
        lc = cmp.learning_curve()
        bt = cmp.backtest()
        events = cmp.taxonomy_events()
    llm_tokens = _measured_llm_tokens(cmp)
    costs = cmp.cost_speed(prices, bt, llm_tokens=llm_tokens)
    measured = [cmp.measure_endpoint(spec, prices) for spec in endpoints]
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {"name": data.name, "source": data.source, "records": len(data), "categories": len(data.classes),
                    "dated": data.dated, "months": [int(data.months.min()), int(data.months.max())] if data.dated else None,
                    "text_fields": data.extra.get("text_fields", [])},
        "taxonomy": ({"name": cmp.taxonomy.name, "version": cmp.taxonomy.version_id, "categories": len(cmp.taxonomy)}
                     if cmp.taxonomy is not None else {"name": "(labels)", "version": "", "categories": len(data.classes)}),
        "engines": [s.to_dict() for s in engines],
        "settings": cmp.settings.to_dict(),
        "splits": cmp.splits_summary(),
        "learning_curve": lc,
        "backtest": bt,
        "events": events,
        "cost_speed": costs,
        "llm_measured": measured,
        "cascade": cmp.cascade(),
        "audit": audit_history(cmp),  # "How clean is your history?" (compare/audit_section.py)
        "calibration": _calibration(cmp),
        "confusions": _confusions(cmp),
        "uncertainty": _uncertainty(cmp, bt),
        "ceiling": _ceiling(cmp),
        "skipped": cmp.skipped,
        "notes": [*cmp.notes, *notes] + ([f"Resumed: {cmp.resumed} evaluation(s) taken from runs already in the store "
                                           "(same engine settings, training set and records)."] if cmp.resumed else []),
        "resumed": cmp.resumed,
        "store": {"url": str(getattr(store, "url", "")) if store is not None else None},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": usable_cpus(), "jobs": cmp.jobs},
        "runs": [r.to_dict() for r in log.runs.values()],
    }
    from .report import answers, headline

    results["headline"] = headline(results)
    results["answers"] = answers(results)
    results["timings"] = {**cmp.timings, "total_seconds": round(time.perf_counter() - started, 2)}
    (out / RESULTS).write_text(json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8")
    if write_report:
        from .report import write_report as _write

        _write(results, out)
    return results


def open_store(path: str | Path) -> Any:
    """Open the store a comparison writes to, tuned for its many small runs.

    A comparison writes hundreds of runs, each its own transaction; on SQLite,
    WAL with synchronous=NORMAL makes each commit ~10 ms instead of ~90 ms and
    still never corrupts the file (a crash can lose only the last commits, and a
    comparison is rerun anyway).
    """
    import sqlalchemy as sa

    from ..store import Store

    store = Store.open(path)
    if store.engine.dialect.name == "sqlite":
        def _fast(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        sa.event.listen(store.engine, "connect", _fast)
        store.engine.dispose()
    return store


def _store_records(store: Any, data: Dataset, taxonomy: Taxonomy | None, second_network: tuple[Dataset, Crosswalk] | None) -> None:
    """Put the compared records and their labels in the store, so stored predictions can be scored there."""
    from ..records import Record

    version = store.save_taxonomy(taxonomy) if taxonomy is not None else None
    months = data.months.tolist() if data.dated else [None] * len(data)
    store.add_records(
        (Record(id=str(i), text=str(t), fields={} if m is None else {"month": int(m)}, source=data.name, label=str(y))
         for i, t, y, m in zip(data.ids.tolist(), data.texts.tolist(), data.labels.tolist(), months)),
        who="taxonomist compare", taxonomy_version=version,
    )
    if second_network is not None:
        other, crosswalk = second_network
        store.import_crosswalk_history(
            (Record(id=f"{other.name}:{i}", text=str(t), source=other.name, label=str(y))
             for i, t, y in zip(other.ids.tolist(), other.texts.tolist(), other.labels.tolist()) if y in crosswalk.mapping),
            crosswalk, who="taxonomist compare", taxonomy=taxonomy,
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _full_data_runs(cmp: Comparison):
    """Each engine's learning-curve run with all examples (seed 0): what calibration and confusions describe."""
    for spec in cmp.specs:
        runs = cmp.log.select(experiment="learning_curve", engine=spec.display, k=ALL, seed=0)
        if runs:
            yield spec, runs[0]


def _calibration(cmp: Comparison) -> dict[str, Any]:
    out = {}
    for spec, r in _full_data_runs(cmp):
        out[spec.display] = {
            "run_id": r.run_id, "n": r.n, "ece": _scores.ece(r.y_true, r.y_pred, r.confidence),
            "bins": _scores.reliability(r.y_true, r.y_pred, r.confidence),
        }
    return out


def _confusions(cmp: Comparison, top: int = 10, examples: int = 5) -> dict[str, Any]:
    """Per engine (all examples, seed 0): the most confused pairs with record ids, and recall/precision per category.

    Record text (PHI) is added to a pair only with `Settings.show_text` (`compare --show-text`): the report may travel.
    """
    out = {}
    for spec, r in _full_data_runs(cmp):
        counts: dict[tuple[str, str], list[str]] = {}
        for i, t, p in zip(r.ids.tolist(), r.y_true.tolist(), r.y_pred.tolist()):
            if t != p:
                counts.setdefault((t, p), []).append(str(i))
        pairs = sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        rows = []
        for (t, p), ids in pairs:
            row = {"true": t, "predicted": p, "count": len(ids), "true_name": _name(cmp.taxonomy, t),
                   "predicted_name": _name(cmp.taxonomy, p), "record_ids": ids[:examples]}
            if cmp.settings.show_text:
                where = {str(x): j for j, x in enumerate(cmp.data.ids.tolist())}
                row["texts"] = [str(cmp.data.texts[where[x]]) for x in ids[:examples] if x in where]
            rows.append(row)
        per_category = []
        for c in sorted(set(r.y_true.tolist()) | (set(r.y_pred.tolist()) - {ABSTAIN})):
            n_true = int((r.y_true == c).sum())
            n_pred = int((r.y_pred == c).sum())
            tp = int(((r.y_true == c) & (r.y_pred == c)).sum())
            per_category.append({"category": c, "name": _name(cmp.taxonomy, c), "n": n_true, "predicted": n_pred,
                                 "recall": U.proportion(tp / n_true, n_true) if n_true else None,
                                 "precision": U.proportion(tp / n_pred, n_pred) if n_pred else None})
        out[spec.display] = {"run_id": r.run_id, "n": r.n, "pairs": rows, "per_category": per_category}
    return out


def _ceiling(cmp: Comparison) -> dict[str, Any] | None:
    """Generated data only: each engine's distance to the accuracy a perfect reader of the text could reach.

    On the records an engine was scored on (all examples, seed 0): the ceiling counts every record whose text
    determines its category and, among the others, those whose label is the most common of their code pattern
    over the whole data set (the data card's `demo_data.accuracy_ceiling`, restricted to those records).
    """
    extra = cmp.data.extra
    if "text_determines" not in extra:
        return None
    from collections import Counter

    # The best guess for a record whose text does not determine its category: the most common category of its code
    # pattern over the whole data set (a majority taken on a small sample would flatter the ceiling).
    counts: dict[str, Counter] = {}
    for ok, lab, pat in zip(extra["text_determines"].tolist(), cmp.data.labels.tolist(), extra["pattern"].tolist()):
        if not ok:
            counts.setdefault(pat, Counter())[lab] += 1
    guess = {pat: c.most_common(1)[0][0] for pat, c in counts.items()}
    reachable = extra["text_determines"] | np.array([guess.get(p) == y for p, y in zip(extra["pattern"].tolist(), cmp.data.labels.tolist())])
    where = {str(i): j for j, i in enumerate(cmp.data.ids.tolist())}
    out = {}
    for spec, r in _full_data_runs(cmp):
        rows = np.array([where[str(i)] for i in r.ids.tolist()], dtype=int)
        det = extra["text_determines"][rows]
        ceiling = float(reachable[rows].mean())
        acc = float(r.correct.mean())
        out[spec.display] = {
            "run_id": r.run_id, "n": r.n, "ceiling": ceiling, "accuracy": acc, "distance": ceiling - acc,
            "determined_share": float(det.mean()),
            "accuracy_determined": U.proportion(float(r.correct[det].mean()), int(det.sum())) if det.any() else None,
            "accuracy_other": U.proportion(float(r.correct[~det].mean()), int((~det).sum())) if (~det).any() else None,
        }
    return {"engines": out}


def _uncertainty(cmp: Comparison, backtest: dict[str, Any] | None) -> dict[str, Any]:
    """Paired bootstrap differences (engines at k=all, each retrain policy vs never), decay per month, review share.

    Computed from the runs' per-record correctness (see `_uncertainty`); each entry names its runs and seed.
    """
    diffs: list[dict[str, Any]] = []
    full = {spec.display: cmp.log.select(experiment="learning_curve", engine=spec.display, k=ALL) for spec in cmp.specs}
    full = {e: runs for e, runs in full.items() if runs}
    names = list(full)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = U.paired_difference(U.per_record(full[a]), U.per_record(full[b]), seed=cmp.settings.split_seed)
            diffs.append({"key": f"engines/{a}|{b}", "kind": "engines", "a": a, "b": b, "metric": "accuracy",
                          "runs_a": [r.run_id for r in full[a]], "runs_b": [r.run_id for r in full[b]], **d})
    # The learning-curve crossover with its interval: the paired difference at every k, trained minus retrieval.
    for t in (x for x in cmp.specs if x.family == "trained"):
        for r in (x for x in cmp.specs if x.family == "retrieval"):
            for k in cmp.settings.ks:
                rt = cmp.log.select(experiment="learning_curve", engine=t.display, k=str(k))
                rr = cmp.log.select(experiment="learning_curve", engine=r.display, k=str(k))
                seeds = {x.meta["seed"] for x in rt} & {x.meta["seed"] for x in rr}
                rt, rr = [x for x in rt if x.meta["seed"] in seeds], [x for x in rr if x.meta["seed"] in seeds]
                if not rt:
                    continue
                d = U.paired_difference(U.per_record(rt), U.per_record(rr), seed=cmp.settings.split_seed)
                diffs.append({"key": f"crossover/{t.display}|{r.display}/{k}", "kind": "crossover", "a": t.display, "b": r.display,
                              "k": str(k), "metric": "accuracy", "runs_a": [x.run_id for x in rt], "runs_b": [x.run_id for x in rr], **d})
    decay: dict[str, dict[str, Any]] = {}
    for e, body in ((backtest or {}).get("engines") or {}).items():
        pols = body["policies"]
        for name, pol in pols.items():
            runs = [cmp.log[r] for r in pol["run_ids"]]
            decay.setdefault(e, {})[name] = {**U.decay_per_month([x["month"] for x in pol["months"]], [r.correct for r in runs],
                                                                 seed=cmp.settings.split_seed),
                                             "run_ids": list(pol["run_ids"])}
            if name != "never" and "never" in pols:
                never = [cmp.log[r] for r in pols["never"]["run_ids"]]
                d = U.paired_difference(U.per_record(runs), U.per_record(never), seed=cmp.settings.split_seed)
                diffs.append({"key": f"policy/{e}/{name}", "kind": "policy", "engine": e, "a": name, "b": "never",
                              "metric": "accuracy", "runs_a": list(pol["run_ids"]), "runs_b": list(pols["never"]["run_ids"]), **d})
    review: dict[str, Any] = {}
    target = cmp.settings.review_target
    for spec, r in _full_data_runs(cmp):
        review[spec.display] = {"target": target, "run_id": r.run_id,
                                **U.review_share(r.ids.tolist(), r.confidence, r.correct, target=target)}
    return {"method": U.__doc__.strip(), "min_n": U.MIN_N, "differences": diffs, "decay": decay, "review": review}


def _name(taxonomy: Taxonomy | None, code: str) -> str:
    return taxonomy[code].name if taxonomy is not None and code in taxonomy else code


def _measured_llm_tokens(cmp: Comparison) -> dict[str, float] | None:
    """Mean tokens per LLM call, summed over every fitted LLM engine's ledger (None when no LLM ran)."""
    calls = prompt = cached = completion = 0.0
    for fitted in cmp._fits.values():
        if not fitted.fitted:
            continue
        ledger = getattr(fitted.engine, "ledger_", None)
        if ledger is None:
            continue
        n = float(getattr(ledger, "calls", 0) or 0)  # cache hits are not counted as calls
        if n <= 0:
            continue
        calls += n
        prompt += float(getattr(ledger, "prompt_tokens", 0) or 0)
        cached += float(getattr(ledger, "cached_tokens", 0) or 0)
        completion += float(getattr(ledger, "completion_tokens", 0) or 0)
    if calls <= 0:
        return None
    return {"input": prompt / calls, "cached": cached / calls, "output": completion / calls, "calls": calls}
