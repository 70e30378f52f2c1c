"""Embedding speed (texts/s, no cache) and what it costs in accuracy (1-NN and logistic regression on BANKING77).

    nice python benchmarks/embed_speed.py --data-dir ../shared/data --embedders minilm,minilm-int8,minilm-st,minilm-static --json embed.json

Speed is measured on the first `--n` BANKING77 test texts in their file order,
batch encode, no cache; each embedder is timed `--repeats` times and the best
run is kept (the machine is shared). Accuracy embeds the full train and test
sets (through the cache, so re-runs are quick) and fits 1-NN and a
logistic-regression head (C=20) on them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from taxonomist.embed import get_embedder  # noqa: E402


def read(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--embedders", default="minilm,minilm-int8,minilm-st,minilm-static")
    ap.add_argument("--n", type=int, default=1000, help="test texts timed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-accuracy", action="store_true", help="only measure speed")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    root = Path(args.data_dir) / "banking77"
    train, test = read(root / "train.csv"), read(root / "test.csv")
    rows = []
    for name in args.embedders.split(","):
        start = time.perf_counter()
        timed = get_embedder(name, cache=False)
        load_s = time.perf_counter() - start
        timed.encode(test[0][:32])  # warm-up
        best = 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            timed.encode(test[0][: args.n])
            best = max(best, args.n / (time.perf_counter() - start))
        row = {"embedder": name, "model_id": timed.model_id, "dim": timed.dim, "texts_per_second": round(best, 1), "load_seconds": round(load_s, 1), "n": args.n}
        if not args.no_accuracy:
            from sklearn.linear_model import LogisticRegression

            cached = get_embedder(name)
            xtr, xte = cached.encode(train[0]), cached.encode(test[0])
            ytr, yte = np.asarray(train[1]), np.asarray(test[1])
            row["acc_1nn"] = round(float(np.mean(ytr[(xte @ xtr.T).argmax(axis=1)] == yte)), 4)
            row["acc_lr"] = round(float(LogisticRegression(C=20, max_iter=3000).fit(xtr, ytr).score(xte, yte)), 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    cols = ["embedder", "texts_per_second", "acc_1nn", "acc_lr", "dim", "load_seconds"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
