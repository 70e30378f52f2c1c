"""`taxonomist compare` interrupted (SIGINT) part-way, then rerun: exit 130 with how to resume, and the rerun
takes the cells already stored instead of recomputing them, and reports the same figures for them."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from ..test_compare import write_dated
from .test_interrupts import _fork_cli, _wait

pytestmark = pytest.mark.reliability


def test_compare_interrupted_exits_130_and_the_rerun_resumes_from_the_stored_cells(tmp_path, tally):
    data = write_dated(tmp_path / "records.csv", n=3000, seed=5)
    out = tmp_path / "out"
    args = ["compare", "--data", str(data), "--engines", "tfidf", "--budget", "quick", "--seeds", "1", "--out", str(out)]
    log = tmp_path / "first.log"
    pid = _fork_cli(args, log)
    deadline = time.monotonic() + 300
    # Interrupt once the learning curve is over (its cells are stored) and the backtest has begun.
    while not (log.exists() and "backtest" in log.read_text(errors="replace")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGINT)
    code = _wait(pid)
    tally["kill_points"] += 1
    text = log.read_text(errors="replace")
    if code == 0:  # pragma: no cover - it finished before the signal: nothing to resume
        pytest.skip("compare finished before the interrupt arrived")
    assert code == 130, text[-500:]
    assert "interrupted:" in text and "rerun the same command to resume" in text, text[-500:]
    assert not (out / "results.json").exists()  # no report from a half-finished comparison

    assert _wait(_fork_cli(args, tmp_path / "rerun.log")) == 0, (tmp_path / "rerun.log").read_text()[-500:]
    results = json.loads((out / "results.json").read_text())
    assert results["resumed"] >= 4  # the learning-curve cells were taken from the store
    reference = tmp_path / "ref"
    assert _wait(_fork_cli([*args[:-1], str(reference)], tmp_path / "ref.log")) == 0
    fresh = json.loads((reference / "results.json").read_text())
    figures = lambda r: {e: [(p["k"], p["accuracy"], p["macro_f1"], p["n_test"]) for p in pts]  # noqa: E731
                         for e, pts in r["learning_curve"]["curves"].items()}
    assert figures(results) == figures(fresh)  # resumed cells give the figures a fresh run gives
