"""`taxonomist train / classify / evaluate` end to end on the vendored subsets (tfidf: fast, no extra)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taxonomist.cli import main

DATA = Path(__file__).parent / "data"


def run(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tfidf"
    assert run("train", "tfidf", "--data", str(DATA / "clinc150_small_train.csv"), "--out", str(out),
               "--calibrate", "0.2", "--abstain-accuracy", "0.8", "--param", "C=0.5") == 0
    return out


def test_train_writes_model_with_calibration(model):
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["engine"] == "tfidf" and manifest["params"]["C"] == 0.5
    cal = manifest["extra"]["calibration"]
    assert cal["temperature"] > 0 and cal["n"] == 30  # 20% of 10 per intent x 15 intents
    assert manifest["n_train"] == 120


def test_classify_is_resumable(model, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    first = tmp_path / "first.csv"
    with open(DATA / "clinc150_small_test.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(first, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text"])
        w.writeheader()
        w.writerows({"id": r["id"], "text": r["text"]} for r in rows[:30])
    assert run("classify", "--model", str(model), "--input", str(first), "--output", str(out)) == 0
    assert run("classify", "--model", str(model), "--input", str(DATA / "clinc150_small_test.csv"), "--output", str(out),
               "--batch-size", "16") == 0
    err = capsys.readouterr().err
    assert "resuming: 30 of 90" in err
    with open(out, encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [g["id"] for g in got] == [r["id"] for r in rows]  # each once, in order
    assert {g["category"] for g in got} <= {r["label"] for r in rows} | {"NONE"}
    assert all(g["alternatives"].count(":") == 3 for g in got)
    # No record text in the output (PHI stays in the input).
    assert not any(r["text"] in out.read_text() for r in rows[:5])


def test_classify_jsonl(model, tmp_path):
    out = tmp_path / "pred.jsonl"
    assert run("classify", "--model", str(model), "--input", str(DATA / "clinc150_small_val.csv"), "--output", str(out)) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 90 and {"id", "category", "confidence", "alternatives", "model_id"} <= set(lines[0])


def test_evaluate_reports_metrics(model, tmp_path):
    report = tmp_path / "report.json"
    assert run("evaluate", "--model", str(model), "--data", str(DATA / "clinc150_small_test.csv"),
               "--oos-label", "oos", "--json", str(report)) == 0
    r = json.loads(report.read_text())
    for key in ("accuracy", "macro_f1", "ece", "abstain_rate", "top_confusions", "in_scope_accuracy", "oos_recall"):
        assert key in r
    assert r["in_scope_accuracy"] > 0.6 and 0 < r["abstain_rate"] < 0.6


def test_user_errors_are_one_line(tmp_path, capsys):
    assert run("evaluate", "--model", str(tmp_path / "nothing"), "--data", str(DATA / "clinc150_small_test.csv")) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert run("train", "nosuch", "--data", str(DATA / "clinc150_small_train.csv"), "--out", str(tmp_path / "m")) == 1
    assert "unknown engine 'nosuch'" in capsys.readouterr().err
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("id,text\n1,hello\n")
    assert run("train", "tfidf", "--data", str(unlabelled), "--out", str(tmp_path / "m")) == 1
    assert "have no label" in capsys.readouterr().err


def test_usage_errors_are_one_message_and_exit_2_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "tfidf", "--nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "No such option: --nope" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "tfidf", "--data", "x.csv", "--out", "o", "--abstain-accuracy", "0.9", "--abstain-confidence", "1.5"])
    assert exit_info.value.code == 2 and "--abstain-confidence" in capsys.readouterr().err
