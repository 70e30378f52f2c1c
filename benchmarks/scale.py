"""Scale: records/s and peak memory of taxonomist's bulk stages at 10k / 100k (/ 1M) records, SQLite vs PostgreSQL.

    nice -n 10 python benchmarks/scale.py --sizes 10000,100000 \\
        --db sqlite --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Each measurement runs the real command line (`taxonomist import ...`) in a fresh child
process on a fresh store, and reports wall seconds, records per second and the child's
peak resident memory (os.wait4, i.e. getrusage of that one child). A PostgreSQL server's
own memory is not included. For PostgreSQL, every run gets a new database created on the
named server (CREATE DATABASE, so the user needs CREATEDB) and dropped afterwards; the
database in the URL is only used to connect. The input is the demo generator's denial
records (taxonomist.demo_data: realistic text and 21 columns), drawn 100,000 at a time
with a new seed and id prefix per block, so a size of any number of records is cheap.

"Growth" is log(t2/t1) / log(n2/n1) against the previous size of the same stage and
store: 1.0 means time grows linearly with the input, 2.0 quadratically.

Stages are a registry (STAGES) of the command line measured, its untimed preparation
and the executors it runs on. Only `import` is filled in; `classify-tfidf`,
`classify-head` and `decision-log` (classify writing every decision to the store), and
the `ray` executor are hooks that say what to add once `taxonomist classify` is rewritten
for streaming and Ray (issue 16).
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 100_000
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")


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
    command: Callable[[Run], list[str]] | None  # taxonomist arguments, measured; None while a hook
    prepare: Callable[[Run], None] | None = None  # untimed set-up on the same store
    executors: tuple[str, ...] = ("inprocess",)
    todo: str = ""  # what a hook still needs


def import_command(run: Run) -> list[str]:
    return ["import", str(run.data), "--taxonomy", str(run.taxonomy), "--db", run.db_url, "--who", "scale-bench"]


# Hooks: give `command` (and `prepare`, e.g. import + train a model untimed, leaving its id in
# run.extra["model"]) once `taxonomist classify` streams its input and writes decisions in batches.
STAGES: dict[str, Stage] = {
    "import": Stage(import_command),
    "classify-tfidf": Stage(None, executors=("inprocess", "ray"), todo=(
        "`taxonomist classify --model ID --input CSV --output PARQUET`, prepared by importing and training tfidf")),
    "classify-head": Stage(None, executors=("inprocess", "ray"), todo="as classify-tfidf, with head (MiniLM + LR)"),
    "decision-log": Stage(None, todo="classify with --db, counting predictions rows written per second"),
}
# Executors turn a stage's arguments into the arguments run; None while a hook.
EXECUTORS: dict[str, Callable[[list[str]], list[str]] | None] = {
    "inprocess": lambda args: args,
    "ray": None,  # e.g. lambda args: [*args, "--executor", "ray", "--address", "local"]
}


# ----- input ------------------------------------------------------------------------------
def write_records(path: Path, n: int) -> Path:
    """`n` generated denial records as CSV (the demo's columns), 100,000 per generator call."""
    from taxonomist.demo_data import COLUMNS, _csv_value, generate_records  # the demo CSV's own formatting

    if path.is_file():
        return path
    tmp = path.with_suffix(".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for block, start in enumerate(range(0, n, BLOCK)):
            cols = generate_records(records=min(BLOCK, n - start), seed=7 + block)
            prefix = f"b{block}-" if block else ""
            for i in range(len(cols["id"])):
                w.writerow([prefix + cols[c][i] if c == "id" else _csv_value(cols[c][i]) for c in COLUMNS])
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


def count_records(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM records")).scalar_one()


# ----- measuring --------------------------------------------------------------------------
def measure(args: list[str], log: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run `python -m taxonomist ARGS` as a child: (wall seconds, peak RSS in MB of that child)."""
    with log.open("w") as out:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "taxonomist", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"taxonomist {args[0]} exited {child.returncode}; last lines of {log}:\n" + "\n".join(tail))
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def one(run: Run, stores: Stores, env: dict[str, str]) -> dict:
    stage, executor = STAGES[run.stage], EXECUTORS[run.executor]
    assert stage.command is not None and executor is not None
    run.db_url = stores.create(run.db_kind)
    try:
        if stage.prepare is not None:
            stage.prepare(run)
        args = executor(stage.command(run))
        load_before = os.getloadavg()[0]
        seconds, peak_mb = measure(args, run.work / f"{run.stage}-{run.db_kind}-{run.size}.log", env)
        if run.stage == "import":
            stored = count_records(run.db_url)
            assert stored == run.size, f"import stored {stored} of {run.size} records"
        store_mb = stores.size_mb(run.db_url)
    finally:
        stores.drop(run.db_url)
    return {
        "stage": run.stage, "executor": run.executor, "db": run.db_kind, "records": run.size,
        "seconds": round(seconds, 2), "records_per_second": round(run.size / seconds, 1),
        "peak_rss_mb": round(peak_mb, 1), "store_mb": round(store_mb, 1),
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
    }


def add_growth(rows: list[dict]) -> None:
    last: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["records"]):
        key = (r["stage"], r["executor"], r["db"])
        prev = last.get(key)
        r["growth"] = (
            round(math.log(r["seconds"] / prev["seconds"]) / math.log(r["records"] / prev["records"]), 2)
            if prev and prev["records"] < r["records"] else None
        )
        last[key] = r


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    flags = set(fields.get("flags\t\t", fields.get("flags", "")).split())
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    return {
        "cpu": fields.get("model name\t", platform.processor()).strip(),
        "cpu_flags": [f for f in SIMD_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "memory_gb": round(int(meminfo[1]) / 1e6, 1) if meminfo[:1] == ["MemTotal:"] else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_table(rows: list[dict]) -> None:
    cols = ["stage", "executor", "db", "records", "seconds", "records_per_second", "peak_rss_mb", "store_mb", "growth"]
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
    rows, skipped = [], []
    started = time.time()
    try:
        # Every figure includes the interpreter and CLI start-up; this is its share.
        startup_s, startup_mb = measure(["--help"], work / "startup.log", env)
        for size in sizes:
            print(f"generating {size:,} records ...", file=sys.stderr, flush=True)
            data = write_records(work / f"records_{size}.csv", size)
            for stage in stages:
                for executor in executors:
                    if executor not in STAGES[stage].executors:
                        continue
                    todo = STAGES[stage].todo if STAGES[stage].command is None else (
                        "the Ray executor" if EXECUTORS[executor] is None else "")
                    if todo:
                        skipped.append(f"{stage} on {executor}: not measured yet; needs {todo}")
                        continue
                    for db in dbs:
                        kind = "sqlite" if db == "sqlite" else "postgresql"
                        row = one(Run(stage, executor, kind, size, data, taxonomy, work=work), stores, env)
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    add_growth(rows)
    print_table(rows)
    print(f"start-up alone (taxonomist --help): {startup_s:.2f} s, {startup_mb:.0f} MB peak RSS")
    for line in dict.fromkeys(skipped):
        print(f"- {line}")
    result = {
        "benchmark": "scale",
        "command": "python benchmarks/scale.py " + " ".join(
            a if "://" not in a else a.split("://")[0] + "://..." for a in (argv if argv is not None else sys.argv[1:])
        ),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "git_commit": git_commit(),
        "machine": machine(),
        "postgresql_server": stores.server_version(),
        "startup": {"seconds": round(startup_s, 2), "peak_rss_mb": round(startup_mb, 1), "command": "taxonomist --help"},
        "input": "taxonomist.demo_data.generate_records, 100,000 per block (seed 7 + block), demo CSV columns",
        "rows": rows,
        "not_yet": list(dict.fromkeys(skipped)),
    }
    out = args.json or ROOT / "benchmarks" / "results" / f"scale_{'_'.join(stages)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
