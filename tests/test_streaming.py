"""`import` and `classify` stream: a file ten times larger does not take ten times the memory.

Each command runs as its own process (the real command line) and its peak resident
memory is read from the kernel (os.wait4). Reading a whole file into memory costs about
2 KB per generated record (text plus 20 structured columns): 27,000 more records would
add over 50 MB, while what a stream keeps per record (the ids seen, for duplicates) is
tens of bytes.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxonomist.demo_data import COLUMNS, _csv_value, generate_records

SMALL, LARGE = 3_000, 30_000
#: Far below the ~50 MB that holding the 27,000 extra records would take, far above what a stream adds.
ALLOWED_GROWTH_MB = 25


def write(path: Path, n: int, seed: int) -> Path:
    cols = generate_records(records=n, seed=seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for i in range(n):
            w.writerow([_csv_value(cols[c][i]) for c in COLUMNS])
    return path


def peak_mb(*args: str, home: Path) -> float:
    """Run `taxonomist ARGS` as a child process: its peak RSS in MB."""
    env = {**os.environ, "TAXONOMIST_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "taxonomist", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, err[-2000:]
    return usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return root, write(root / "small.csv", SMALL, seed=3), write(root / "large.csv", LARGE, seed=5)


def test_import_memory_does_not_grow_with_the_file(files):
    root, small, large = files
    a = peak_mb("import", str(small), "--db", str(root / "a.db"), "--who", "t", home=root)
    b = peak_mb("import", str(large), "--db", str(root / "b.db"), "--who", "t", home=root)
    assert b - a < ALLOWED_GROWTH_MB, f"import peaked at {a:.0f} MB for {SMALL:,} records, {b:.0f} MB for {LARGE:,}"
    import sqlite3

    with sqlite3.connect(root / "b.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == LARGE


def test_classify_memory_does_not_grow_with_the_input(files):
    root, small, large = files
    model = root / "model"
    subprocess.run([sys.executable, "-m", "taxonomist", "train", "tfidf", "--data", str(small), "--out", str(model),
                    "--calibrate", "0.2", "--target-accuracy", "0.9"], check=True, capture_output=True,
                   env={**os.environ, "TAXONOMIST_HOME": str(root)})
    a, b = (peak_mb("classify", "--model", str(model), "--input", str(data), "--output", str(root / f"{name}.csv"),
                    "--db", str(root / f"log-{name}.db"), "--create", home=root)
            for name, data in (("a", small), ("b", large)))
    assert b - a < ALLOWED_GROWTH_MB, f"classify peaked at {a:.0f} MB for {SMALL:,} records, {b:.0f} MB for {LARGE:,}"
    with (root / "b.csv").open(encoding="utf-8", newline="") as f:
        assert sum(1 for _ in csv.DictReader(f)) == LARGE


def test_a_missing_or_empty_input_is_one_line_and_leaves_no_output(files, capsys):
    from tests.test_cli_engines import run

    root, small, _ = files
    model = root / "model"
    if not (model / "manifest.json").is_file():
        assert run("train", "tfidf", "--data", str(small), "--out", str(model)) == 0
    capsys.readouterr()
    assert run("classify", "--model", str(model), "--input", str(root / "nope.csv"), "--output", str(root / "o.csv")) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = root / "bad.csv"
    bad.write_text("id,text\nr1,\nr2,   \n", encoding="utf-8")
    assert run("classify", "--model", str(model), "--input", str(bad), "--output", str(root / "o.csv")) == 1
    err = capsys.readouterr().err
    assert "2 row(s)" in err and "no usable records" in err
    assert not (root / "o.csv").exists()
