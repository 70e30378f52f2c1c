"""MiniLM fp32 ONNX on long texts: one session with every thread, or one single-thread session per core side by side?

    python benchmarks/embed_threads.py [--data DENIALS.parquet | --records 2000 --seed 11] [--texts 2000]
        [--json benchmarks/results/embed_threads.json]

The 80,000-record compare spends a third of its time embedding denial texts (~40-60 tokens each) with one
onnxruntime session using both cores (issue 15). This measures, on the same texts and in one run, the texts per
second of: one session with `cores` intra-op threads; one session with one thread; `cores` single-thread
sessions, each on its share of the texts, side by side on threads (onnxruntime releases the GIL). No cache.
Prints a table and writes JSON with the CPU model, flags and load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import _cores, cpu_flags, cpu_model, load  # noqa: E402

from taxonomist.embed import OnnxEmbedder  # noqa: E402


def _texts(args: argparse.Namespace) -> list[str]:
    import pandas as pd

    if args.data is None:
        from taxonomist.cli import main

        out = Path(tempfile.mkdtemp(prefix="embed-threads-"))
        try:
            main(["demo-data", "--out", str(out), "--seed", str(args.seed), "--records", str(max(args.records, 2000))])
        except SystemExit as exc:
            if exc.code:
                raise
        args.data = out / "denials.parquet"
    texts = pd.read_parquet(args.data, columns=["text"]).text.dropna().astype(str)
    return texts.sample(min(args.texts, len(texts)), random_state=args.seed).tolist()


def _rate(encode, texts: list[str]) -> float:
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="a denials.parquet (default: generate one)")
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    texts = _texts(args)
    cores = _cores()
    load_before = load()
    many = OnnxEmbedder(threads=cores, cache=None)
    singles = [OnnxEmbedder(threads=1, cache=None) for _ in range(cores)]
    many._encode(texts[:64])  # warm both kinds of session once
    for s in singles:
        s._encode(texts[:64])

    def side_by_side(batch: list[str]) -> None:
        shares = [batch[i::cores] for i in range(cores)]
        workers = [threading.Thread(target=s._encode, args=(share,)) for s, share in zip(singles, shares)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    rows = [
        {"setup": f"one session, {cores} threads", "texts_per_s": _rate(many._encode, texts)},
        {"setup": "one session, 1 thread", "texts_per_s": _rate(singles[0]._encode, texts[: len(texts) // 2])},
        {"setup": f"{cores} single-thread sessions side by side", "texts_per_s": _rate(side_by_side, texts)},
    ]
    base = rows[0]["texts_per_s"]
    print(f"{len(texts):,} denial texts, {cpu_model()}, {cores} cores, load {load_before} -> {load()}")
    print(f"{'setup':<40} {'texts/s':>9} {'vs first':>9}")
    for r in rows:
        r["ratio"] = r["texts_per_s"] / base
        print(f"{r['setup']:<40} {r['texts_per_s']:>9.1f} {r['ratio']:>8.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"cpu": cpu_model(), "flags": cpu_flags(), "cores": cores, "load_before": load_before,
                "load_after": load(), "texts": len(texts), "data": str(args.data), "command": " ".join(sys.argv)}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
