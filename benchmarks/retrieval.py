"""Dense, lexical and hybrid retrieval side by side: recall@k of the true category and knn accuracy.

The `knn` engine is also the retriever of the `llm` engine (its few-shot examples and label
shortlist), so one run measures both uses:

- examples recall@k: the true category is among the categories of the k retrieved points
  (`KnnEngine.retrieve_batch`, no per-class cap);
- shortlist recall@k: the true category is among the k most likely categories (`shortlist`);
- accuracy of `knn`, and of `tfidf` fitted on the same training data as the reference.

Rows per data set: `knn` dense with its former defaults (temperature 0.05: knn before hybrid
retrieval), dense / lexical / hybrid with the mix and temperature chosen by leave-one-out on the
training data (the new default is hybrid). Examples (from the repository root; 2 cores: use nice):

    nice -n 10 python benchmarks/retrieval.py --json benchmarks/results/retrieval.json
    nice -n 10 python benchmarks/retrieval.py --datasets denials_temporal --records 20000 --seed 7
    nice -n 10 python benchmarks/retrieval.py --train A.csv --test B.csv

Data sets: `denials_temporal` (generated, `--seed`, `--records`; train months 1-12, test 13-18),
`denials_random` (80/20 random split of months 1-12, split seed = `--seed`), `banking77`
(full train/test), `clinc150` (in-scope train/test: out-of-scope has no category to retrieve).
Fit and predict seconds are wall time with the embedding cache as found (not an embedder speed
figure); CPU model and load average are stored with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load as load_avg
from _machine import machine
from engines import read_csv

from taxonomist.engines import create_engine
from taxonomist.retrieval import knn_vote, recall_at_k

KS = (1, 5, 10, 20)
VARIANTS = (
    ("knn dense, former defaults (T=0.05)", {"retrieval": "dense", "temperature": 0.05}),
    ("knn dense", {"retrieval": "dense"}),
    ("knn lexical", {"retrieval": "lexical"}),
    ("knn hybrid (default)", {}),
)
DATASETS = ("denials_temporal", "denials_random", "banking77", "clinc150")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_dataset(name: str, args) -> dict:
    if name.startswith("denials"):
        from taxonomist.demo_data import generate_records

        cols = generate_records(records=args.records, seed=args.seed)
        month = np.asarray(cols["month"])
        if name == "denials_temporal":
            train, test = np.flatnonzero(month <= 12), np.flatnonzero((month >= 13) & (month <= 18))
        else:
            early = np.flatnonzero(month <= 12)
            rng = np.random.default_rng(args.seed)
            rng.shuffle(early)
            cut = int(0.8 * len(early))
            train, test = np.sort(early[:cut]), np.sort(early[cut:])
        texts, labels = cols["text"], cols["label"]
        return {"name": f"{name}_seed{args.seed}_{args.records}",
                "train": ([texts[i] for i in train], [labels[i] for i in train]),
                "test": ([texts[i] for i in test], [labels[i] for i in test])}
    root = Path(args.data_dir)
    if name == "banking77":
        return {"name": name, "train": read_csv(root / "banking77/train.csv"), "test": read_csv(root / "banking77/test.csv")}
    if name == "clinc150":
        data = json.loads((root / "clinc150/data_full.json").read_text())
        pick = lambda key: ([t for t, _ in data[key]], [y for _, y in data[key]])
        return {"name": "clinc150_in_scope", "train": pick("train"), "test": pick("test")}
    raise SystemExit(f"unknown data set '{name}' (known: {', '.join(DATASETS)})")


def measure_knn(params: dict, train, test) -> dict:
    """Fit knn, then one similarity pass over the test texts gives accuracy and both recalls."""
    start = time.perf_counter()
    engine = create_engine("knn", **params).fit(*train)
    fit_s = time.perf_counter() - start
    texts, truth = test
    start = time.perf_counter()
    correct, examples, shortlists = 0, [], []
    classes = np.asarray(engine.classes_)
    for i in range(0, len(texts), 1024):
        sims = engine._similarities(texts[i : i + 1024])
        proba = knn_vote(sims, engine._point_class, len(classes), engine.k, engine.temperature_)
        order = np.argsort(-proba, axis=1, kind="stable")[:, : max(KS)]
        shortlists.extend(classes[order].tolist())
        correct += int((classes[order[:, 0]] == np.asarray(truth[i : i + 1024], dtype=object)).sum())
        examples.extend([e.category for e in engine._ranked(row, k=max(KS))] for row in sims)
    predict_s = time.perf_counter() - start
    return {
        "accuracy": round(correct / len(texts), 4),
        "examples_recall": {k: round(v, 4) for k, v in recall_at_k(truth, examples, KS).items()},
        "shortlist_recall": {k: round(v, 4) for k, v in recall_at_k(truth, shortlists, KS).items()},
        "mix": engine.mix_, "temperature": engine.temperature_, "cv_accuracy": engine.cv_accuracy_,
        "fit_seconds": round(fit_s, 1), "predict_seconds": round(predict_s, 1), "load_avg_after": load_avg(),
    }


def measure_tfidf(train, test) -> dict:
    start = time.perf_counter()
    engine = create_engine("tfidf").fit(*train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = float((engine.predict(test[0]) == np.asarray(test[1], dtype=object)).mean())
    return {"accuracy": round(accuracy, 4), "fit_seconds": round(fit_s, 1),
            "predict_seconds": round(time.perf_counter() - start, 1), "load_avg_after": load_avg()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of: {', '.join(DATASETS)}")
    ap.add_argument("--train", help="a text,label CSV instead of --datasets (with --test)")
    ap.add_argument("--test")
    ap.add_argument("--data-dir", default="../shared/data", help="holds banking77/ and clinc150/")
    ap.add_argument("--seed", type=int, default=7, help="denials: generator seed and random-split seed")
    ap.add_argument("--records", type=int, default=20_000, help="denials: records generated")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)

    from taxonomist.embed import get_embedder

    get_embedder("minilm").encode(["load the model before any timing"])
    names = ["custom"] if args.train else [d.strip() for d in args.datasets.split(",") if d.strip()]
    rows = []
    for name in names:
        ds = ({"name": Path(args.train).stem, "train": read_csv(Path(args.train)), "test": read_csv(Path(args.test))}
              if name == "custom" else load_dataset(name, args))
        say(f"{ds['name']}: {len(ds['train'][0]):,} train, {len(ds['test'][0]):,} test")
        ref = measure_tfidf(ds["train"], ds["test"])
        rows.append({"dataset": ds["name"], "engine": "tfidf", **ref})
        say(f"  tfidf {ref['accuracy']:.2%}")
        for label, params in VARIANTS:
            row = {"dataset": ds["name"], "engine": label, "params": params, **measure_knn(params, ds["train"], ds["test"])}
            rows.append(row)
            say(f"  {label}: {row['accuracy']:.2%} (mix {row['mix']}, T {row['temperature']})")

    head = f"{'data set':<26} {'engine':<36} {'acc':>6} " + " ".join(f"{'ex@' + str(k):>6}" for k in KS) + " " + \
        " ".join(f"{'sl@' + str(k):>6}" for k in KS) + f" {'mix':>4} {'T':>5} {'fit s':>6} {'pred s':>6}"
    print(head)
    for r in rows:
        ex = r.get("examples_recall", {})
        sl = r.get("shortlist_recall", {})
        cells = " ".join(f"{ex[k]:>6.1%}" if k in ex else f"{'':>6}" for k in KS) + " " + \
            " ".join(f"{sl[k]:>6.1%}" if k in sl else f"{'':>6}" for k in KS)
        mix = f"{r['mix']:>4.1f}" if "mix" in r else f"{'':>4}"
        temp = f"{r['temperature']:>5.2f}" if "temperature" in r else f"{'':>5}"
        print(f"{r['dataset']:<26} {r['engine']:<36} {r['accuracy']:>6.1%} {cells} {mix} {temp} "
              f"{r['fit_seconds']:>6.1f} {r['predict_seconds']:>6.1f}")
    if args.json:
        out = {"benchmark": "retrieval", "command": "python benchmarks/retrieval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine(), "ks": list(KS), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        say(f"wrote {args.json}")


if __name__ == "__main__":
    main()
