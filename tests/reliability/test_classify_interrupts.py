"""`taxonomist classify` and `train` killed (SIGKILL) or interrupted (SIGINT) at seeded random points, then rerun.

classify writes its output file and the decision log batch by batch: after any signal a rerun of the same
command must leave every record in the output exactly once, with the predictions an uninterrupted run gives,
and a Ctrl-C must exit 130 saying how to resume. An interrupted `train` must leave no half-written model
that loads.
"""

from __future__ import annotations

import csv
import random
import signal
import time
from pathlib import Path

import pytest

from taxonomist.engines import load_engine
from taxonomist.errors import EngineError

from ..test_import import write_denials_csv
from .test_interrupts import _fork_cli, _wait

pytestmark = pytest.mark.reliability

DATA = Path(__file__).parent.parent / "data"
ROWS = 2000
POINTS = 12  # 6 SIGKILL + 6 SIGINT


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("classify-kill")
    data = work / "denials.csv"
    write_denials_csv(data, ROWS, {})
    model = work / "model"
    assert _wait(_fork_cli(["train", "tfidf", "--data", str(data), "--out", str(model), "--param", "min_records=1"],
                           work / "train.log")) == 0
    return data, model


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_classify_killed_or_interrupted_then_rerun_gives_every_record_once_and_the_same_predictions(setup, tmp_path, tally):
    data, model = setup
    args = lambda out, db: ["classify", "--model", str(model), "--input", str(data), "--output", str(out),  # noqa: E731
                            "--batch-size", "100", "--db", str(db), "--create"]
    start = time.monotonic()
    assert _wait(_fork_cli(args(tmp_path / "ref.csv", tmp_path / "ref.db"), tmp_path / "ref.log")) == 0
    full = time.monotonic() - start
    reference = {r["id"]: (r["category"], r["confidence"]) for r in _rows(tmp_path / "ref.csv")}
    assert len(reference) == ROWS

    rng = random.Random(20261202)
    interrupted = 0
    for point in range(POINTS):
        sig = signal.SIGKILL if point % 2 == 0 else signal.SIGINT
        out, db, log = tmp_path / f"p{point}.csv", tmp_path / f"p{point}.db", tmp_path / f"p{point}.log"
        pid = _fork_cli(args(out, db), log)
        time.sleep(rng.uniform(0.0, full * 0.9))
        try:
            import os

            os.kill(pid, sig)
        except ProcessLookupError:  # pragma: no cover - already finished and reaped
            pass
        code = _wait(pid)
        tally["kill_points"] += 1
        if sig == signal.SIGINT and code != 0:
            assert code == 130, (point, code, log.read_text()[-300:])
            assert "interrupted" in log.read_text(), log.read_text()[-300:]
            interrupted += 1
        assert _wait(_fork_cli(args(out, db), tmp_path / f"p{point}.rerun.log")) == 0
        rows = _rows(out)
        ids = [r["id"] for r in rows]
        tally["records_checked"] += ROWS
        tally["lost"] += ROWS - len(set(ids))
        tally["duplicated"] += len(ids) - len(set(ids))
        assert len(ids) == len(set(ids)) == ROWS, (point, len(ids), len(set(ids)))
        assert {r["id"]: (r["category"], r["confidence"]) for r in rows} == reference
    assert interrupted >= 1


def test_train_interrupted_leaves_no_model_that_loads(setup, tmp_path, tally):
    data, _ = setup
    rng = random.Random(7)
    for point in range(4):
        sig = signal.SIGKILL if point % 2 == 0 else signal.SIGINT
        out = tmp_path / f"m{point}"
        pid = _fork_cli(["train", "tfidf", "--data", str(data), "--out", str(out)], tmp_path / f"t{point}.log")
        time.sleep(rng.uniform(0.2, 2.0))
        try:
            import os

            os.kill(pid, sig)
        except ProcessLookupError:  # pragma: no cover
            pass
        code = _wait(pid)
        tally["kill_points"] += 1
        if code == 0:
            load_engine(out)  # it finished first: the model is whole
            continue
        if (out / "manifest.json").exists():
            load_engine(out)  # the manifest is written last, after the digests of every file
        else:
            with pytest.raises(EngineError):
                load_engine(out)


def test_classify_stopped_with_sigterm_exits_130_saying_how_to_resume(setup, tmp_path, tally):
    """A scheduler or `kill` stops with SIGTERM: the same clean stop as Ctrl-C, then the rerun completes."""
    import os

    data, model = setup
    out, db = tmp_path / "out.csv", tmp_path / "d.db"
    args = ["classify", "--model", str(model), "--input", str(data), "--output", str(out), "--batch-size", "50",
            "--db", str(db), "--create"]
    log = tmp_path / "term.log"
    pid = _fork_cli(args, log)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.01)  # the first batch is written: the command is inside its work
    os.kill(pid, signal.SIGTERM)
    code = _wait(pid)
    tally["kill_points"] += 1
    if code == 0:  # pragma: no cover - finished before the signal
        pytest.skip("classify finished before SIGTERM arrived")
    assert code == 130, (code, log.read_text()[-300:])
    assert "interrupted:" in log.read_text() and "rerun the same command" in log.read_text(), log.read_text()[-300:]
    assert _wait(_fork_cli(args, tmp_path / "rerun.log")) == 0
    ids = [r["id"] for r in _rows(out)]
    assert len(ids) == len(set(ids)) == ROWS
