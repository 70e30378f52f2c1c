"""Benchmark the `finetune` and `ensemble` engines on BANKING77 (full data or k-shot), on this machine's CPU.

    python benchmarks/finetune_banking77.py --data-dir ../shared/data --engines finetune,ensemble \\
        --shots full --json out/finetune_full.json

Prints a table and writes JSON rows: dataset, shots, seed, engine, params, accuracy,
macro_f1, ece, train_seconds, predict_per_second, peak_rss_mb, load_average.
`--params ENGINE=JSON` overrides an engine's parameters (repeatable); `--train/--test`
take any CSV pair with columns `text,label` (or `text,category`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see engines/finetune.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from taxonomist.engines import create_engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import k_shot  # noqa: E402  (the same k-shot sample as benchmarks/engines.py)

# Defaults chosen for a 2-core CPU (see docs/benchmarks.md, "Fine-tuning and ensemble").
# patience 2: with patience 1 the first epoch's small dip (warm-up at the peak learning rate)
# stopped the run and kept the probe alone (benchmarks/results/finetune_banking77_full_seed0_patience1.json).
FINETUNE = {"epochs": 3, "lr": 1e-4, "train_layers": 2, "max_length": 64, "batch_size": 32, "val_fraction": 0.1,
            "patience": 2}
FINETUNE_FEW = {"epochs": 15, "lr": 1e-4, "train_layers": 2, "max_length": 64, "batch_size": 16, "val_fraction": 0.1,
                "patience": 3}
DEFAULTS = {
    "finetune": FINETUNE,
    # As measured for docs/benchmarks.md (94.19%).
    "ensemble": {"members": ["tfidf", ["finetune", {**FINETUNE, "val_fraction": 0.05, "patience": 1}]], "holdout": 0.08,
                 "refit": ["tfidf"]},
}
# k-shot: every example counts, so the finetune member trains a fixed 8 epochs without a split of its
# own (the ensemble calibrates its temperature on the held-out split); the cheap members are refitted.
ENSEMBLE_FEW = {"members": ["tfidf", "head", ["finetune", {**FINETUNE_FEW, "epochs": 8, "val_fraction": 0.0}]],
                "holdout": 0.1, "refit": ["tfidf", "head"]}


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    label = "label" if "label" in rows[0] else "category"
    if "text" not in rows[0] or label not in rows[0]:
        raise SystemExit(f"{path}: expected columns text,label (found {', '.join(rows[0])})")
    return [r["text"] for r in rows], [r[label] for r in rows]


def ece(proba: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    conf = proba.max(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro"))


def run_one(engine_name: str, params: dict, train, test, *, shots: str, seed: int, dataset: str) -> dict:
    engine = create_engine(engine_name, **params)
    if "seed" in engine.get_params():
        engine.set_params(seed=seed)
    start = time.perf_counter()
    engine.fit(*train)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    proba = engine.predict_proba(test[0])
    predict_seconds = time.perf_counter() - start
    y = np.asarray(test[1], dtype=object)
    pred = engine.classes_[proba.argmax(axis=1)]
    correct = pred == y
    row = {
        "dataset": dataset, "shots": shots, "seed": seed, "engine": engine_name, "params": params,
        "accuracy": round(float(correct.mean()) * 100, 2), "macro_f1": round(macro_f1(y, pred) * 100, 2),
        "ece": round(ece(proba, correct), 4), "train_seconds": round(train_seconds, 1),
        "predict_per_second": round(len(test[0]) / predict_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "load_average": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }
    if engine_name == "finetune":
        row["history"] = engine.history_
        row["temperature"] = round(engine.temperature_, 3)
    if engine_name == "ensemble":
        row["weights"] = [round(float(w), 3) for w in engine.weights_]
        row["temperatures"] = [round(float(t), 3) for t in engine.temperatures_]
        row["members"] = {}
        for key, p in engine.member_probas(test[0]).items():
            mp = engine.classes_[p.argmax(axis=1)]
            row["members"][key] = round(float((mp == y).mean()) * 100, 2)
        row["member_seconds"] = engine.member_seconds_
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", default="banking77")
    ap.add_argument("--train", type=Path)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--engines", default="finetune")
    ap.add_argument("--shots", default="full", help="full or k (examples per class)")
    ap.add_argument("--seeds", default="0", help="comma-separated; k-shot samples and engine seeds")
    ap.add_argument("--params", action="append", default=[], help="ENGINE=JSON parameters (replace the defaults)")
    ap.add_argument("--limit-test", type=int, default=0, help="use only the first N test rows (quick checks)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    train_path = args.train or args.data_dir / args.dataset / "train.csv"
    test_path = args.test or args.data_dir / args.dataset / "test.csv"
    full_train, test = read_csv(train_path), read_csv(test_path)
    if args.limit_test:
        rng = np.random.default_rng(0)
        keep = sorted(rng.choice(len(test[0]), size=min(args.limit_test, len(test[0])), replace=False))
        test = ([test[0][i] for i in keep], [test[1][i] for i in keep])
    overrides = {}
    for item in args.params:
        name, _, js = item.partition("=")
        overrides[name] = json.loads(js)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        train = full_train if args.shots == "full" else k_shot(*full_train, int(args.shots), seed)
        for name in args.engines.split(","):
            params = overrides.get(name)
            if params is None:
                params = dict(DEFAULTS.get(name, {}))
                if args.shots != "full" and name in ("finetune", "ensemble"):
                    params = dict(FINETUNE_FEW if name == "finetune" else ENSEMBLE_FEW)
            row = run_one(name, params, train, test, shots=args.shots, seed=seed, dataset=args.dataset)
            rows.append(row)
            print(f"{row['dataset']:10} {row['shots']:>5} seed={seed} {name:9} acc={row['accuracy']:6.2f} "
                  f"f1={row['macro_f1']:6.2f} ece={row['ece']:.4f} train={row['train_seconds']:7.1f}s "
                  f"predict={row['predict_per_second']:7.1f}/s rss={row['peak_rss_mb']:.0f}MB "
                  f"load={row['load_average']}", flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if len(rows) > 1:
        print("\nengine     mean accuracy over seeds")
        for name in args.engines.split(","):
            accs = [r["accuracy"] for r in rows if r["engine"] == name]
            print(f"{name:10} {np.mean(accs):6.2f}  ({', '.join(f'{a:.2f}' for a in accs)})")


if __name__ == "__main__":
    sys.exit(main())
