"""A planted name and member id, followed through import -> train (tfidf, knn, head) -> classify -> audit ->
compare: no file outside the store and the retrieval model holds it (docs/SECURITY.md lists where record text
may live)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from ..test_cli_records import cli
from ..test_import import write_denials_csv

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

DATA = Path(__file__).parent.parent / "data"
NAME, MEMBER = "Zqxjroe", "W739105528"
PLANTED = 3  # records carrying the marker, as in the probe


def test_a_planted_marker_reaches_no_file_but_the_store_and_retrieval_models(tmp_path, monkeypatch, capsys, tally):
    def _cli(*args: str) -> int:
        code, _, err = cli(capsys, *args)
        assert code == 0, err
        return code

    home = tmp_path / "home"
    monkeypatch.setenv("TAXONOMIST_HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    data = work / "denials.csv"
    write_denials_csv(data, 400, {7: "unknown category", 8: "bad date"})
    with data.open(newline="") as fh:
        rows = list(csv.reader(fh))
    for k in (4, 8, 9, 41, 42):  # 3 good records and the 2 rejected rows (file rows 8 and 9)
        rows[k][1] = f"{rows[k][1]} patient {NAME} Jane member {MEMBER}"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert data.read_text().count(MEMBER) == PLANTED + 2
    db = str(work / "store.db")
    taxonomy = str(DATA / "taxonomy_small.yaml")
    assert _cli("import", str(data), "--db", db, "--taxonomy", taxonomy, "--who", "t") == 0
    assert (work / "denials.csv.rejects.csv").is_file()
    # min_records above the records one identifier is in (3 here); the default 2 covers a single record.
    assert _cli("train", "tfidf", "--db", db, "--out", str(work / "tfidf-model"), "--param", f"min_records={PLANTED + 1}") == 0
    assert _cli("train", "knn", "--db", db, "--out", str(work / "knn-model")) == 0
    assert _cli("classify", "--db", db, "--model", str(work / "tfidf-model"), "--output", str(work / "predictions.csv")) == 0
    assert _cli("train", "head", "--db", db, "--out", str(work / "head-model")) == 0
    assert _cli("classify", "--db", db, "--model", str(work / "head-model"), "--output", str(work / "head.jsonl")) == 0
    assert _cli("audit", "--db", db, "--folds", "2", "--out", str(work / "suspects.csv")) == 0
    assert _cli("compare", "--data", str(data), "--taxonomy", taxonomy, "--out", str(work / "report"),
                "--engines", "tfidf", "--budget", "quick", "--seeds", "1") == 0

    # The stores (the records' home, and compare's own store of the records it scored) and the input file.
    allowed = {n + sfx for n in (Path(db).name, "compare.db") for sfx in ("", "-wal", "-shm")} | {"denials.csv"}
    hits, checked = [], 0
    for root in (work, home):
        for path in root.rglob("*"):
            if not path.is_file() or path.name in allowed or "knn-model" in path.parts:
                continue
            checked += 1
            blob = path.read_bytes().lower()
            if NAME.lower().encode() in blob or MEMBER.lower().encode() in blob:
                hits.append(str(path.relative_to(tmp_path)))
    tally["marker_files_checked"] += checked
    tally["leaked"] += len(hits)
    assert checked >= 8, os.listdir(work)
    assert hits == []
    knn_points = b"".join(p.read_bytes() for p in (work / "knn-model").rglob("*") if p.is_file())
    assert MEMBER.encode() in knn_points  # retrieval models hold training text by design (docs/SECURITY.md)
