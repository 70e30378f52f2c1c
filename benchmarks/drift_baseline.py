"""Is the demo data hard, and is its drift real? A TF-IDF linear baseline on a random split vs a temporal split.

Trains word 1-2 + char_wb 2-5 TF-IDF with a LinearSVC (scikit-learn directly, so
the figure does not depend on any engine under development) on months 1-12 of
the generated denials and scores it two ways:

- random split: 80/20 of months 1-12 (what most papers report);
- temporal: trained on all of months 1-12, tested on months 13-18 (after the
  wording drift of month 13; before the 48th category of month 19).

The generator is calibrated so both land between 70% and 92% accuracy and the
temporal figure is clearly lower. Run:

    python benchmarks/drift_baseline.py --out-dir /tmp/d --seed 7 --records 80000 --json drift.json

Data is generated into --out-dir unless it already holds denials.parquet made
with the same seed and size (checked via DATACARD.md); pass --regenerate to force.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _load(out_dir: Path, seed: int, records: int, regenerate: bool) -> tuple[dict, float | None]:
    import pyarrow.parquet as pq

    card = out_dir / "DATACARD.md"
    parquet = out_dir / "denials.parquet"
    seconds = None
    fresh = (
        not regenerate and parquet.is_file() and card.is_file()
        and f"Seed **{seed}**" in card.read_text(encoding="utf-8")
        and f"**{records:,}** records" in card.read_text(encoding="utf-8")
    )
    if not fresh:
        from taxonomist.demo_data import generate

        t0 = time.perf_counter()
        generate(out_dir, seed=seed, records=records)
        seconds = time.perf_counter() - t0
    cols = pq.read_table(parquet, columns=["text", "label", "month", "label_is_noise"]).to_pydict()
    return cols, seconds


def _model(C: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    return make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        ),
        LinearSVC(C=C),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/taxonomist-demo"), help="where the demo data is (or is written)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--records", type=int, default=80_000)
    ap.add_argument("--C", type=float, default=0.5, help="LinearSVC regularisation")
    ap.add_argument("--regenerate", action="store_true", help="generate even if --out-dir already holds this data")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)

    import numpy as np
    import sklearn
    from sklearn.model_selection import train_test_split

    cols, gen_seconds = _load(args.out_dir, args.seed, args.records, args.regenerate)
    text = np.array(cols["text"], dtype=object)
    y = np.array(cols["label"], dtype=object)
    month = np.array(cols["month"])
    noise = np.array(cols["label_is_noise"], dtype=bool)
    early = month <= 12
    later = (month >= 13) & (month <= 18)

    t0 = time.perf_counter()
    idx = np.nonzero(early)[0]
    tr, te = train_test_split(idx, test_size=0.2, random_state=args.seed)
    clf = _model(args.C).fit(text[tr], y[tr])
    pred = clf.predict(text[te])
    random_acc = float((pred == y[te]).mean())
    random_clean = float((pred == y[te])[~noise[te]].mean())

    clf = _model(args.C).fit(text[early], y[early])
    pred = clf.predict(text[later])
    temporal_acc = float((pred == y[later]).mean())
    temporal_clean = float((pred == y[later])[~noise[later]].mean())
    fit_seconds = time.perf_counter() - t0

    rows = [
        ("random split of months 1-12 (80/20)", len(tr), len(te), random_acc, random_clean),
        ("temporal: train 1-12, test 13-18", int(early.sum()), int(later.sum()), temporal_acc, temporal_clean),
    ]
    print(f"TF-IDF (word 1-2 + char_wb 2-5) + LinearSVC(C={args.C}) on demo denials, seed {args.seed}, {args.records:,} records")
    print(f"{'split':<40} {'train':>7} {'test':>7} {'accuracy':>9} {'on clean labels':>16}")
    for name, ntr, nte, acc, clean in rows:
        print(f"{name:<40} {ntr:>7} {nte:>7} {acc:>9.1%} {clean:>16.1%}")
    drop = random_acc - temporal_acc
    print(f"drift: temporal is {100 * drop:.1f} points lower")
    if gen_seconds is not None:
        print(f"generation: {gen_seconds:.1f} s")

    result = {
        "benchmark": "drift_baseline",
        "command": "python benchmarks/drift_baseline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "records": args.records,
        "model": f"tfidf word(1,2)+char_wb(2,5), LinearSVC(C={args.C})",
        "random_split": {"train": len(tr), "test": len(te), "accuracy": random_acc, "accuracy_clean_labels": random_clean},
        "temporal": {"train": int(early.sum()), "test": int(later.sum()), "accuracy": temporal_acc, "accuracy_clean_labels": temporal_clean},
        "drop_points": 100 * drop,
        "generation_seconds": gen_seconds,
        "fit_predict_seconds": fit_seconds,
        "versions": {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    ok = 0.70 <= temporal_acc <= 0.92 and 0.70 <= random_acc <= 0.92 and drop >= 0.04
    if not ok:
        print("note: outside the calibration target (both 70-92%, temporal >= 4 points lower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
