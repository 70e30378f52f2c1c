"""Which liblinear solver tfidf should use: the dual (coordinate descent) against sklearn's default choice.

sklearn's `LinearSVC(dual="auto")` picks the primal Newton solver (TRON) whenever a
training set has more records than features. TF-IDF features of generated denials
number ~57,000 at 60,000 records, so from about 50,000 records the default flipped to
the primal solver, and a tfidf fit took minutes instead of seconds. Both solve the same
problem (L2-regularised squared hinge); this script fits both on the same features,
side by side, and reports the time, iterations and how often their predictions agree on
held-out records.

    nice python benchmarks/tfidf_solver.py --records 80000 --sizes 20000,60000 --json benchmarks/results/tfidf_solver.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from taxonomist.engines.tfidf import _fit_features  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=80_000, help="generated denial records to draw from")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sizes", default="20000,60000", help="training set sizes, comma-separated")
    ap.add_argument("--test", type=int, default=5000, help="held-out records scored by both solvers")
    ap.add_argument("--C", type=float, default=0.5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from taxonomist.demo_data import generate_records

    cols = generate_records(records=args.records, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(len(cols["text"]))
    texts = np.array(cols["text"], dtype=object)[order]
    labels = np.array(cols["label"], dtype=object)[order]
    test_texts = texts[: args.test].tolist()
    meta = {"machine": machine(peak_seconds=0), "command": " ".join(["python", *sys.argv]), "seed": args.seed}
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        train_texts, y = texts[args.test : args.test + n].tolist(), labels[args.test : args.test + n]
        (word, xw), (char, xc) = _fit_features(train_texts, 1, 2)
        x = sparse.hstack([xw, xc]).tocsr()
        xt = sparse.hstack([word.transform(test_texts), char.transform(test_texts)]).tocsr()
        preds = {}
        for dual in (True, "auto"):
            start, cpu = time.perf_counter(), time.process_time()
            svm = LinearSVC(C=args.C, dual=dual, random_state=0).fit(x, y)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            preds[dual] = svm.predict(xt)
            chosen = "dual" if dual is True or x.shape[0] <= x.shape[1] else "primal"
            rows.append({"records": n, "features": x.shape[1], "dual_param": str(dual), "solver": chosen,
                         "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "n_iter": int(np.max(svm.n_iter_)),
                         "test_accuracy": round(float((preds[dual] == labels[: args.test]).mean()), 4)})
            print(f"{n:>7,} records {x.shape[1]:>7,} features  dual={str(dual):<5} ({chosen:<6}) "
                  f"{wall:7.1f} s wall {cpu:7.1f} s CPU  accuracy {rows[-1]['test_accuracy']:.2%}", flush=True)
        agree = float((preds[True] == preds["auto"]).mean())
        rows[-1]["agreement_with_dual"] = round(agree, 5)
        print(f"{'':>7} predictions agree on {agree:.3%} of {args.test:,} held-out records", flush=True)
    meta["load_after"] = machine(peak_seconds=0)["load_avg"]
    print(f"CPU {meta['machine']['cpu']}, {meta['machine']['cores']} cores, flags {' '.join(meta['machine']['flags'])}, "
          f"load {meta['machine']['load_avg']} -> {meta['load_after']}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
