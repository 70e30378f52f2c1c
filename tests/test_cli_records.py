"""`taxonomist import` and `taxonomist records ...` through the real entry point."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from taxonomist.cli import main
from taxonomist.store import Store

from .test_import import write_denials_csv

DATA = Path(__file__).parent / "data"
TAXONOMY = DATA / "taxonomy_small.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def denials(tmp_path: Path) -> Path:
    path = tmp_path / "denials.csv"
    write_denials_csv(path, 200, {9: "no text", 49: "unknown category", 99: "bad date"})
    return path


def test_import_keeps_valid_rows_reports_rejects_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], denials: Path, db_url: str
) -> None:
    code, out, _ = cli(capsys, "import", str(denials), "--taxonomy", str(TAXONOMY), "--db", db_url, "--who", "tester")
    assert code == 0
    assert "│  200 │      197 │         0 │         0 │        3 │" in out
    assert "3 row(s) rejected, the other 197 kept" in out
    rejects = denials.with_name("denials.csv.rejects.csv")
    with rejects.open(newline="") as fh:
        assert [(r["line"], r["id"]) for r in csv.DictReader(fh)] == [("12", "d0009"), ("52", "d0049"), ("102", "d0099")]

    code, out, _ = cli(capsys, "import", str(denials), "--db", db_url)  # taxonomy now comes from the store
    assert code == 0 and "│  200 │        0 │       197 │         0 │        3 │" in out

    with Store.open(db_url) as store:
        stats = store.stats()
        assert (stats["records"], stats["labelled"]) == (197, 197)
        assert {h["who"] for h in store.label_history("d0000")} == {"tester"}


def test_import_with_column_mapping_and_default_store_from_env(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    path = tmp_path / "portal.jsonl"
    rows = [
        {"claim": "k1", "note": "Auth number missing on claim", "code": "C2", "dos": "2024-06-01"},
        {"claim": "k2", "note": "Filed after 90 days", "code": "I1", "dos": "2024-07-02"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("TAXONOMIST_DB", db_url)
    code, out, err = cli(
        capsys, "import", str(path), "--text-col", "note", "--label-col", "code", "--id-col", "claim",
        "--date-col", "dos", "--source", "portal",
    )
    assert code == 0, err
    with Store.open(db_url) as store:
        assert [(r.id, r.label, r.source, str(r.date)) for r in store.records()] == [
            ("k1", "C2", "portal", "2024-06-01"), ("k2", "I1", "portal", "2024-07-02"),
        ]
    code, out, _ = cli(capsys, "records", "stats", "--json")
    assert code == 0
    assert json.loads(out)["by_month"] == {"2024-06": 1, "2024-07": 1}


def test_import_crosswalk_translates_their_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str) -> None:
    crosswalk = tmp_path / "northside.csv"
    crosswalk.write_text("their_code,our_code\nPA-NONE,C1\nPA-NONUM,C1\nLATE,I1\n")
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("id,text,label\nn1,no precert,PA-NONE\nn2,no auth number,PA-NONUM\nn3,late,LATE\n")
    code, out, err = cli(
        capsys, "import", str(theirs), "--crosswalk", str(crosswalk), "--taxonomy", str(TAXONOMY), "--db", db_url
    )
    assert code == 0, err
    assert "translated through the northside crosswalk" in out
    with Store.open(db_url) as store:
        assert store.current_labels() == {"n1": "C1", "n2": "C1", "n3": "I1"}
        assert store.label_history("n2")[0]["original_category"] == "PA-NONUM"


def test_stats_review_assign_and_revert(capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str) -> None:
    from taxonomist.taxonomy import load_taxonomy

    path = tmp_path / "g.csv"
    path.write_text("id,text,label,date\ng1,modifier 95 missing,G1,2024-01-05\ng2,HO modifier invalid,G1,2024-02-05\n")
    assert cli(capsys, "import", str(path), "--taxonomy", str(TAXONOMY), "--db", db_url)[0] == 0
    code, out, _ = cli(capsys, "records", "stats", "--db", db_url)
    assert code == 0 and "2 records, 2 labelled" in out and "2024-02" in out

    change = load_taxonomy(TAXONOMY).split("G1", {"G1A": "Telehealth modifier", "G1B": "Other modifier"}, author="lead")
    with Store.open(db_url) as store:
        split_id = store.relabel(change, who="lead").relabel_id
    code, out, err = cli(capsys, "records", "review", "--db", db_url, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["record_id"], r["reason"], r["current_label"]) for r in rows] == [("g1", "split", "G1"), ("g2", "split", "G1")]
    assert rows[0]["excerpt"] == "modifier 95 missing" and rows[0]["details"]["candidates"] == ["G1A", "G1B"]
    code, out, _ = cli(capsys, "records", "review", "--db", db_url)
    assert code == 0 and "split" in out and "HO modifier invalid" in out  # a table with the text excerpt
    assert cli(capsys, "records", "assign", "g1", "G1A", "--relabel-id", split_id, "--db", db_url)[0] == 0
    code, _, err = cli(capsys, "records", "assign", "g2", "G1", "--db", db_url)
    assert code == 1 and "'G1' is not an active category" in err
    code, out, _ = cli(capsys, "records", "revert", split_id, "--db", db_url)
    assert code == 0 and "1 label(s) restored" in out
    with Store.open(db_url) as store:
        assert store.current_labels() == {"g1": "G1", "g2": "G1"}
        # The taxonomy is back too, and the split's review items are withdrawn.
        assert store.get_taxonomy().version_id == load_taxonomy(TAXONOMY).version_id
        assert store.review_queue() == []


def test_assign_file_export_and_revert_of_a_merge_restores_the_taxonomy_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str
) -> None:
    import shutil

    from taxonomist.taxonomy import load_taxonomy

    tax = tmp_path / "t.yaml"
    shutil.copy(TAXONOMY, tax)
    path = tmp_path / "r.csv"
    path.write_text("id,text,label,date\nr1,no auth on file,C1,2024-01-05\nr2,auth denied,C2,2024-02-05\n"
                    "r3,timely filing,I1,2024-03-05\n")
    assert cli(capsys, "import", str(path), "--taxonomy", str(tax), "--db", db_url)[0] == 0
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,category\nr1,C2\nr3,C1\n")
    code, out, err = cli(capsys, "records", "assign", "--file", str(decisions), "--db", db_url)
    assert code == 0 and "2 label(s) written" in out, err
    bad = tmp_path / "bad.csv"
    bad.write_text("id,category\nr2,C1\nr9,C1\n")  # r9 is not stored: nothing of the file is applied
    code, _, err = cli(capsys, "records", "assign", "--file", str(bad), "--db", db_url)
    assert code == 1 and "row 2: record 'r9' is not in the store" in err
    with Store.open(db_url) as store:
        assert store.current_labels() == {"r1": "C2", "r2": "C2", "r3": "C1"}
        assert [h["category"] for h in store.label_history("r1")] == ["C1", "C2"]

    code, out, err = cli(capsys, "taxonomy", "merge", str(tax), "C1", "C2", "--into", "C1", "--db", db_url)
    assert code == 0, err
    merge_id = out.split("relabel id ")[1].split(")")[0]
    exported = tmp_path / "export.csv"
    assert cli(capsys, "records", "export", "--db", db_url, "--out", str(exported))[0] == 0
    text = exported.read_text()
    assert "r1,no auth on file,C1" in text and "r2,auth denied,C1" in text  # the current labels, after the merge

    code, out, _ = cli(capsys, "records", "revert", merge_id, "--db", db_url)
    assert code == 0 and f"wrote version {load_taxonomy(TAXONOMY).version_id}" in out
    assert load_taxonomy(tax).version_id == load_taxonomy(TAXONOMY).version_id
    # The merge can be applied again: C2 is active in the file again.
    assert cli(capsys, "taxonomy", "merge", str(tax), "C1", "C2", "--into", "C1", "--db", db_url)[0] == 0


def test_a_db_path_that_does_not_exist_is_refused_unless_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    code, _, err = cli(capsys, "records", "stats", "--db", str(missing))
    assert code == 1 and "no store at" in err and "--create" in err
    assert not missing.exists()


def test_import_where_every_row_is_bad_exits_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,text\n1,\n2,  \n")
    code, _, err = cli(capsys, "import", str(path), "--db", db_url)
    assert code == 1
    assert "nothing could be imported" in err and "all 2 rows were rejected" in err


def test_missing_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taxonomist", "import", str(tmp_path / "nope.csv"), "--db", str(tmp_path / "n.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: input file '{tmp_path / 'nope.csv'}' does not exist"
    assert not (tmp_path / "n.db").exists()  # nothing was created for a file that is not there


def test_fixed_file_reimport_removes_the_stale_rejects_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "fixme.csv"
    path.write_text("id,text,date\n1,ok,2024-01-01\n2,bad date,2024/01/02\n")
    assert cli(capsys, "import", str(path), "--db", db_url)[0] == 0
    rejects = tmp_path / "fixme.csv.rejects.csv"
    assert rejects.read_text().splitlines()[1].startswith("3,2,date '2024/01/02'")
    path.write_text("id,text,date\n1,ok,2024-01-01\n2,bad date,2024-01-02\n")
    code, out, _ = cli(capsys, "import", str(path), "--db", db_url)
    assert code == 0 and "│    2 │        1 │         1 │         0 │        0 │" in out
    assert not rejects.exists()
