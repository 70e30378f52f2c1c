"""What a record's structured fields add next to its text: `tfidf` on the text alone vs text + one-hot fields.

The generated denials (`taxonomist demo-data`) carry codes in columns (group code, CARC, RARCs, payer, CPT,
modifiers, place of service, amounts) as well as in their rendered text. The data is read the way
`taxonomist compare --text-fields ...` reads it (`compare.dataset.load_dataset`): the declared columns are
written before the text as `name=value ... | text`, and `tfidf`'s `fields="auto"` turns them into one-hot
features next to the word and character n-grams of the text (see `TfidfEngine`). The text-only row gives
`tfidf` the same records without that prefix.

Two splits, as `benchmarks/drift_baseline.py` draws them: temporal (train months 1-12, test 13-18) and random
(80/20 of months 1-12, `random_state=seed`). Each row also shows the data's accuracy ceiling on its test
records (the report's: every record whose text determines its category, plus, among the others, those whose
label is their code pattern's most common one over the whole data set) and accuracy split by
`text_determines`. Run:

    nice python benchmarks/denials_features.py --out-dir /tmp/d7 --seed 7 --records 80000 \\
        --json benchmarks/results/denials_features_seed7.json

Data is generated into --out-dir unless it already holds denials.csv made with the same seed and size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

#: The columns the issue names (codes, service, payer) and the three amounts of a claim line.
DEFAULT_FIELDS = ("group_code", "carc", "rarcs", "payer", "cpt", "modifiers", "pos",
                  "billed_amount", "paid_amount", "adjustment_amount")


def _data(out_dir: Path, seed: int, records: int, regenerate: bool) -> Path:
    card, data = out_dir / "DATACARD.md", out_dir / "denials.csv"
    fresh = (not regenerate and data.is_file() and card.is_file()
             and f"Seed **{seed}**" in card.read_text(encoding="utf-8")
             and f"**{records:,}** records" in card.read_text(encoding="utf-8"))
    if not fresh:
        from taxonomist.demo_data import generate

        generate(out_dir, seed=seed, records=records)
    return data


def _reachable(ds) -> np.ndarray:
    """Per record: could a perfect reader of its text get it right (the report's ceiling, `compare.harness`)."""
    det, pattern = ds.extra["text_determines"], ds.extra["pattern"]
    counts: dict[str, Counter] = {}
    for ok, lab, pat in zip(det.tolist(), ds.labels.tolist(), pattern.tolist()):
        if not ok:
            counts.setdefault(pat, Counter())[lab] += 1
    guess = {p: c.most_common(1)[0][0] for p, c in counts.items()}
    return det | np.array([guess.get(p) == y for p, y in zip(pattern.tolist(), ds.labels.tolist())])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/taxonomist-demo"), help="where the demo data is (or is written)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--records", type=int, default=80_000)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--fields", default=",".join(DEFAULT_FIELDS), help="columns given to the engine as fields")
    ap.add_argument("--splits", default="temporal,random")
    ap.add_argument("--variants", default='{"text": {"fields": false}, "text+fields": {}}',
                    help="JSON {row name: tfidf params}; a row with fields=false reads the text alone")
    ap.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = ap.parse_args(argv)

    from sklearn.model_selection import train_test_split

    from taxonomist.compare.dataset import load_dataset
    from taxonomist.engines import create_engine
    from taxonomist.engines.tfidf import split_fields

    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    path = _data(args.out_dir, args.seed, args.records, args.regenerate)
    ds = load_dataset(path, text_fields=fields)
    composed = ds.texts.tolist()
    plain = [split_fields(t)[1] for t in composed]
    y, month = ds.labels, ds.months
    det, reach = ds.extra["text_determines"], _reachable(ds)
    early = np.flatnonzero(month <= 12)
    later = np.flatnonzero((month >= 13) & (month <= 18))
    tr_r, te_r = train_test_split(early, test_size=0.2, random_state=args.seed)
    splits = {"temporal": (early, later), "random": (tr_r, te_r)}
    variants = json.loads(args.variants)

    rows = []
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        tr, te = splits[split]
        for name, params in variants.items():
            texts = plain if params.get("fields", "auto") is False else composed
            engine = create_engine("tfidf", **params)
            engine.fit([texts[i] for i in tr], y[tr].tolist())
            start = time.perf_counter()
            pred = engine.predict([texts[i] for i in te])
            predict_s = time.perf_counter() - start
            ok = pred == y[te]
            rows.append({
                "split": split, "variant": name, "params": params, "seed": args.seed, "records": args.records,
                "fields": fields if texts is composed else [], "n_train": len(tr), "n_test": len(te),
                "n_field_features": len(getattr(engine, "field_vocabulary_", None) or {}),
                "accuracy": round(float(ok.mean()), 4),
                "accuracy_text_determines": round(float(ok[det[te]].mean()), 4),
                "accuracy_other": round(float(ok[~det[te]].mean()), 4),
                "ceiling": round(float(reach[te].mean()), 4),
                "train_seconds": round(engine.train_seconds_, 1), "predict_seconds": round(predict_s, 1),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps({"benchmark": "denials_features", "machine": machine(), "rows": rows}, indent=2) + "\n")

    print(f"tfidf on generated denials, seed {args.seed}, {args.records:,} records; fields: {', '.join(fields)}")
    print(f"{'split':<9} {'variant':<14} {'train':>6} {'test':>6} {'accuracy':>9} {'text decides':>13} {'other':>7} {'ceiling':>8} {'to ceiling':>11} {'train s':>8}")
    for r in rows:
        print(f"{r['split']:<9} {r['variant']:<14} {r['n_train']:>6} {r['n_test']:>6} {r['accuracy']:>9.2%} "
              f"{r['accuracy_text_determines']:>13.2%} {r['accuracy_other']:>7.2%} {r['ceiling']:>8.2%} "
              f"{r['ceiling'] - r['accuracy']:>11.2%} {r['train_seconds']:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
