"""Scale: records/s and peak memory of import, classify and the decision log at 10k / 100k / 1M records.

    nice -n 10 python benchmarks/scale.py --sizes 10000,100000,1000000 \\
        --stages import,classify-tfidf,decision-log --executors inprocess,ray \\
        --db sqlite --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres --work-dir /tmp/scale-work

Each measurement runs the real command line (`taxonomist import ...`, `taxonomist
classify ...`) in a fresh child process on a fresh store, and reports wall seconds,
records per second, the child's peak resident memory (os.wait4, i.e. getrusage of that
one child) and the peak of the summed PSS of the child and every process under it,
sampled each second (`peak_tree_mb`: what a Ray run costs in all, its raylet, object
store and workers included; PSS shares shared memory out instead of counting it once per
process). A PostgreSQL server's own memory is not included. For PostgreSQL, every run
gets a new database created on the named server (CREATE DATABASE, so the user needs
CREATEDB) and dropped afterwards; the database in the URL is only used to connect. The
input is the demo generator's denial records (taxonomist.demo_data: realistic text and
21 columns), drawn 100,000 at a time with a new seed and id prefix per block, so a size
of any number of records is cheap.

Stages: `import`; `classify-tfidf` and `classify-head` (classify a CSV into a predictions
file, no store: the model is trained once per work dir, untimed, on other generated
records: 20,000 for tfidf, 2,000 for head); `decision-log` (classify with tfidf and
--db, so every decision is written to the store's decision log and NONE ones to the
review queue; its extra time over classify-tfidf is the log's cost). Executors:
`inprocess`, and `ray` (`--executor ray` on a local Ray started by the command, on this
machine's CPUs; its start-up is in its time). Where both executors classified the same
input, their decisions are compared record by record (category, confidence, reason).

"Growth" is log(t2/t1) / log(n2/n1) against the previous size of the same stage,
executor and store: 1.0 means time grows linearly with the input, 2.0 quadratically;
"memory growth" the same for peak_tree_mb.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine as _machine  # noqa: E402

BLOCK = 100_000
#: Records each engine is trained on (untimed), generated apart from the records classified.
TRAIN_RECORDS = {"tfidf": 20_000, "head": 2_000}


@dataclass
class Run:
    """One measurement: a stage on an executor, a store, and an input of `size` records."""

    stage: str
    executor: str
    db_kind: str  # "sqlite" or "postgresql"
    size: int
    data: Path  # CSV of `size` generated records
    taxonomy: Path
    db_url: str = ""
    work: Path = Path(".")
    extra: dict = field(default_factory=dict)  # what a stage's preparation leaves for its command (a model id)


@dataclass(frozen=True)
class Stage:
    command: Callable[[Run], list[str]]  # taxonomist arguments, measured
    prepare: Callable[[Run], None] | None = None  # untimed set-up on the same store
    executors: tuple[str, ...] = ("inprocess",)
    uses_store: bool = True  # False: run once per size, not per store
    output: Callable[[Run], Path] | None = None  # a predictions file (or Parquet folder) to check and compare


def import_command(run: Run) -> list[str]:
    return ["import", str(run.data), "--taxonomy", str(run.taxonomy), "--db", run.db_url, "--who", "scale-bench"]


def trained(engine: str) -> Callable[[Run], None]:
    """Train `engine` once per work dir (untimed) on generated records apart from those classified."""

    def prepare(run: Run) -> None:
        model = run.work / f"model-{engine}"
        if not (model / "manifest.json").is_file():
            n = TRAIN_RECORDS[engine]
            data = write_records(run.work / f"train_{n}.csv", n, seed=1007, prefix="t")
            args = ["train", engine, "--data", str(data), "--out", str(model), "--target-accuracy", "0.95"]
            if engine != "tfidf":
                args += ["--calibrate", "0.2"]
            measure(args, run.work / f"train-{engine}.log", run.extra["env"])
        run.extra["model"] = str(model)

    return prepare


def output_path(run: Run) -> Path:
    kind = "parquet" if run.executor == "ray" else "csv"
    return run.work / f"out-{run.stage}-{run.executor}-{run.db_kind}-{run.size}.{kind}"


def classify_command(run: Run) -> list[str]:
    args = ["classify", "--model", run.extra["model"], "--input", str(run.data), "--output", str(output_path(run))]
    if run.db_url:
        args += ["--db", run.db_url, "--create"]
    return args


STAGES: dict[str, Stage] = {
    "import": Stage(import_command),
    "classify-tfidf": Stage(classify_command, trained("tfidf"), ("inprocess", "ray"), uses_store=False, output=output_path),
    "classify-head": Stage(classify_command, trained("head"), ("inprocess", "ray"), uses_store=False, output=output_path),
    "decision-log": Stage(classify_command, trained("tfidf"), ("inprocess", "ray"), output=output_path),
}
# Executors turn a stage's arguments into the arguments run.
EXECUTORS: dict[str, Callable[[list[str]], list[str]]] = {
    "inprocess": lambda args: args,
    "ray": lambda args: [*args, "--executor", "ray"],
}


# ----- input ------------------------------------------------------------------------------
def write_records(path: Path, n: int, *, seed: int = 7, prefix: str = "") -> Path:
    """`n` generated denial records as CSV (the demo's columns), 100,000 per generator call."""
    from taxonomist.demo_data import COLUMNS, _csv_value, generate_records  # the demo CSV's own formatting

    if path.is_file():
        return path
    tmp = path.with_suffix(".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for block, start in enumerate(range(0, n, BLOCK)):
            cols = generate_records(records=min(BLOCK, n - start), seed=seed + block)
            pre = prefix + (f"b{block}-" if block else "")
            for i in range(len(cols["id"])):
                w.writerow([pre + cols[c][i] if c == "id" else _csv_value(cols[c][i]) for c in COLUMNS])
    tmp.rename(path)
    return path


# ----- stores -----------------------------------------------------------------------------
class Stores:
    """A fresh, empty store per run: a SQLite file, or a new database on a PostgreSQL server."""

    def __init__(self, server_url: str | None, work: Path) -> None:
        self.server_url, self.work, self.count = server_url, work, 0

    def create(self, kind: str) -> str:
        self.count += 1
        if kind == "sqlite":
            return f"sqlite:///{self.work / f'store{self.count}.db'}"
        import sqlalchemy as sa

        name = f"taxonomist_scale_{os.getpid()}_{self.count}"
        self._admin(f'CREATE DATABASE "{name}"')
        return sa.engine.make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def size_mb(self, url: str) -> float:
        import sqlalchemy as sa

        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one() / 1e6

    def drop(self, url: str) -> None:
        import sqlalchemy as sa

        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            for p in path.parent.glob(path.name + "*"):
                p.unlink()
            return
        self._admin(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)')

    def server_version(self) -> str | None:
        if not self.server_url:
            return None
        import sqlalchemy as sa

        engine = sa.create_engine(self.server_url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            return conn.execute(sa.text("SHOW server_version")).scalar_one()

    def _admin(self, sql: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text(sql))


def count_rows(url: str, table: str = "records") -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def decisions(path: Path) -> dict[str, tuple[str, float, str]]:
    """id -> (category, confidence, reason) from a predictions CSV or a folder of Parquet parts."""
    if path.is_dir():
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["id", "category", "confidence", "reason"]).to_pydict()
        return {i: (c, round(float(x), 4), r or "") for i, c, x, r in zip(t["id"], t["category"], t["confidence"], t["reason"])}
    with path.open(encoding="utf-8", newline="") as f:
        return {r["id"]: (r["category"], round(float(r["confidence"]), 4), r["reason"] or "") for r in csv.DictReader(f)}


# ----- measuring --------------------------------------------------------------------------
def _tree_pss_mb(root: int) -> float:
    """Summed PSS (MB) of `root` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total_kb, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024


def measure(args: list[str], log: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run `python -m taxonomist ARGS` as a child: (wall seconds, its peak RSS in MB, peak PSS of its process tree in MB)."""
    with log.open("w") as out:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "taxonomist", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        peak, done = [0.0], threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                peak[0] = max(peak[0], _tree_pss_mb(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"taxonomist {args[0]} exited {child.returncode}; last lines of {log}:\n" + "\n".join(tail))
    rss = usage.ru_maxrss / 1024  # Linux reports KiB
    return seconds, rss, max(peak[0], rss)


def one(run: Run, stores: Stores, env: dict[str, str]) -> dict:
    stage, executor = STAGES[run.stage], EXECUTORS[run.executor]
    run.db_url = stores.create(run.db_kind) if stage.uses_store else ""
    run.extra["env"] = env
    try:
        if stage.prepare is not None:
            stage.prepare(run)
        args = executor(stage.command(run))
        load_before = os.getloadavg()[0]
        seconds, peak_mb, tree_mb = measure(args, run.work / f"{run.stage}-{run.executor}-{run.db_kind}-{run.size}.log", env)
        if run.stage == "import":
            stored = count_rows(run.db_url)
            assert stored == run.size, f"import stored {stored} of {run.size} records"
        if run.stage == "decision-log":
            logged = count_rows(run.db_url, "predictions")
            assert logged == run.size, f"the decision log holds {logged} of {run.size} decisions"
        if stage.output is not None:
            written = len(decisions(stage.output(run)))
            assert written == run.size, f"{stage.output(run)} holds {written} of {run.size} decisions"
        store_mb = stores.size_mb(run.db_url) if run.db_url else None
    finally:
        if run.db_url:
            stores.drop(run.db_url)
    return {
        "stage": run.stage, "executor": run.executor, "db": run.db_kind, "records": run.size,
        "seconds": round(seconds, 2), "records_per_second": round(run.size / seconds, 1),
        "peak_rss_mb": round(peak_mb, 1), "peak_tree_mb": round(tree_mb, 1),
        "store_mb": round(store_mb, 1) if store_mb is not None else None,
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
    }


def compare(rows: list[dict], work: Path) -> list[dict]:
    """Record by record, the decisions of the executors that classified the same input (then remove the outputs)."""
    checks = []
    by_input: dict[tuple, dict[str, Path]] = {}
    for r in rows:
        out = r.pop("_output", None)
        if out is not None:
            by_input.setdefault((r["stage"], r["db"], r["records"]), {})[r["executor"]] = Path(out)
    for (stage, db, size), outs in sorted(by_input.items()):
        if {"inprocess", "ray"} <= outs.keys():
            a, b = decisions(outs["inprocess"]), decisions(outs["ray"])
            differ = sum(1 for k in a if a[k] != b.get(k))
            checks.append({"stage": stage, "db": db, "records": size, "compared": len(a), "differ": differ,
                           "same_ids": set(a) == set(b)})
        for out in outs.values():
            shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
    return checks


def add_growth(rows: list[dict]) -> None:
    last: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["records"]):
        key = (r["stage"], r["executor"], r["db"])
        prev = last.get(key)
        grows = prev is not None and prev["records"] < r["records"]
        r["growth"] = round(math.log(r["seconds"] / prev["seconds"]) / math.log(r["records"] / prev["records"]), 2) if grows else None
        r["memory_growth"] = (round(math.log(r["peak_tree_mb"] / prev["peak_tree_mb"]) / math.log(r["records"] / prev["records"]), 2)
                              if grows else None)
        last[key] = r


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_table(rows: list[dict]) -> None:
    cols = ["stage", "executor", "db", "records", "seconds", "records_per_second", "peak_rss_mb", "peak_tree_mb",
            "store_mb", "growth", "memory_growth", "load_average_before"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * 3 + "---:|" * (len(cols) - 3))
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])
                                for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated record counts (e.g. 10000,100000,1000000)")
    ap.add_argument("--stages", default="import", help=f"comma-separated, of: {', '.join(STAGES)}")
    ap.add_argument("--executors", default="inprocess", help=f"comma-separated, of: {', '.join(EXECUTORS)}")
    ap.add_argument("--db", action="append", default=None, metavar="sqlite|URL",
                    help="'sqlite', or a PostgreSQL server URL (a new database is made on it per run); repeatable")
    ap.add_argument("--db-url", dest="db", action="append", help="same as --db")
    ap.add_argument("--work-dir", type=Path, help="keep generated inputs here for re-runs (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="default: benchmarks/results/scale_<stages>.json")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    stages, executors = args.stages.split(","), args.executors.split(",")
    dbs = args.db or ["sqlite"]
    unknown = [s for s in stages if s not in STAGES] + [e for e in executors if e not in EXECUTORS]
    if unknown:
        ap.error(f"unknown stage/executor {', '.join(unknown)}")
    servers = [d for d in dbs if d != "sqlite"]
    if len(servers) > 1 or any(not d.startswith("postgresql") for d in servers):
        ap.error("--db takes 'sqlite' and at most one postgresql+psycopg://... server URL")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="taxonomist-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="taxonomist-scale-home-"))
    env = {**os.environ, "TAXONOMIST_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    stores = Stores(servers[0] if servers else None, work)
    from taxonomist.demo_data import demo_taxonomy

    taxonomy = work / "taxonomy.yaml"
    demo_taxonomy().save(taxonomy)
    rows: list[dict] = []
    checks: list[dict] = []
    started = time.time()
    try:
        # Every figure includes the interpreter and CLI start-up; this is its share.
        startup_s, startup_mb, _ = measure(["--help"], work / "startup.log", env)
        for size in sizes:
            print(f"generating {size:,} records ...", file=sys.stderr, flush=True)
            data = write_records(work / f"records_{size}.csv", size)
            measured = []
            for stage in stages:
                for executor in executors:
                    if executor not in STAGES[stage].executors:
                        continue
                    for db in (dbs if STAGES[stage].uses_store else ["-"]):
                        kind = "sqlite" if db == "sqlite" else "postgresql" if db != "-" else "-"
                        run = Run(stage, executor, kind, size, data, taxonomy, work=work)
                        row = one(run, stores, env)
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        if STAGES[stage].output is not None:
                            row["_output"] = str(STAGES[stage].output(run))
                        measured.append(row)
            checks += compare(measured, work)
            rows += measured
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    add_growth(rows)
    print_table(rows)
    print(f"start-up alone (taxonomist --help): {startup_s:.2f} s, {startup_mb:.0f} MB peak RSS")
    for c in checks:
        print(f"- {c['stage']} ({c['db']}) at {c['records']:,}: Ray and in-process decisions differ on {c['differ']:,} "
              f"of {c['compared']:,} records (category, confidence, reason){'' if c['same_ids'] else '; the ids differ'}")
    ray_rows = {(r["stage"], r["db"], r["records"]): r for r in rows if r["executor"] == "ray"}
    for r in rows:
        other = ray_rows.get((r["stage"], r["db"], r["records"])) if r["executor"] == "inprocess" else None
        if other:
            print(f"- {r['stage']} ({r['db']}) at {r['records']:,}: Ray local runs at "
                  f"{other['records_per_second'] / r['records_per_second']:.2f}x the in-process records/s")
    result = {
        "benchmark": "scale",
        "command": "python benchmarks/scale.py " + " ".join(
            a if "://" not in a else a.split("://")[0] + "://..." for a in (argv if argv is not None else sys.argv[1:])
        ),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "git_commit": git_commit(),
        "machine": {**_machine(), "python": platform.python_version()},
        "postgresql_server": stores.server_version(),
        "startup": {"seconds": round(startup_s, 2), "peak_rss_mb": round(startup_mb, 1), "command": "taxonomist --help"},
        "input": "taxonomist.demo_data.generate_records, 100,000 per block (seed 7 + block), demo CSV columns",
        "training": {e: f"{n:,} generated records (seed 1007 + block), --target-accuracy 0.95" for e, n in TRAIN_RECORDS.items()},
        "rows": rows,
        "ray_vs_inprocess": checks,
    }
    out = args.json or ROOT / "benchmarks" / "results" / f"scale_{'_'.join(stages)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
