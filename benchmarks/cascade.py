"""The cascade against the best single engines, in one run: accuracy, throughput, the share each stage answers, the share left to people.

Examples (from the repository root; 2 cores: run with nice):

    nice -n 10 python benchmarks/cascade.py --dataset banking77 --data-dir ../shared/data --json benchmarks/results/cascade_banking77.json
    nice -n 10 python benchmarks/cascade.py --denials 7 --json benchmarks/results/cascade_denials_seed7.json
    nice -n 10 python benchmarks/cascade.py --train A.csv --test B.csv --stages tfidf,head --target-accuracy 0.9

Two settings:

- no review (default for BANKING77/CLINC150/--train): everything is answered; the
  cascade's last stage is the strong engine, and the cheap stage's threshold is
  the lowest whose loss against the strong engine alone, on the same held-out
  records, stays within `--max-drop` at a paired one-sided bound at
  `--confidence-level` (0.5: the point estimate). The point-estimate rule is
  also scored in the same run, on the same fitted stages (a row "cascade, point
  rule": accuracy and shares, not timed). Compared with that same strong engine
  (the cascade's own last stage, fitted on all the data: the same model), the
  cheap engine alone, accuracy and records per second measured in the same run
  (the median of `--repeats` alternating timings; MiniLM engines embed afresh).
- review (`--target-accuracy`, default for --denials): answered records must be
  at least that accurate (Wilson bound at 95% on held-out data); the rest go to
  people. Each single engine gets its threshold the way `taxonomist train
  --target-accuracy` does (10% stratified hold-out, `calibration.calibrate`),
  the cascade searches its thresholds on cross-fitted data. Reported: the share
  answered automatically on the test set with its 95% Wilson interval, and the
  accuracy on answered records with its interval.

--denials SEED generates the demo's denials (80,000 records by default) and trains
on months 1-12, tests on months 13-18. Prints a table and writes JSON rows like
benchmarks/engines.py (engine, accuracy, predict_per_second, ...) plus
`stage_shares`, `to_people`, CPU model and load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model
from engines import PRESETS, load, peak_rss_mb

from taxonomist.engines import create_engine
from taxonomist.engines.calibration import calibrate, wilson_lower
from taxonomist.engines.cascade import REVIEW
from taxonomist.splits import stratified_split
from taxonomist.taxonomy import ABSTAIN

Z95 = 1.959963984540054  # two-sided 95%


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def interval(k: int, n: int) -> list[float]:
    """Two-sided 95% Wilson interval of k/n."""
    if n == 0:
        return [0.0, 0.0]
    lo = float(wilson_lower(k, n, Z95))
    hi = 1.0 - float(wilson_lower(n - k, n, Z95))
    return [round(lo, 4), round(hi, 4)]


def per_second(engine, texts: list[str]) -> float:
    os.environ["TAXONOMIST_EMBED_CACHE"] = "write"  # embed afresh: no cache reads while timing
    try:
        start = time.perf_counter()
        engine.predict_proba(texts)
        return len(texts) / (time.perf_counter() - start)
    finally:
        os.environ.pop("TAXONOMIST_EMBED_CACHE", None)


def timed(engines: dict[str, object], texts: list[str], repeats: int) -> dict[str, float]:
    """Records per second of each engine: the median of `repeats` rounds, engines alternating (load moves)."""
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            runs[name].append(per_second(engine, texts))
    return {name: round(statistics.median(v), 1) for name, v in runs.items()}


def load_denials(seed: int, records: int) -> dict:
    from taxonomist.demo_data import generate_records

    cols = generate_records(records=records, seed=seed)
    month = np.asarray(cols["month"])
    texts, labels = cols["text"], cols["label"]
    train = [i for i in range(len(texts)) if month[i] <= 12]
    test = [i for i in range(len(texts)) if 13 <= month[i] <= 18]
    return {"name": f"denials_seed{seed}_{records}", "train": ([texts[i] for i in train], [labels[i] for i in train]),
            "test": ([texts[i] for i in test], [labels[i] for i in test]), "val": None}


def stage_list(spec: str, presets: dict) -> list:
    out = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        out.append([name, presets[name]] if name in presets else name)
    return out


def decisions_row(name: str, preds, truth: list[str]) -> dict:
    cats = np.array([p.category for p in preds], dtype=object)
    y = np.asarray(truth, dtype=object)
    answered = cats != ABSTAIN
    k, n = int(answered.sum()), len(y)
    hits = int((cats[answered] == y[answered]).sum())
    return {"engine": name, "n_test": n, "coverage": round(k / n, 4), "coverage_ci95": interval(k, n),
            "answered_accuracy": round(hits / k, 4) if k else None, "answered_accuracy_ci95": interval(hits, k) if k else None,
            "accuracy_overall": round(hits / n, 4), "to_people": round(1 - k / n, 4)}


def cascade_shares(cascade, preds) -> dict:
    routes = [p.route for p in preds]
    n = len(routes)
    shares = {name: round(routes.count(name) / n, 4) for name in cascade.stage_names_}
    reach = [sum(1 for p in preds if p.extra.get("stages_tried", 0) > s) / n for s in range(len(cascade.stages_))]
    cost = sum(c * r for c, r in zip(cascade.stage_costs_, reach))
    return {"stage_shares": shares, "to_people": round(routes.count(REVIEW) / n, 4), "cost_per_1000": round(cost * 1000, 6),
            "thresholds": [round(t, 4) if t < 1 else "never" for t in cascade._active_thresholds()],
            "stages": list(cascade.stage_names_), "train_summary": cascade.summary()}


def stages_alone(cascade, test, target: float, dataset: str, n_train: int) -> list[dict]:
    """Each stage as a single engine, its threshold chosen like the cascade's (same records, same search, one stage)."""
    from taxonomist.engines.cascade import search_thresholds

    oof = cascade.oof_
    outputs = cascade.stage_outputs(test[0])
    truth = np.asarray(test[1], dtype=object)
    rows = []
    for s, name in enumerate(cascade.stage_names_):
        plan = search_thresholds([oof["confidence"][s]], [oof["correct"][s]], [oof["costs"][s]], target_accuracy=target,
                                 z=oof["z"], defer=True)
        take = outputs[s]["confidence"] >= plan.thresholds[0]
        k, n = int(take.sum()), len(truth)
        hits = int((outputs[s]["category"][take] == truth[take]).sum())
        rows.append({"dataset": dataset, "engine": f"{name} (cross-fitted threshold)", "n_train": n_train, "n_test": n,
                     "target_accuracy": target, "threshold": plan.thresholds[0], "coverage": round(k / n, 4),
                     "coverage_ci95": interval(k, n), "answered_accuracy": round(hits / k, 4) if k else None,
                     "answered_accuracy_ci95": interval(hits, k) if k else None, "accuracy_overall": round(hits / n, 4),
                     "to_people": round(1 - k / n, 4), "accuracy": round(float((outputs[s]["category"] == truth).mean()), 4),
                     "predict_per_second": None, "train_seconds": None})
    return rows


def other_rule(cascade, test, args, dataset: str, n_train: int) -> dict:
    """No review: the cascade's stages with the cheap thresholds of the other rule (point estimate <-> paired bound)."""
    from taxonomist.engines.cascade import _z, search_thresholds

    level = 0.95 if args.confidence_level <= 0.5 else 0.5
    oof = cascade.oof_
    plan = search_thresholds(oof["confidence"], oof["correct"], oof["costs"], target_accuracy=0.0, z=_z(level),
                             defer=False, grid=int(cascade.grid), coverage_tolerance=float(cascade.coverage_tolerance),
                             max_drop=args.max_drop)
    routed = cascade.routed_at(cascade.stage_outputs(test[0]), plan.thresholds)
    truth = np.asarray(test[1], dtype=object)
    hits = int((routed["category"] == truth).sum())
    n = len(truth)
    rule = "point" if level <= 0.5 else f"bound {level:.0%}"
    return {"dataset": dataset, "engine": f"cascade, {rule} rule", "n_train": n_train, "n_test": n,
            "accuracy": round(hits / n, 4), "accuracy_ci95": interval(hits, n), "predict_per_second": None,
            "train_seconds": None, "confidence_level": level,
            "thresholds": [round(t, 4) if t < 1 else "never" for t in plan.thresholds],
            "stage_shares": {nm: round(float((routed["stage"] == s).mean()), 4) for s, nm in enumerate(cascade.stage_names_)},
            "held_out": {"drop": plan.drop, "drop_upper": plan.drop_upper,
                         "stage_shares": dict(zip(cascade.stage_names_, plan.stage_shares))}}


def llm_probe(cascade, train, test, n: int) -> dict:
    """Would the local SmolLM2 help as a last stage? Its answers on records the cascade left to people."""
    preds = cascade.predict_batch(test[0], evidence=False)
    deferred = [i for i, p in enumerate(preds) if p.route == REVIEW][:n]
    if not deferred:
        return {"n": 0}
    llm = create_engine("llm", n_examples=4, shortlist=5, max_prompt_tokens=1200, allow_none=False)
    llm.fit(*train)
    texts = [test[0][i] for i in deferred]
    truth = np.asarray([test[1][i] for i in deferred], dtype=object)
    start = time.perf_counter()
    answers = llm.shortlisted_answers(texts, shortlists=[[a.category for a in preds[i].alternatives[:5]] for i in deferred])
    seconds = (time.perf_counter() - start) / len(texts)
    said = np.asarray([a.category for a in answers], dtype=object)
    conf = np.asarray([a.confidence for a in answers])
    surer = conf >= np.median(conf)
    last = np.asarray([preds[i].alternatives[0].category for i in deferred], dtype=object)
    hits = int((said == truth).sum())
    return {"n": len(deferred), "llm_accuracy": hits / len(deferred), "llm_accuracy_ci95": interval(hits, len(deferred)),
            "llm_accuracy_top_half": float((said[surer] == truth[surer]).mean()),
            "last_stage_accuracy": float((last == truth).mean()), "seconds_per_record": seconds,
            "shortlist_recall": float(np.mean([test[1][i] in [a.category for a in preds[i].alternatives[:5]] for i in deferred])),
            "model": llm.base_model_}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["banking77", "clinc150"], default="banking77")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--train", help="labelled CSV (text,label) to train on, with --test")
    ap.add_argument("--test", help="labelled CSV to test on")
    ap.add_argument("--denials", type=int, metavar="SEED", help="generated denials: train months 1-12, test 13-18")
    ap.add_argument("--records", type=int, default=80_000, help="with --denials: how many records to generate")
    ap.add_argument("--stages", default=None, help="cascade stages, cheapest first (default: tfidf,ensemble; denials: tfidf,head)")
    ap.add_argument("--singles", default=None, help="single engines to compare (default: the stages)")
    ap.add_argument("--target-accuracy", type=float, default=None,
                    help="review setting: promised accuracy on answered records (default 0.95 with --denials)")
    ap.add_argument("--max-drop", type=float, default=0.005, help="no-review setting: accuracy the cascade may give up")
    ap.add_argument("--confidence-level", type=float, default=0.95,
                    help="no-review setting: one-sided confidence of the paired bound on that loss (0.5: point estimate)")
    ap.add_argument("--folds", type=int, default=0, help="cascade cross-fit folds (0: one 20%% hold-out)")
    ap.add_argument("--max-train", type=int, default=0, help="use only this many training records (0: all)")
    ap.add_argument("--max-test", type=int, default=0, help="use only a random sample of this many test records (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-sample", type=int, default=0, help="time on the first N test records only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llm-probe", type=int, default=0, metavar="N",
                    help="review setting: ask the local SmolLM2 (llm engine, shortlist = the last stage's top 5) about N "
                    "records the cascade left to people, and compare its accuracy there with the last stage's")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    if args.denials is not None:
        ds = load_denials(args.denials, args.records)
        target = 0.95 if args.target_accuracy is None else args.target_accuracy
        default_stages = "tfidf,head"
    else:
        ds = load(args)
        target = args.target_accuracy
        default_stages = "tfidf,ensemble"
    if ds.get("val"):
        say("note: CLINC150's validation split is not used; the cascade cross-fits on the training split")
    train, test = ds["train"], ds["test"]
    if 0 < args.max_train < len(train[1]):  # a stratified sample of about max_train records
        keep, _ = stratified_split(np.asarray(train[1]), 1 - args.max_train / len(train[1]), args.seed)
        train = ([train[0][i] for i in keep], [train[1][i] for i in keep])
    if 0 < args.max_test < len(test[0]):  # a seeded random sample, in the original order
        pick = np.sort(np.random.default_rng(args.seed).choice(len(test[0]), args.max_test, replace=False))
        test = ([test[0][i] for i in pick], [test[1][i] for i in pick])
    in_scope = set(train[1])
    test = ([t for t, y in zip(*test) if y in in_scope], [y for y in test[1] if y in in_scope])
    presets = PRESETS["full"]
    stages = stage_list(args.stages or default_stages, presets)
    say(f"{ds['name']}: {len(train[0]):,} train / {len(test[0]):,} test records; stages {args.stages or default_stages}; "
        f"{'target ' + format(target, '.0%') + ' on answered' if target else 'no review, max drop ' + format(args.max_drop, '.1%')}")

    review = target is not None
    params = {"stages": stages, "folds": args.folds or None, "seed": args.seed}
    params.update({"target_accuracy": target, "defer": True} if review else
                  {"defer": False, "max_drop": args.max_drop, "confidence_level": args.confidence_level})
    t0 = time.perf_counter()
    cascade = create_engine("cascade", **params).fit(*train)
    cascade_train = time.perf_counter() - t0
    say(f"cascade trained in {cascade_train:.0f} s: " + "; ".join(cascade.summary_lines()))

    singles: dict[str, object] = {}
    train_seconds: dict[str, float] = {"cascade": round(cascade_train, 1)}
    names = [s.strip() for s in (args.singles or args.stages or default_stages).split(",") if s.strip()]
    stage_by_name = {st.name: st for st in cascade.stages_}
    for name in names:
        if name in stage_by_name and not review:
            # The cascade's stage is this engine fitted on all the training data: the same model alone.
            singles[name] = stage_by_name[name]
            train_seconds[name] = round(float(stage_by_name[name].train_seconds_), 1)
            continue
        t0 = time.perf_counter()
        engine = create_engine(name, **presets.get(name, {}))
        if review:  # as `taxonomist train --target-accuracy`: 10% stratified hold-out chooses the threshold
            fit_idx, held_idx = stratified_split(np.asarray(train[1]), 0.1, args.seed)
            engine.fit([train[0][i] for i in fit_idx], [train[1][i] for i in fit_idx])
            calibrate(engine, [train[0][i] for i in held_idx], [train[1][i] for i in held_idx], threshold="auto",
                      min_accuracy=target, confidence_level=0.95)
        else:
            engine.fit(*train)
        train_seconds[name] = round(time.perf_counter() - t0, 1)
        singles[name] = engine
        say(f"{name} trained in {train_seconds[name]:.0f} s")

    say("timing (alternating rounds)")
    speed = timed({**singles, "cascade": cascade}, test[0][: args.time_sample or None], args.repeats)
    rows = []
    truth = np.asarray(test[1], dtype=object)
    for name, engine in {**singles, "cascade": cascade}.items():
        preds = engine.predict_batch(test[0], evidence=False)
        proba = engine.predict_proba(test[0])
        hits = int((engine.classes_[proba.argmax(axis=1)] == truth).sum())
        top1 = hits / len(truth)
        row = {"dataset": ds["name"], "engine": name, "n_train": len(train[0]), "n_test": len(test[0]),
               "accuracy": round(top1, 4), "accuracy_ci95": interval(hits, len(truth)),
               "predict_per_second": speed[name], "train_seconds": train_seconds[name]}
        if review:
            row.update(decisions_row(name, preds, test[1]))
            row["target_accuracy"] = target
            if name != "cascade":
                row["threshold"] = engine.calibrator_.threshold
        if name == "cascade":
            row.update(cascade_shares(cascade, preds))
            row["params"] = params
        rows.append(row)

    if review:  # each stage alone at the same target, by the cascade's own search on the same cross-fitted records
        rows[-1:-1] = stages_alone(cascade, test, target, ds["name"], len(train[0]))
    else:  # the other rule on the same fitted stages: the point estimate of the loss (or the bound, if that was asked)
        rows.append(other_rule(cascade, test, args, ds["name"], len(train[0])))
    best_single = max((r for r in rows if not r["engine"].startswith("cascade")), key=lambda r: r["coverage"] if review else r["accuracy"])
    casc = next(r for r in rows if r["engine"] == "cascade")
    print(f"\n{ds['name']}: {len(train[0]):,} train / {len(test[0]):,} test, {cpu_model()}, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if review:
        print(f"{'engine':<34} {'answered':>9} {'95% CI':>16} {'acc. answered':>14} {'95% CI':>16} {'to people':>10} {'rec/s':>9}")
        for r in rows:
            aa = f"{r['answered_accuracy']:.2%}" if r["answered_accuracy"] is not None else "-"
            ci = r["answered_accuracy_ci95"] or [0, 0]
            print(f"{r['engine']:<34} {r['coverage']:>9.2%} {r['coverage_ci95'][0]:>7.2%}-{r['coverage_ci95'][1]:<7.2%} {aa:>14} "
                  f"{ci[0]:>7.2%}-{ci[1]:<7.2%} {r['to_people']:>10.2%} {r['predict_per_second'] or 0:>9.1f}")
    else:
        print(f"{'engine':<24} {'accuracy':>9} {'rec/s':>9} {'train s':>8}")
        for r in rows:
            print(f"{r['engine']:<24} {r['accuracy']:>9.2%} {r['predict_per_second'] or 0:>9.1f} {r['train_seconds'] or 0:>8.1f}"
                  + (f"  thresholds {r['thresholds']}, answered by {r['stage_shares']}" if "stage_shares" in r else ""))
        print(f"cascade vs {best_single['engine']}: {100 * (casc['accuracy'] - best_single['accuracy']):+.2f} pt, "
              f"{casc['predict_per_second'] / best_single['predict_per_second']:.1f}x the throughput")
    print(f"cascade: thresholds {casc['thresholds']}; answered by {casc['stage_shares']}; to people {casc['to_people']:.2%}; "
          f"${casc['cost_per_1000']:.6f} per 1,000 records")
    probe = None
    if args.llm_probe and review:
        probe = llm_probe(cascade, train, test, args.llm_probe)
        print(f"SmolLM2 on {probe['n']} records the cascade left to people: {probe['llm_accuracy']:.1%} right "
              f"({probe['llm_accuracy_ci95'][0]:.1%}-{probe['llm_accuracy_ci95'][1]:.1%}), its surer half "
              f"{probe['llm_accuracy_top_half']:.1%}; the last stage's top answer there: {probe['last_stage_accuracy']:.1%}; "
              f"{probe['seconds_per_record']:.1f} s a record")
    if args.json:
        meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", "benchmarks/cascade.py", *(argv or sys.argv[1:])])}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "llm_probe": probe}, indent=2, default=str) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
