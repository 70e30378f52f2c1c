"""The weekly loop's promise, measured: train on the store with a target accuracy, classify later months, evaluate.

    python benchmarks/operational_core.py --seed 7 --records 20000 [--engine tfidf] [--target 0.95] [--folds 0]
        [--splits 10] [--json benchmarks/results/operational_core_splits_seed7.json]

Generates denials, imports them into a fresh SQLite store and runs, through the service layer (what the CLI
calls):

1. temporal: train on months 1-12 from the store with `--target-accuracy`, classify months 13-18 into the
   decision log, evaluate: coverage and accuracy on the answered records (drift makes the later months harder:
   the figures must be true, not >= target);
2. random: train on a random 80% of months 1-12 and evaluate on the other 20%: accuracy on the answered
   records must be >= the target at the printed coverage (with its 95% Wilson interval).

Prints a table and writes JSON with the CPU model and load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from taxonomist import service  # noqa: E402
from taxonomist.engines.calibration import wilson_interval  # noqa: E402
from taxonomist.store import Store  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of k/n (the project's `wilson_interval`); (0, 0) when nothing was answered."""
    if n == 0:
        return (0.0, 0.0)
    lo, hi = wilson_interval(k, n)
    return float(lo), float(hi)


def generated_store(work: Path, seed: int, records: int):
    """Generate denials into `work/data`, import them into a fresh store `work/d.db`; (taxonomy, end of month 12)."""
    from taxonomist.demo_data import generate
    from taxonomist.records import read_records
    from taxonomist.taxonomy import load_taxonomy

    generate(work / "data", seed=seed, records=records)
    tax = load_taxonomy(work / "data" / "taxonomy.yaml")
    recs = read_records(work / "data" / "denials.parquet", taxonomy=tax).records
    with Store.open(work / "d.db") as store:
        store.save_taxonomy(tax)
        store.add_records(recs, who="benchmark", taxonomy_version=tax.version_id)
    first = min(r.date for r in recs if r.date)
    year_end = dt.date(first.year, 12, 31) if first.month == 1 else first.replace(year=first.year + 1) - dt.timedelta(days=1)
    return tax, year_end


def random_split(history: list, seed: int, r: int) -> tuple[list, list]:
    """Random split `r` of the history: 80% to train, 20% to test (split 0, seeded by `seed` alone, is the one
    reported since session 1)."""
    rng = random.Random(seed if r == 0 else f"{seed}-{r}")
    shuffled = history[:]
    rng.shuffle(shuffled)
    cut = int(len(shuffled) * 0.8)
    return shuffled[:cut], shuffled[cut:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--engine", default="tfidf")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--folds", type=int, default=None, help="calibration folds (default: what train chooses; 0: a 10%% hold-out)")
    ap.add_argument("--splits", type=int, default=1,
                    help="random 80/20 splits of months 1-12 to score (the first is the one always reported; "
                         "more show how far one test sample of ~1,800 records moves the figure)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opcore-"))
    t0 = time.perf_counter()
    tax, year_end = generated_store(work, args.seed, args.records)
    with Store.open(work / "d.db") as store:
        later_start = year_end + dt.timedelta(days=1)
        later_end = (later_start.replace(month=later_start.month + 6) if later_start.month <= 6 else
                     later_start.replace(year=later_start.year + 1, month=later_start.month - 6)) - dt.timedelta(days=1)
        extra = {"calibrate_folds": args.folds} if args.folds is not None else {}
        history = service.store_records(store, until=year_end)
        trained = service.train(args.engine, history, out=work / "m", taxonomy=tax, target_accuracy=args.target,
                                store=store, activate=True, **extra)
        loaded = service.load_model("active", store)
        later = service.store_records(store, labelled=None, since=later_start, until=later_end)
        cls = service.classify(loaded.engine, later, store=store)
        ev_later = service.evaluate(loaded.engine, service.store_records(store, since=later_start, until=later_end),
                                    taxonomy=store.get_taxonomy())

        randoms = []
        for r in range(max(1, args.splits)):
            train_part, test_part = random_split(history, args.seed, r)
            rand_trained = service.train(args.engine, train_part, out=work / f"m_random{r}", taxonomy=tax,
                                         target_accuracy=args.target, **extra)
            rand_model = service.load_model(work / f"m_random{r}")
            ev_random = service.evaluate(rand_model.engine, test_part, taxonomy=tax)
            name = "random (80/20 of months 1-12)" + (f", split {r}" if r else "")
            randoms.append((name, rand_trained, ev_random))

    rows = []
    for name, tr, ev in (("temporal (train months 1-12, test 13-18)", trained, ev_later), *randoms):
        answered = round(ev.coverage * ev.records)
        k = round((ev.answered_accuracy or 0.0) * answered)
        lo, hi = wilson(k, answered)
        rows.append({
            "split": name, "engine": args.engine, "target": args.target, "train_records": tr.records,
            "held_out": tr.held_out, "threshold": tr.calibration.get("threshold"),
            "heldout_coverage": tr.calibration.get("coverage"), "heldout_answered_accuracy": tr.calibration.get("answered_accuracy"),
            "test_records": ev.records, "coverage": round(ev.coverage, 4),
            "answered_accuracy": round(ev.answered_accuracy, 4) if ev.answered_accuracy is not None else None,
            "answered_accuracy_ci95": [round(lo, 4), round(hi, 4)], "accuracy_overall": round(ev.accuracy, 4),
            "top1_accuracy": round(ev.top1_accuracy, 4), "notes": tr.notes,
        })
    out = {"seed": args.seed, "records": args.records, "folds": args.folds, "rows": rows,
           "decision_log": {"run_id": cls.run_id, "records": cls.records, "answered": cls.answered,
                            "reasons": dict(cls.reasons)},
           "seconds": round(time.perf_counter() - t0, 1), **machine()}
    print(f"{'split':42} {'held-out cov':>12} {'test cov':>9} {'acc answered (95% CI)':>24} {'acc overall':>11} {'top-1':>6}")
    for r in rows:
        ci = r["answered_accuracy_ci95"]
        acc = f"{r['answered_accuracy']:.4f} ({ci[0]:.3f}-{ci[1]:.3f})" if r["answered_accuracy"] is not None else "n/a"
        print(f"{r['split']:42} {r['heldout_coverage'] or 0:12.4f} {r['coverage']:9.4f} {acc:>24} "
              f"{r['accuracy_overall']:11.4f} {r['top1_accuracy']:6.4f}")
    for r in rows:
        for n in r["notes"]:
            print(f"  {r['split']}: {n}")
    random_rows = [r for r in rows if r["split"].startswith("random")]
    if len(random_rows) > 1:
        met = sum((r["answered_accuracy"] or 0.0) >= args.target for r in random_rows)
        right = sum(round((r["answered_accuracy"] or 0.0) * round(r["coverage"] * r["test_records"])) for r in random_rows)
        answered = sum(round(r["coverage"] * r["test_records"]) for r in random_rows)
        lo, hi = wilson(right, answered)
        out["random_splits"] = {"splits": len(random_rows), "met_target": met, "pooled_answered_accuracy": round(right / answered, 4),
                                "pooled_ci95": [round(lo, 4), round(hi, 4)], "answered": answered,
                                "mean_coverage": round(sum(r["coverage"] for r in random_rows) / len(random_rows), 4)}
        print(f"random splits: {met} of {len(random_rows)} at >= {args.target:.0%} on answered; pooled "
              f"{right / answered:.4f} ({lo:.3f}-{hi:.3f}) on {answered:,} answered records, "
              f"mean coverage {out['random_splits']['mean_coverage']:.4f}")
    print(f"decision log: {cls.records} decisions, {cls.answered} answered, NONE by reason {dict(cls.reasons)}")
    print(f"{out['cpu']}, {out['cores']} cores, load {out['load_avg']}, {out['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
