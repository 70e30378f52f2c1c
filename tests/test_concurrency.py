"""Four `taxonomist import` processes writing into one store at once: exact row counts, on SQLite and PostgreSQL.

Each process imports its own file: rows every file shares (same ids, text and labels)
and rows only it has, with the same taxonomy, which the store does not hold yet. The
processes load everything first and wait at a gate, so their writes really overlap.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from taxonomist.store import Store

DATA = Path(__file__).parent / "data"
TAXONOMY = DATA / "taxonomy_small.yaml"
CODES = ["A1", "A2", "C1", "C2", "C3", "G1", "G2", "I1", "I2", "J1"]
PROCESSES, SHARED, OWN = 4, 1000, 250

# The real entry point, started only when the gate file appears (imports done beforehand,
# so start-up time does not spread the processes apart).
GATED_CLI = """
import pathlib, sys, time
import sqlalchemy.dialects.postgresql.psycopg, taxonomist.records, taxonomist.store, taxonomist.taxonomy
from taxonomist.cli import main
gate, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not gate.exists():
    time.sleep(0.002)
main(sys.argv[3:])
"""


def write_file(path: Path, ids: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "date"])
        for rid in ids:
            n = int(rid.rsplit("-", 1)[1])
            w.writerow([rid, f"denial note {rid}: precert absent", CODES[n % len(CODES)], f"2024-{1 + n % 12:02d}-05"])


def run_at_once(commands: list[list[str]], tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    gate = tmp_path / "gate"
    procs, outs = [], []
    for i, args in enumerate(commands):
        out = (tmp_path / f"p{i}.out").open("w+")
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", GATED_CLI, str(gate), str(tmp_path / f"p{i}.ready"), *args],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        ))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"p{i}.ready").exists() for i in range(len(commands))):
        assert all(p.poll() is None for p in procs), "a process ended before the gate opened"
        assert time.monotonic() < deadline, "the processes did not start within 120 s"
        time.sleep(0.01)
    gate.touch()
    results = []
    for args, p, out in zip(commands, procs, outs):
        p.wait(timeout=300)
        out.seek(0)
        results.append(subprocess.CompletedProcess(args, p.returncode, out.read(), ""))
        out.close()
    return results


@pytest.mark.parametrize("schema", ["created", "empty database"])
def test_four_imports_at_once_store_every_row_exactly_once(db_url: str, tmp_path: Path, schema: str) -> None:
    if schema == "created":
        Store.open(db_url).close()  # the tables exist; the taxonomy is not stored yet
    shared = [f"shared-{n:05d}" for n in range(SHARED)]
    commands = []
    for i in range(PROCESSES):
        path = tmp_path / f"part{i}.csv"
        write_file(path, shared + [f"own{i}-{n:05d}" for n in range(OWN)])
        commands.append(["import", str(path), "--taxonomy", str(TAXONOMY), "--db", db_url, "--who", f"importer-{i}"])

    results = run_at_once(commands, tmp_path)

    for r in results:
        assert r.returncode == 0, r.stdout[-3000:]
    total = SHARED + PROCESSES * OWN
    with Store.open(db_url) as store, store.engine.connect() as conn:
        def count(sql: str) -> int:
            return conn.execute(sa.text(sql)).scalar_one()

        assert count("SELECT COUNT(*) FROM records") == total
        assert count("SELECT COUNT(DISTINCT id) FROM records") == total
        assert count("SELECT COUNT(*) FROM labels") == total  # one label per record, none twice
        assert count("SELECT COUNT(*) FROM labels WHERE is_current = TRUE") == total
        assert count("SELECT COUNT(*) FROM taxonomy_versions") == 1
        assert count("SELECT COUNT(*) FROM schema_migrations") == len(store.schema_versions())
        imports = store.runs("import")
        assert len(imports) == PROCESSES and {r["status"] for r in imports} == {"ok"}
        assert sum(r["summary"]["inserted"] for r in imports) == total
        assert all(r["summary"]["inserted"] + r["summary"]["unchanged"] == SHARED + OWN for r in imports)
        assert all(r["summary"]["conflicts"] == 0 for r in imports)
        assert store.stats()["by_category"] == {c: total // len(CODES) for c in CODES}
