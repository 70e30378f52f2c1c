"""`taxonomist import` killed (SIGKILL) or interrupted (SIGINT) at seeded random points, and importers racing.

Each run is a forked child running the real CLI entry point (`taxonomist.cli.main`),
so a signal hits a real process at a real point of its work: while parsing, reading,
writing the one transaction, or committing. After every kill the store must hold all
of the file or none of it, and a rerun must leave every record exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from taxonomist.store import Store

from ..test_import import write_denials_csv

pytestmark = pytest.mark.reliability

DATA = Path(__file__).parent.parent / "data"
ROWS = 1000
POINTS = 24  # 12 SIGKILL + 12 SIGINT


def _fork_cli(args: list[str], log: Path) -> int:
    """Run `taxonomist ARGS` in a forked child with stdout/stderr to `log`; returns its pid."""
    from taxonomist.cli import main

    # SIGINT stays blocked until the child's output goes to its log, so an early one is reported there.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return pid
    code = 99
    try:  # the child: never return into pytest
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        # pytest's capture replaced sys.stdout/sys.stderr with its own files: write to fds 1 and 2 again.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # the signal came before main() began: as Ctrl-C before the program starts
        os.write(2, b"interrupted before the command started\n")
        code = 130
    finally:
        os._exit(code)


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _census(db: Path) -> tuple[int, int, int, int]:
    """(records, distinct record ids, label rows, current labels) read straight from the SQLite file."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        records, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM records").fetchone()
        labels = conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        current = conn.execute("SELECT COUNT(*) FROM labels WHERE is_current").fetchone()[0]
    return records, distinct, labels, current


@pytest.fixture(scope="module")
def denials(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill") / "denials.csv"
    write_denials_csv(path, ROWS, {})
    return path


def test_kill_and_ctrl_c_at_random_points_then_rerun_keeps_every_record_exactly_once(denials, tmp_path, tally):
    args = lambda db: ["import", str(denials), "--db", str(db), "--who", "kill-test", "--taxonomy", str(DATA / "taxonomy_small.yaml")]  # noqa: E731
    # How long a whole import takes here, so the signals land across all of it.
    durations = []
    for k in range(2):
        start = time.monotonic()
        assert _wait(_fork_cli(args(tmp_path / f"full{k}.db"), tmp_path / "full.log")) == 0
        durations.append(time.monotonic() - start)
        assert _census(tmp_path / f"full{k}.db") == (ROWS, ROWS, ROWS, ROWS)
    full = min(durations)

    rng = random.Random(20261201)
    outcomes = {"none stored": 0, "all stored": 0, "exit 130": 0, "finished first": 0}
    for point in range(POINTS):
        sig = signal.SIGKILL if point % 2 == 0 else signal.SIGINT
        db, log = tmp_path / f"p{point}.db", tmp_path / f"p{point}.log"
        delay = rng.uniform(0.0, full * 0.9)
        pid = _fork_cli(args(db), log)
        time.sleep(delay)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # pragma: no cover - already reaped
            pass
        code = _wait(pid)
        tally["kill_points"] += 1
        output = log.read_text(errors="replace").strip().splitlines()
        if sig == signal.SIGINT and code != 0:
            assert code == 130, (point, code, output[-3:])
            assert output and output[-1].startswith("interrupted"), (point, delay, log.read_bytes()[-300:])
            outcomes["exit 130"] += 1
        elif sig == signal.SIGKILL:
            assert code in (-signal.SIGKILL, 0)
        if code == 0:
            outcomes["finished first"] += 1
        if db.exists() and db.stat().st_size:
            try:
                records = _census(db)[0]
            except sqlite3.OperationalError:  # killed before the schema existed
                records = 0
        else:
            records = 0
        assert records in (0, ROWS), f"point {point}: a partial import of {records} rows survived the signal"
        outcomes["all stored" if records else "none stored"] += 1
        # The rerun the hint asks for: every record exactly once, one current label each.
        assert _wait(_fork_cli(args(db), tmp_path / f"p{point}.rerun.log")) == 0
        census = _census(db)
        tally["records_checked"] += ROWS
        tally["lost"] += ROWS - census[1]
        tally["duplicated"] += census[0] - census[1] + census[2] - census[3]
        assert census == (ROWS, ROWS, ROWS, ROWS), (point, census)
    for outcome, n in outcomes.items():
        tally[f"kill_points_{outcome.replace(' ', '_')}"] += n
    assert outcomes["exit 130"] >= 1 and outcomes["none stored"] >= 1


def test_four_importers_at_once_into_a_new_store(db_url, tmp_path, tally):
    """4 processes import 4 files (disjoint ids) with the same new taxonomy version into one store at once."""
    files = []
    for k in range(4):
        path = tmp_path / f"part{k}.csv"
        write_denials_csv(path, 300, {})
        text = path.read_text().replace(",d0", f",p{k}-d0").replace("\nd0", f"\np{k}-d0")
        path.write_text(text)
        files.append(path)
    for round_ in range(3):
        db = db_url if "://" in db_url and not db_url.startswith("sqlite") else f"sqlite:///{tmp_path / f'race{round_}.db'}"
        if round_ and not db.startswith("sqlite"):
            from ..conftest import empty_database

            empty_database(db)
        pids = [
            _fork_cli(["import", str(f), "--db", db, "--who", f"importer{k}", "--taxonomy", str(DATA / "taxonomy_small.yaml")],
                      tmp_path / f"race{round_}-{k}.log")
            for k, f in enumerate(files)
        ]
        codes = [_wait(pid) for pid in pids]
        logs = [(tmp_path / f"race{round_}-{k}.log").read_text()[-400:] for k in range(4)]
        assert codes == [0, 0, 0, 0], logs
        with Store.open(db) as store:
            stats = store.stats()
            versions = store.taxonomy_versions()
        tally["records_checked"] += 1200
        tally["lost"] += 1200 - stats["records"]
        assert (stats["records"], stats["labelled"]) == (1200, 1200)
        assert len(versions) == 1
