"""What a PHI-safe tfidf vocabulary costs: accuracy and leaked n-grams for min_records = 1, 2, 3, 5.

`TfidfEngine(min_records=k)` keeps only n-grams found in at least k distinct
training texts, so `tfidf_vocabulary.json` holds no word unique to one record.
This script plants a marker (a made-up patient name and member id) in 3
training texts and reports, for each k:

- BANKING77 test accuracy (full train/test split, as `benchmarks/engines.py`);
- generated denials accuracy (`taxonomist.demo_data`, months 1-12, 80/20 random split, seeded);
- word n-grams holding a marker word no other training text uses, and character
  n-grams found only in the marker (in no other training text), in the saved vocabulary.

    nice python benchmarks/tfidf_min_records.py --data-dir ../shared/data --json benchmarks/results/tfidf_min_records.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from engines import read_csv  # noqa: E402

from taxonomist.engines import TfidfEngine  # noqa: E402

MARKER = "Zqxjroe Wilhelmina member W739105528"


def planted(texts: list[str], labels: list[str], n: int = 3, seed: int = 0) -> list[str]:
    """The texts with the marker written into `n` of them (different classes), as a note would carry it."""
    rng = random.Random(seed)
    out = list(texts)
    seen: set[str] = set()
    for i in rng.sample(range(len(texts)), len(texts)):
        if labels[i] not in seen:
            out[i] = f"{out[i]} {MARKER}"
            seen.add(labels[i])
        if len(seen) == n:
            break
    return out


def leaks(engine: TfidfEngine, clean_texts: list[str]) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as d:
        engine.save(Path(d) / "m")
        vocab = json.loads((Path(d) / "m" / "tfidf_vocabulary.json").read_text())
    corpus = "\n".join(t.lower() for t in clean_texts)
    # The marker's own words: those no other training text uses (a common word like "member" is not a leak).
    seen = set(corpus.split())
    words = [w.lower() for w in MARKER.split() if w.lower() not in seen]
    word_hits = sum(any(w in term.split() for w in words) for term in vocab["word"])
    marker = f" {MARKER.lower()} "
    only_marker = [g for g in vocab["char"] if g in marker and g not in corpus]
    return {"marker_word_terms": word_hits, "marker_only_char_ngrams": len(only_marker)}


def denials(records: int, seed: int):
    from taxonomist.demo_data import generate_records

    cols = generate_records(records=records, seed=seed)
    idx = [i for i, m in enumerate(cols["month"]) if m <= 12]
    rng = random.Random(seed)
    rng.shuffle(idx)
    cut = int(0.8 * len(idx))
    take = lambda ids: ([cols["text"][i] for i in ids], [cols["label"][i] for i in ids])  # noqa: E731
    return take(idx[:cut]), take(idx[cut:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--ks", default="1,2,3,5")
    ap.add_argument("--denial-records", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    root = Path(args.data_dir)
    datasets = {
        "banking77": (read_csv(root / "banking77/train.csv"), read_csv(root / "banking77/test.csv")),
        "denials": denials(args.denial_records, args.seed),
    }
    rows = []
    for name, ((train_x, train_y), (test_x, test_y)) in datasets.items():
        dirty = planted(train_x, train_y)
        for k in ks:
            t0 = time.perf_counter()
            engine = TfidfEngine(min_records=k).fit(dirty, train_y)
            seconds = time.perf_counter() - t0
            acc = float((engine.predict(test_x) == np.array(test_y, dtype=object)).mean())
            row = {"dataset": name, "min_records": k, "train": len(train_x), "test": len(test_x), "accuracy": acc,
                   "n_features": int(engine.coef_.shape[1]), "fit_seconds": round(seconds, 1), **leaks(engine, train_x)}
            rows.append(row)
            print(f"{name:<10} min_records={k}  accuracy {acc:.2%}  features {row['n_features']:>7}  "
                  f"marker words kept {row['marker_word_terms']}  marker-only char n-grams {row['marker_only_char_ngrams']}"
                  f"  fit {seconds:.1f} s", flush=True)
    print()
    print(f"{'dataset':<10} {'k':>2} {'accuracy':>9} {'vs k=1':>8} {'features':>9} {'marker words':>13} {'marker char':>12}")
    base = {r["dataset"]: r["accuracy"] for r in rows if r["min_records"] == 1}
    for r in rows:
        delta = 100 * (r["accuracy"] - base.get(r["dataset"], r["accuracy"]))
        print(f"{r['dataset']:<10} {r['min_records']:>2} {r['accuracy']:>9.2%} {delta:>+7.2f}p {r['n_features']:>9} "
              f"{r['marker_word_terms']:>13} {r['marker_only_char_ngrams']:>12}")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    result = {
        "benchmark": "tfidf_min_records",
        "command": "python benchmarks/tfidf_min_records.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "marker": "3 training texts carry a made-up name and member id",
        "rows": rows,
        "cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg(),
        "versions": {"python": platform.python_version()},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
