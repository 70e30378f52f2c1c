"""Latency of one `predict_one` (the API's per-record path) on short texts: p50/p95 per engine, with the machine.

    nice python benchmarks/latency.py --engines head,tfidf --json benchmarks/results/latency.json
    nice python benchmarks/latency.py --engines head --profile      # where the time goes (cProfile, top 25)
    nice python benchmarks/latency.py --engines head,head:minilm-onnx  # `engine:embedder` for another embedder

Each engine is fitted on the vendored BANKING77 subset (tests/data, 300 texts; `--train` for another CSV with
text,label), saved and loaded back (the API serves a loaded model), in a fresh TAXONOMIST_HOME. Then
`--n` test texts are predicted one call at a time, engines interleaved so all see the same load: "new" calls
embed a text never seen (the embedding cache misses, as for a new record), "repeat" calls predict the same
texts again (cache hits). Wall-clock and process CPU milliseconds are both kept: on a loaded machine wall
time mostly measures the queue for a core, CPU time the work. Goal (issue 17): `head` p50 under 10 ms.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the torch embedder sets it (see embed.TorchEmbedder)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine, peak_fp32  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def read(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    key = "label" if "label" in rows[0] else "category"
    return [r["text"] for r in rows], [r[key] for r in rows]


def percentiles(ms: list[float]) -> dict:
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="head,tfidf")
    ap.add_argument("--train", default=str(ROOT / "tests/data/banking77_small_train.csv"))
    ap.add_argument("--test", default=str(ROOT / "tests/data/banking77_small_test.csv"))
    ap.add_argument("--n", type=int, default=100, help="calls per engine and mode")
    ap.add_argument("--profile", action="store_true", help="print where the time of the 'new' calls goes")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    os.environ["TAXONOMIST_HOME"] = tempfile.mkdtemp(prefix="taxonomist-latency-")
    from taxonomist.engines.base import create_engine, load_engine

    train, test = read(Path(args.train)), read(Path(args.test))[0]
    texts = [test[i % len(test)] + ("" if i < len(test) else f" ({i // len(test)})") for i in range(args.n)]
    before = machine()  # with the measured peak
    engines = {}
    for name in args.engines.split(","):
        engine_name, _, embedder = name.partition(":")  # "head:minilm-onnx": head over another embedder
        fitted = create_engine(engine_name, **({"embedder": embedder} if embedder else {})).fit(*train)
        directory = Path(os.environ["TAXONOMIST_HOME"]) / "models" / name.replace(":", "-")
        fitted.save(directory)
        engines[name] = load_engine(directory)
        engines[name].predict_one("warm up the model and its caches")
    probes = [peak_fp32()]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    for mode in ("new", "repeat"):
        for text in texts:
            for name, engine in engines.items():
                if profiler is not None and mode == "new":
                    profiler.enable()
                wall, cpu = time.perf_counter(), time.process_time()
                engine.predict_one(text)
                took = ((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)
                if profiler is not None:
                    profiler.disable()
                times.setdefault((name, mode), []).append(took)
    probes.append(peak_fp32())
    after = machine(peak_seconds=0)
    rows = []
    for (name, mode), ms in times.items():
        wall, cpu = [m[0] for m in ms], [m[1] for m in ms]
        rows.append({"engine": name, "mode": mode, "calls": len(ms), **{f"wall_{k}_ms": v for k, v in percentiles(wall).items()},
                     **{f"cpu_{k}_ms": v for k, v in percentiles(cpu).items()},
                     "embedder": getattr(engines[name], "base_model_", "") or None})
    meta = {**before, "load_avg_after": after["load_avg"], "fp32_probes_gflops": probes, "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"CPU: {meta['cpu']} ({meta['cores']} cores; {' '.join(meta['flags'])}); load {before['load_avg']} -> {after['load_avg']}; "
          f"fp32 probe {probes} GFLOP/s")
    cols = ["engine", "mode", "calls", "wall_p50_ms", "wall_p95_ms", "cpu_p50_ms", "cpu_p95_ms", "embedder"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if profiler is not None:
        import pstats

        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
