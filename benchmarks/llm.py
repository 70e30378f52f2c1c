"""Benchmark the `llm` engine (prompt + retrieval, local SmolLM2) against `knn` alone on a BANKING77 test sample.

    flock /tmp/taxonomist-heavy.lock nice .venv/bin/python benchmarks/llm.py \
        --data-dir ../shared/data --n 300 --seed 0 --json OUT.json

Measures, on the same sample: accuracy, abstain rate, share of valid outputs
(a taxonomy code or NONE), prompt tokens per prediction (counted with the
model's tokenizer), prompt tokens actually evaluated vs reused from the KV
prefix cache, the first call's evaluated tokens vs later calls', predictions
per second, and the cost at the local CPU-hour price. The `llm` engine runs
with the shortlist (answers constrained to retrieval's top labels + NONE) and,
on the first `--n-noshort` records, without it (all 77 codes + NONE).
Prints a table and writes JSON rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from taxonomist.engines import create_engine  # noqa: E402
from taxonomist.taxonomy import ABSTAIN  # noqa: E402


def read(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def pool(texts: list[str], labels: list[str], shots: int | None, seed: int) -> tuple[list[str], list[str]]:
    if not shots:
        return texts, labels
    rng = random.Random(seed)
    by: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by.setdefault(y, []).append(i)
    keep = sorted(i for idx in by.values() for i in rng.sample(idx, min(shots, len(idx))))
    return [texts[i] for i in keep], [labels[i] for i in keep]


def run_llm(engine, texts: list[str], gold: list[str], codes: set[str], label: str) -> dict:
    start = time.perf_counter()
    preds = []
    for i, text in enumerate(texts):
        preds.append(engine.predict_one(text))
        if (i + 1) % 25 == 0:
            done = time.perf_counter() - start
            print(f"  {label}: {i + 1}/{len(texts)} in {done:.0f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    cats = [p.category for p in preds]
    fresh = [p for p in preds if not p.extra.get("from_cache")]
    prompt_tokens = [p.extra["prompt_tokens"] for p in fresh]
    evaluated = [p.extra["evaluated_tokens"] for p in fresh]
    cached = [p.extra["cached_tokens"] for p in fresh]
    answered = [c != ABSTAIN for c in cats]
    correct = [c == g for c, g in zip(cats, gold)]
    return {
        "system": label,
        "n": len(texts),
        "accuracy": float(np.mean(correct)),
        "accuracy_answered": float(np.mean([ok for ok, a in zip(correct, answered) if a])) if any(answered) else 0.0,
        "abstain_rate": 1.0 - float(np.mean(answered)),
        "valid_rate": float(np.mean([c in codes or c == ABSTAIN for c in cats])),
        "repaired": int(sum(p.extra.get("repaired", False) for p in preds)),
        "prompt_tokens_mean": float(np.mean(prompt_tokens)),
        "prompt_tokens_max": int(max(prompt_tokens)),
        "prompt_tokens_exact": all(p.extra.get("prompt_tokens_exact", False) for p in fresh),
        "evaluated_tokens_mean": float(np.mean(evaluated)),
        "cached_tokens_mean": float(np.mean(cached)),
        "cached_share": float(sum(cached) / max(1, sum(prompt_tokens))),
        "first_call_evaluated": int(evaluated[0]),
        "later_calls_evaluated_mean": float(np.mean(evaluated[1:])) if len(evaluated) > 1 else float("nan"),
        "completion_tokens_mean": float(np.mean([p.extra["completion_tokens"] for p in fresh])),
        "predictions_per_s": len(texts) / seconds,
        "seconds": seconds,
        "latency_ms_median": float(statistics.median(p.latency_ms for p in preds)),
        "cost_usd": float(sum(p.cost_usd for p in preds)),
        "cost_usd_per_1k": float(sum(p.cost_usd for p in preds)) / len(texts) * 1000,
        "mean_confidence": float(np.mean([p.confidence for p in preds])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data", type=Path)
    ap.add_argument("--n", type=int, default=300, help="test records sampled (fixed seed)")
    ap.add_argument("--n-noshort", type=int, default=100, help="of those, how many also run without the shortlist (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, default=0, help="examples per class in the retrieval pool (0: the full train set)")
    ap.add_argument("--shortlist", type=int, default=10)
    ap.add_argument("--examples", type=int, default=8, help="few-shot examples per prompt")
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--max-prompt-tokens", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    base = args.data_dir / "banking77"
    train_texts, train_labels = pool(*read(base / "train.csv"), args.shots, args.seed)
    test_texts, test_labels = read(base / "test.csv")
    rng = random.Random(args.seed)
    idx = sorted(rng.sample(range(len(test_texts)), args.n))
    texts, gold = [test_texts[i] for i in idx], [test_labels[i] for i in idx]
    codes = set(train_labels)
    print(f"BANKING77: pool {len(train_texts)} examples, {len(codes)} classes; sample {len(texts)} test records (seed {args.seed})", file=sys.stderr)

    rows = []
    t = time.perf_counter()
    knn = create_engine("knn").fit(train_texts, train_labels)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    knn_pred = knn.predict(texts)
    knn_s = time.perf_counter() - t
    rows.append({"system": "knn (MiniLM, k=10)", "n": len(texts), "accuracy": float(np.mean(knn_pred == np.asarray(gold))),
                 "abstain_rate": 0.0, "valid_rate": 1.0, "predictions_per_s": len(texts) / knn_s, "fit_seconds": fit_s,
                 "cost_usd": 0.0})
    print(f"  knn: accuracy {rows[-1]['accuracy']:.3f}", file=sys.stderr)

    common = dict(n_examples=args.examples, per_class=args.per_class, max_prompt_tokens=args.max_prompt_tokens,
                  n_threads=args.threads, cache=False, retriever_params={"k": 10})
    llm = create_engine("llm", shortlist=args.shortlist, **common)
    # The llm engine's fit only indexes the examples in a knn retriever, which knn just did: reuse it.
    llm.fit_from_retriever(knn)
    rows.append(run_llm(llm, texts, gold, codes, f"llm SmolLM2-135M, shortlist {args.shortlist}"))
    rows[-1]["shortlist_recall"] = float(np.mean([g in [c for c, _ in knn.shortlist(x, args.shortlist)] for x, g in zip(texts, gold)]))
    if args.n_noshort:
        k = min(args.n_noshort, len(texts))
        full = create_engine("llm", shortlist=0, **common)
        full.fit_from_retriever(knn)
        rows.append(run_llm(full, texts[:k], gold[:k], codes, "llm SmolLM2-135M, no shortlist (77 codes)"))
        rows.append({"system": f"knn on the same {k}", "n": k, "accuracy": float(np.mean(knn_pred[:k] == np.asarray(gold[:k])))})

    header = ["system", "n", "accuracy", "abstain_rate", "valid_rate", "prompt_tokens_mean", "prompt_tokens_max",
              "evaluated_tokens_mean", "cached_tokens_mean", "first_call_evaluated", "later_calls_evaluated_mean",
              "predictions_per_s", "cost_usd_per_1k"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = []
        for h in header:
            v = r.get(h, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")
    if args.json:
        meta = {"benchmark": "llm", "dataset": "banking77", "seed": args.seed, "n": args.n, "shots": args.shots,
                "machine": f"{platform.machine()} {os.cpu_count()} cpu", "command": " ".join(sys.argv),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
