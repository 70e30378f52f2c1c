"""Accuracy, calibration, speed and memory of the registered engines on BANKING77, CLINC150 or any CSV pair.

Examples (from the repository root):

    nice python benchmarks/engines.py --dataset banking77 --data-dir ../shared/data --engines tfidf,knn,head --json b77.json
    nice python benchmarks/engines.py --dataset banking77 --data-dir ../shared/data --shots 10 --json b77_10.json
    nice python benchmarks/engines.py --dataset clinc150 --data-dir ../shared/data --json clinc.json
    nice python benchmarks/engines.py --train A.csv --test B.csv --engines tfidf

Prints a table and writes one JSON row per (dataset, shots, seed, engine) with
accuracy, macro_f1, ece (of the raw probabilities; on CLINC150 after the
temperature fitted on the validation split), train_seconds,
predict_per_second (MiniLM engines embed the timed texts afresh: the
embedding cache is not read during timing) and peak_rss_mb (peak of this
process so far, so it only grows down the table). On CLINC150 the engines are
trained on in-scope intents only; a threshold is chosen on the validation split
(in-scope + oos) as the highest that keeps validation in-scope accuracy >= 95%
with 95% one-sided confidence (`--confidence-level`; 0.5 = point estimate),
and the test split reports in-scope accuracy with and without it and the
out-of-scope recall at it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

from taxonomist import metrics  # noqa: E402
from taxonomist.engines import create_engine  # noqa: E402
from taxonomist.engines.calibration import calibrate, choose_threshold  # noqa: E402
from taxonomist.taxonomy import Taxonomy  # noqa: E402

OOS = "oos"

# Defaults for the engines whose parameters matter most on 2 CPU cores (`--params` replaces them).
# Full data: train only the top 2 layers (the frozen part runs once), stop early on a 10% split.
FINETUNE_FULL = {"epochs": 3, "lr": 1e-4, "train_layers": 2, "max_length": 64, "batch_size": 32,
                 "val_fraction": 0.1, "patience": 2}
# k-shot: every example counts, so no split of its own: a fixed 8 epochs.
FINETUNE_FEW = {"epochs": 8, "lr": 1e-4, "train_layers": 2, "max_length": 64, "batch_size": 16, "val_fraction": 0.0}
PRESETS = {
    "full": {
        "finetune": FINETUNE_FULL,
        "ensemble": {"members": ["tfidf", ["finetune", {**FINETUNE_FULL, "val_fraction": 0.05, "patience": 1}]],
                     "holdout": 0.08, "refit": ["tfidf"]},
    },
    "few": {
        "finetune": FINETUNE_FEW,
        "ensemble": {"members": ["tfidf", "head", ["finetune", FINETUNE_FEW]], "holdout": 0.1, "refit": ["tfidf", "head"]},
    },
}


def read_csv(path: Path, text_col: str = "text", label_cols=("label", "category")) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no rows")
    label_col = next((c for c in label_cols if c in rows[0]), None)
    if text_col not in rows[0] or label_col is None:
        sys.exit(f"{path}: needs columns text,label (found {', '.join(rows[0])})")
    return [r[text_col] for r in rows], [r[label_col] for r in rows]


def load(args) -> dict:
    if args.train:
        return {"name": Path(args.train).stem, "train": read_csv(Path(args.train)), "test": read_csv(Path(args.test)), "val": None}
    root = Path(args.data_dir)
    if args.dataset == "banking77":
        return {"name": "banking77", "train": read_csv(root / "banking77/train.csv"), "test": read_csv(root / "banking77/test.csv"), "val": None}
    data = json.loads((root / "clinc150/data_full.json").read_text())

    def split(*keys):
        rows = [r for k in keys for r in data[k]]
        return [t for t, _ in rows], [y for _, y in rows]

    return {"name": "clinc150", "train": split("train"), "val": split("val", "oos_val"), "test": split("test", "oos_test")}


def k_shot(texts, labels, k: int, seed: int):
    rng = random.Random(seed)
    by: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by.setdefault(y, []).append(i)
    pick = sorted(i for y in sorted(by) for i in rng.sample(by[y], min(k, len(by[y]))))
    return [texts[i] for i in pick], [labels[i] for i in pick]


def with_taxonomy(engines: str, params: dict, path: str) -> dict:
    """`params` with `taxonomy=path` for every engine (or ensemble member) whose class takes one."""
    from taxonomist.engines.ensemble import member_specs

    def takes(name: str) -> bool:
        return "taxonomy" in create_engine(name).get_params()

    out = {k: dict(v) for k, v in params.items()}
    for name in [e.strip() for e in engines.split(",") if e.strip()]:
        p = out.setdefault(name, {})
        if name == "ensemble":
            members = p.get("members", create_engine("ensemble").members)
            p["members"] = [[m, {**mp, "taxonomy": path}] if takes(m) else [m, mp] for m, mp in member_specs(members)]
        elif takes(name):
            p["taxonomy"] = path
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(name: str, params: dict, ds: dict, train, shots: str, seed: int, throughput_sample: int,
            confidence_level: float = 0.95, cross_fit: int = 0) -> dict:
    engine = create_engine(name, **params)
    engine.fit(*train)
    test_texts, test_labels = ds["test"]
    # Throughput: embed afresh (no cache reads), on a fixed sample of test texts.
    sample = test_texts[:throughput_sample] if throughput_sample else test_texts
    os.environ["TAXONOMIST_EMBED_CACHE"] = "write"
    try:
        start = time.perf_counter()
        engine.predict_proba(sample)
        per_second = len(sample) / (time.perf_counter() - start)
    finally:
        os.environ.pop("TAXONOMIST_EMBED_CACHE", None)
    row = {
        "dataset": ds["name"], "shots": shots, "seed": seed, "engine": name, "params": params,
        "n_train": len(train[0]), "n_test": len(test_texts),
        "train_seconds": round(engine.train_seconds_, 2), "predict_per_second": round(per_second, 1),
    }
    if ds["val"] is not None:  # CLINC150: calibrate + threshold on validation
        cal = calibrate(engine, *ds["val"], threshold="auto", min_accuracy=0.95, confidence_level=confidence_level,
                        policy="overall")
        row.update(temperature=round(cal.temperature, 4), threshold=cal.threshold, confidence_level=confidence_level,
                   val_in_scope_accuracy=round(cal.accuracy, 4))
    proba = engine.predict_proba(test_texts)
    truth = np.asarray(test_labels, dtype=object)
    top = engine.classes_[proba.argmax(axis=1)]
    ins = truth != OOS
    row["accuracy"] = round(metrics.accuracy(truth[ins], top[ins]), 4)
    row["macro_f1"] = round(metrics.macro_f1(truth[ins], top[ins]), 4)
    row["ece"] = round(metrics.ece(proba[ins].max(axis=1), (top == truth)[ins]), 4)
    if ds["val"] is not None:
        scores = metrics.oos_metrics(truth, engine.predict(test_texts), oos_label=OOS)
        row["in_scope_accuracy_at_threshold"] = round(scores["in_scope_accuracy"], 4)
        row["oos_recall"] = round(scores["oos_recall"], 4)
        if cross_fit:
            row.update(_cross_fit_threshold(name, params, engine, train, ds, proba, truth, confidence_level, cross_fit))
        # The same trade-off read off the test split itself (not a deployable choice: it looks at
        # the test labels): the oos recall at the highest threshold keeping test in-scope accuracy >= 95%.
        conf = proba.max(axis=1)
        best = choose_threshold(conf[ins], (top == truth)[ins], min_accuracy=0.95, policy="overall")
        if best is not None:
            row["test_curve_threshold"] = round(best, 4)
            row["test_curve_oos_recall"] = round(float((conf[~ins] < best).mean()), 4)
    if getattr(engine, "history_", None):  # finetune: validation score per epoch
        row["history"] = engine.history_
    if name == "ensemble":
        row["weights"] = [round(float(w), 3) for w in engine.weights_]
        row["member_holdout_accuracy"] = [round(a, 4) for a in engine.member_holdout_accuracy_]
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


def _cross_fit_threshold(name, params, engine, train, ds, proba, truth, confidence_level, folds) -> dict:
    """The `overall` threshold chosen on validation plus out-of-fold predictions of the training data (issue 17).

    A validation split easier than the traffic to come gives a threshold that keeps too little on new data;
    `folds` models each trained without one fold of train give predictions on 15,000 more in-scope rows
    drawn like the training data. Those rows (after the validation temperature) join the validation
    in-scope rows in the choice. Costs `folds` extra fits.
    """
    from taxonomist.engines.calibration import out_of_fold_proba

    oof = engine.calibrator_.apply(out_of_fold_proba(lambda: create_engine(name, **params), *train, folds=folds,
                                                     classes=engine.classes_))
    col = {c: i for i, c in enumerate(engine.classes_)}
    y_tr = np.array([col[y] for y in train[1]])
    val = engine.predict_proba(ds["val"][0])
    y_val = np.array([col.get(y, -1) for y in ds["val"][1]])
    ins_val = y_val >= 0
    conf = np.r_[val[ins_val].max(axis=1), oof.max(axis=1)]
    ok = np.r_[val[ins_val].argmax(axis=1) == y_val[ins_val], oof.argmax(axis=1) == y_tr]
    thr = choose_threshold(conf, ok, min_accuracy=0.95, confidence_level=confidence_level, policy="overall")
    ins = truth != OOS
    top, best = proba.argmax(axis=1), proba.max(axis=1)
    y_te = np.array([col.get(y, -1) for y in truth])
    out = {"cross_fit_folds": folds, "oof_train_accuracy": round(float((oof.argmax(axis=1) == y_tr).mean()), 4),
           "cross_fit_threshold": thr}
    if thr is not None:
        out["cross_fit_in_scope_accuracy"] = round(float(((top == y_te) & (best >= thr))[ins].mean()), 4)
        out["cross_fit_oos_recall"] = round(float((best[~ins] < thr).mean()), 4)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["banking77", "clinc150"], default="banking77")
    ap.add_argument("--data-dir", default="../shared/data", help="folder holding banking77/ and clinc150/")
    ap.add_argument("--train", help="any CSV with columns text,label (instead of --dataset)")
    ap.add_argument("--test", help="test CSV with columns text,label (with --train)")
    ap.add_argument("--engines", default="tfidf,knn,head", help="comma-separated registered engine names")
    ap.add_argument("--params", default="{}", help='JSON {engine: {param: value}}, e.g. \'{"knn": {"k": 5}}\'; '
                    "replaces an engine's defaults (PRESETS, for finetune and ensemble)")
    ap.add_argument("--shots", default="full", help="full, or k examples per class (3 seeds)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds for k-shot sampling")
    ap.add_argument("--throughput-sample", type=int, default=1000, help="test texts timed for predict_per_second (0: all)")
    ap.add_argument("--confidence-level", type=float, default=0.95,
                    help="CLINC150 threshold: validation accuracy must clear 95%% with this one-sided confidence "
                         "(Wilson bound); 0.5 = point estimate")
    ap.add_argument("--cross-fit-threshold", type=int, default=0, metavar="K",
                    help="CLINC150: also choose the threshold on validation + out-of-fold predictions of the "
                         "training data from K folds (K extra fits)")
    ap.add_argument("--definitions", action="store_true",
                    help="give engines that take a taxonomy (knn, head, and those inside an ensemble) one built from "
                         "the label names, as the user's taxonomy document would: each name is a category definition")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    if bool(args.train) != bool(args.test):
        ap.error("--train and --test go together")
    ds = load(args)
    params = {**PRESETS["full" if args.shots == "full" else "few"], **json.loads(args.params)}
    if args.definitions:
        path = Path(tempfile.mkdtemp(prefix="taxonomy-")) / f"{ds['name']}.yaml"
        Taxonomy.from_labels(sorted({y for y in ds["train"][1] if y != OOS}), name=ds["name"]).save(path)
        params = with_taxonomy(args.engines, params, str(path))
    seeds = [0] if args.shots == "full" else [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        train = ds["train"] if args.shots == "full" else k_shot(*ds["train"], int(args.shots), seed)
        for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            row = run_one(name, params.get(name, {}), ds, train, args.shots, seed, args.throughput_sample,
                          args.confidence_level, args.cross_fit_threshold)
            row["machine"] = machine()  # predict_per_second means little without the CPU, its peak and the load
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.json:  # write as we go: a long run keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    cols = ["dataset", "shots", "seed", "engine", "accuracy", "macro_f1", "ece", "train_seconds", "predict_per_second", "peak_rss_mb"]
    if ds["val"] is not None:
        cols += ["threshold", "in_scope_accuracy_at_threshold", "oos_recall", "test_curve_oos_recall"]
        if args.cross_fit_threshold:
            cols += ["oof_train_accuracy", "cross_fit_threshold", "cross_fit_in_scope_accuracy", "cross_fit_oos_recall"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if args.shots != "full":
        for name in sorted({r["engine"] for r in rows}):
            accs = [r["accuracy"] for r in rows if r["engine"] == name]
            print(f"mean accuracy {name} over {len(accs)} seeds: {np.mean(accs):.4f} (sd {np.std(accs):.4f})")


if __name__ == "__main__":
    main()
