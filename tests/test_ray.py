"""`taxonomist classify --executor ray` on a local Ray (2 CPUs): the same decisions as the in-process path."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs taxonomist[ray] (installed by make test)")
pq = pytest.importorskip("pyarrow.parquet")

from taxonomist.demo_data import generate_records  # noqa: E402
from taxonomist.store import Store  # noqa: E402

from tests.test_cli_engines import run as call  # noqa: E402

N_TRAIN, N_CLASSIFY = 2_000, 3_000


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Generated denial records (the demo's generator): a training file and a file to classify."""
    root = tmp_path_factory.mktemp("ray")
    cols = generate_records(records=N_TRAIN + N_CLASSIFY, seed=11)
    rows = [{"id": cols["id"][i], "text": cols["text"][i], "label": cols["label"][i]} for i in range(len(cols["id"]))]
    train, todo = root / "train.csv", root / "todo.csv"
    for path, part in ((train, rows[:N_TRAIN]), (todo, rows[N_TRAIN:])):
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text", "label"])
            w.writeheader()
            w.writerows(part)
    model = root / "model"
    assert call("train", "tfidf", "--data", str(train), "--out", str(model), "--calibrate", "0.2", "--target-accuracy", "0.9") == 0
    return root, todo, model


@pytest.fixture
def run(capsys):
    """Run the CLI: (exit status, what it printed on stdout and stderr)."""

    def go(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = call(*argv)
        got = capsys.readouterr()
        return code, got.out + got.err

    return go


def read_parts(folder: Path) -> dict[str, dict]:
    table = pq.read_table(folder)
    return {r["id"]: r for r in table.to_pylist()}


def test_ray_local_gives_the_in_process_decisions_and_logs_them(local_ray, data, tmp_path, run):
    root, todo, model = data
    inproc, on_ray = tmp_path / "inproc.jsonl", tmp_path / "ray_out"
    db_in, db_ray = tmp_path / "in.db", tmp_path / "ray.db"
    code, out = run("classify", "--model", str(model), "--input", str(todo), "--output", str(inproc),
                    "--db", str(db_in), "--create")
    assert code == 0, out
    code, out = run("classify", "--executor", "ray", "--model", str(model), "--input", str(todo), "--output", str(on_ray),
                    "--db", str(db_ray), "--create", "--batch-size", "128")
    assert code == 0, out
    expected = {}
    for line in inproc.read_text().splitlines():
        row = json.loads(line)
        expected[row["id"]] = row
    got = read_parts(on_ray)
    assert len(expected) == N_CLASSIFY and set(got) == set(expected)
    assert len(list(on_ray.glob("part-*.parquet"))) >= 1
    for rid, want in expected.items():
        have = got[rid]
        assert (have["category"], have["confidence"], have["reason"], have["model_id"]) == (
            want["category"], want["confidence"], want["reason"], want["model_id"]), rid
        assert have["alternatives"] == want["alternatives"], rid
    # Both kinds of answer occur, so the comparison covers abstentions too.
    assert {"NONE"} < {w["category"] for w in expected.values()}
    # The decision log and the review queue hold the same, run by run.
    with Store.open(db_in) as a, Store.open(db_ray) as b:
        logged_in = {d["record_id"]: (d["category"], round(d["confidence"], 4), d["reason"] or "") for d in a.iter_predictions()}
        logged_ray = {d["record_id"]: (d["category"], round(d["confidence"], 4), d["reason"] or "") for d in b.iter_predictions()}
        assert logged_ray == logged_in and len(logged_in) == N_CLASSIFY
        assert {i["record_id"] for i in b.review_queue()} == {i["record_id"] for i in a.review_queue()}
        assert [r["status"] for r in b.runs("classify")] == ["ok"]
    # Record text never reaches the output.
    texts = [row["text"] for row in csv.DictReader(todo.open(encoding="utf-8"))][:20]
    blob = b"".join(p.read_bytes() for p in on_ray.glob("*.parquet"))
    assert not any(t.encode() in blob for t in texts)


def test_ray_reads_a_folder_of_parquet_and_skips_rows_without_text(local_ray, data, tmp_path, run):
    import pyarrow as pa

    _, todo, model = data
    rows = list(csv.DictReader(todo.open(encoding="utf-8")))[:300]
    rows[5]["text"] = "   "
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        part = rows[k * 100:(k + 1) * 100]
        pq.write_table(pa.table({"id": [r["id"] for r in part], "text": [r["text"] for r in part]}),
                       folder / f"p{k}.parquet")
    code, out = run("classify", "--executor", "ray", "--model", str(model), "--input", str(folder),
                    "--output", str(tmp_path / "out"))
    assert code == 0, out
    got = read_parts(tmp_path / "out")
    assert len(got) == 299 and rows[5]["id"] not in got
    assert "1 input row(s) skipped" in out


def test_ray_refuses_disabled_token_auth_and_an_existing_output(data, tmp_path, monkeypatch, run):
    _, todo, model = data
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    code, out = run("classify", "--executor", "ray", "--model", str(model), "--input", str(todo),
                    "--output", str(tmp_path / "o"))
    assert code == 1 and "RAY_AUTH_MODE=disabled" in out and "Traceback" not in out
    monkeypatch.delenv("RAY_AUTH_MODE")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "part-00000.parquet").write_bytes(b"x")
    code, out = run("classify", "--executor", "ray", "--model", str(model), "--input", str(todo),
                    "--output", str(tmp_path / "o"))
    assert code == 1 and "exists" in out


def test_without_the_extra_the_error_names_the_pip_command(data, tmp_path, monkeypatch, run):
    _, todo, model = data
    monkeypatch.setitem(sys.modules, "ray", None)  # what an installation without taxonomist[ray] sees
    code, out = run("classify", "--executor", "ray", "--model", str(model), "--input", str(todo),
                    "--output", str(tmp_path / "o"))
    assert code == 1 and "pip install 'taxonomist[ray]'" in out and len(out.strip().splitlines()) == 1


def test_a_fresh_process_starts_its_local_ray_with_token_auth(data, tmp_path):
    """The command as a user runs it: Ray is imported by the command, which must ask for tokens before that."""
    _, todo, model = data
    rows = list(csv.DictReader(todo.open(encoding="utf-8")))[:200]
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["TAXONOMIST_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "taxonomist", "classify", "--executor", "ray", "--model", str(model),
                           "--input", str(small), "--output", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_parts(tmp_path / "out")) == 200
