"""Load on the review service: concurrent single-record classify calls against `taxonomist serve` on 127.0.0.1.

    nice -n 10 python benchmarks/api_load.py                       # tfidf 5,000 calls, head 1,000; 50 clients
    python benchmarks/api_load.py --engines tfidf --calls 200 --clients 10 --batching on --json /tmp/x.json   # quick

For each engine: a fresh SQLite store of demo denials (taxonomist.demo_data), the
engine trained on its labelled part and activated, a classifier key; then for each
micro-batching setting a real `taxonomist serve` child process, 20 warm-up calls,
and `--calls` POST /v1/classify calls of one record each from `--clients` threads
(one keep-alive HTTP connection each). Every text is made unique so no cache
flatters a figure. Reported: throughput (calls/s over the whole run), p50/p95/p99
latency, errors (any status other than 200, or a failed connection), and the
server's model calls (records per `predict_batch`, from /readyz). Client and server
share the machine: on 2 cores the client threads take part of the CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from _machine import cpu_model as _cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALLS = {"tfidf": 5000, "head": 1000}
FIELDS = ("payer", "cpt", "modifiers", "pos", "group_code", "carc", "rarcs")


def build(work: Path, engine: str, records: int, labelled: int) -> tuple[Path, str, list[str]]:
    """(store path, a classifier key, texts to send): demo records, `engine` trained and active."""
    from taxonomist import service
    from taxonomist.api.keys import new_key
    from taxonomist.demo_data import demo_taxonomy, generate_records
    from taxonomist.records import Record
    from taxonomist.store import Store

    cols = generate_records(records=records, seed=11)
    recs = [Record(id=cols["id"][i], text=cols["text"][i], fields={k: cols[k][i] for k in FIELDS},
                   source=cols["payer"][i], date=dt.date.fromisoformat(cols["date"][i]), label=cols["label"][i])
            for i in range(records)]
    tax = demo_taxonomy()
    db = work / "store.db"
    with Store.open(db) as store:
        store.save_taxonomy(tax)
        store.add_records(recs[:labelled], who="bench", taxonomy_version=tax.version_id)
        service.train(engine, recs[:labelled], out=work / f"model-{engine}", taxonomy=tax, store=store,
                      activate=True, target_accuracy=0.8)
        key, digest, prefix = new_key()
        store.add_api_key(name="load-test", role="classifier", key_hash=digest, prefix=prefix, who="bench")
    return db, key, [r.text for r in recs[labelled:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"taxonomist serve exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("taxonomist serve did not become ready")


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[i]


def load(url: str, key: str, texts: list[str], *, calls: int, clients: int, tag: str) -> dict:
    """`calls` single-record classify calls from `clients` threads; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(calls))

    def client() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = {"records": [{"id": f"{tag}-{i}", "text": f"{texts[i % len(texts)]} ref {tag}{i}"}]}
                start = time.perf_counter()
                try:
                    r = http.post("/v1/classify", json=body)
                    ok = r.status_code == 200 and len(r.json()["decisions"]) == 1
                    problem = "" if ok else f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                ms = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(ms)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = sorted(latencies)
    return {"calls": calls, "clients": clients, "seconds": round(wall, 2), "throughput": round(calls / wall, 1),
            "p50_ms": round(_percentile(ms, 0.50), 1), "p95_ms": round(_percentile(ms, 0.95), 1),
            "p99_ms": round(_percentile(ms, 0.99), 1), "errors": len(errors), "error_kinds": sorted(set(errors))}


def run_server(db: Path, key: str, texts: list[str], *, batching: bool, calls: int, clients: int, log: Path,
               max_batch: int, max_wait_ms: float) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "taxonomist", "serve", "--db", str(db), "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--micro-batching" if batching else "--no-micro-batching"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            _ready(url, proc)
            load(url, key, texts, calls=20, clients=min(clients, 5), tag="warm")
            before = _ready(url, proc)["checks"]
            result = load(url, key, texts, calls=calls, clients=clients, tag="b" if batching else "u")
            after = _ready(url, proc)["checks"]
        finally:
            proc.terminate()
            proc.wait(30)
    model_calls = after["model_calls"] - before["model_calls"]
    classified = after["classified"] - before["classified"]
    result.update(micro_batching=batching, model_calls=model_calls,
                  records_per_model_call=round(classified / model_calls, 2) if model_calls else None)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="tfidf,head")
    ap.add_argument("--calls", type=int, default=None, help="Calls per run (default: tfidf 5000, head 1000).")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batching", default="on,off", help="on, off or on,off")
    ap.add_argument("--records", type=int, default=4000, help="Demo records drawn (labelled ones train the model).")
    ap.add_argument("--labelled", type=int, default=2000)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "api_load.json")
    args = ap.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="taxonomist-api-load-") as tmp:
        for engine in args.engines.split(","):
            work = Path(tmp) / engine
            work.mkdir()
            t0 = time.perf_counter()
            db, key, texts = build(work, engine, args.records, args.labelled)
            print(f"{engine}: store and model ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            calls = args.calls or DEFAULT_CALLS.get(engine, 1000)
            for mode in args.batching.split(","):
                result = run_server(db, key, texts, batching=mode == "on", calls=calls, clients=args.clients,
                                    log=work / f"serve-{mode}.log", max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
                log_text = (work / f"serve-{mode}.log").read_text(errors="replace")
                result["text_in_server_log"] = any(t[:40] in log_text for t in texts[:200])
                result["engine"] = engine
                runs.append(result)
                print(f"{engine} micro-batching {mode}: {result['throughput']} calls/s, p50 {result['p50_ms']} ms, "
                      f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}", file=sys.stderr)
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_before": load_before,
               "load_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}
    header = ("engine", "micro-batching", "calls", "clients", "calls/s", "p50 ms", "p95 ms", "p99 ms", "errors",
              "records/model call")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in runs:
        print(f"| {r['engine']} | {'on' if r['micro_batching'] else 'off'} | {r['calls']:,} | {r['clients']} | "
              f"{r['throughput']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | "
              f"{r['records_per_model_call']} |")
    print(f"\nCPU {machine['cpu']} ({machine['cores']} cores), load {load_before} -> {machine['load_after']}")
    shown = {k: (os.path.relpath(v, ROOT) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out = {"benchmark": "api_load", "args": shown,
           "machine": machine, "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    return 1 if any(r["errors"] or r["text_in_server_log"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
