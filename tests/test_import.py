"""Reading records from CSV, JSONL and Parquet: every valid row kept, every bad row rejected with its line."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest

from taxonomist.errors import ColumnMappingError, RecordError
from taxonomist.records import (
    FORMATS,
    ColumnMapping,
    Record,
    count_rows,
    read_records,
    register_format,
    write_rejects,
)
from taxonomist.store import Store

CODES = ["A1", "A2", "C1", "C2", "C3", "G1", "G2", "I1", "I2", "J1"]


def write_denials_csv(path: Path, n: int, bad: dict[int, str]) -> dict[int, int]:
    """Write `n` data rows; row i (0-based) is spoilt as `bad[i]` says. Returns {row index: physical line}.

    Row 3 has a quoted text spanning two lines, so physical lines and row numbers differ after it.
    """
    lines: dict[int, int] = {}
    line = 2
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "date", "payer", "carc"])
        for i in range(n):
            text = f"Claim {i}: denied, CO-197 precert absent for 90837"
            if i == 3:
                text = "Claim 3: first line of the note\nsecond line of the note"
            label, date = CODES[i % len(CODES)], f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"
            if bad.get(i) == "no text":
                text = "   "
            elif bad.get(i) == "unknown category":
                label = "Z9"
            elif bad.get(i) == "bad date":
                date = "12/31/2024"
            w.writerow([f"d{i:04d}", text, label, date, f"payer-{i % 7}", "197"])
            lines[i] = line
            line += 1 + text.count("\n")
    return lines


def test_csv_with_3_bad_rows_among_1000_keeps_997_and_reports_their_lines(
    tmp_path: Path, small_taxonomy, db_url: str
) -> None:
    path = tmp_path / "denials.csv"
    lines = write_denials_csv(path, 1000, {199: "no text", 499: "unknown category", 799: "bad date"})
    assert lines[199] == 202  # header + the two-line row 3 shift physical lines by one

    result = read_records(path, taxonomy=small_taxonomy)

    assert len(result.records) == 997 and result.read == 1000
    assert [(r.line, r.id) for r in result.rejects] == [(202, "d0199"), (502, "d0499"), (802, "d0799")]
    no_text, unknown, bad_date = (r.reason for r in result.rejects)
    assert "text column 'text' is empty" in no_text
    assert f"category 'Z9' is not in taxonomy 'denials-small' {small_taxonomy.version_id}" in unknown
    assert "`taxonomist taxonomy add`" in unknown and "line 502" in unknown
    assert "date '12/31/2024'" in bad_date and "YYYY-MM-DD" in bad_date
    kept = {r.id: r for r in result.records}
    assert kept["d0003"].text == "Claim 3: first line of the note\nsecond line of the note"
    assert kept["d0010"] == Record(
        id="d0010", text="Claim 10: denied, CO-197 precert absent for 90837",
        fields={"payer": "payer-3", "carc": "197"}, source="denials.csv", date=dt.date(2024, 11, 11), label="A1",
    )

    rejects = write_rejects(result.rejects, tmp_path / "denials.csv.rejects.csv")
    with rejects.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["line", "id", "reason"]
    assert [r[:2] for r in rows[1:]] == [["202", "d0199"], ["502", "d0499"], ["802", "d0799"]]
    assert "denied, CO-197" not in rejects.read_text()  # record text never goes into the rejects file

    with Store.open(db_url) as store:
        assert store.add_records(result.records, who="t").inserted == 997


def test_reimporting_the_same_file_is_idempotent(tmp_path: Path, small_taxonomy, db_url: str) -> None:
    path = tmp_path / "denials.csv"
    write_denials_csv(path, 120, {})
    with Store.open(db_url) as store:
        first = store.add_records(read_records(path, taxonomy=small_taxonomy).records, who="t")
        stats = store.stats()
        second = store.add_records(read_records(path, taxonomy=small_taxonomy).records, who="t")
        assert (first.inserted, first.labels_added) == (120, 120)
        assert (second.inserted, second.unchanged, second.labels_added, second.conflicts) == (0, 120, 0, [])
        assert store.stats() == stats


def test_non_utf8_bytes_reject_only_their_row(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"id,text,label\n"
        b"1,first note,C1\n"
        b"2,caf\xe9 au lait billing note,C1\n"  # Latin-1 e-acute: not UTF-8
        b"3,third note \xe2\x80\x94 with a real UTF-8 dash,C1\n"
        b"4\xff,fourth note,C1\n"
        b"5,fifth note,C1\n"
    )
    result = read_records(path)
    assert [r.id for r in result.records] == ["1", "3", "5"]
    assert result.records[1].text == "third note \u2014 with a real UTF-8 dash"
    assert [(r.line, r.id) for r in result.rejects] == [(3, "2"), (5, "4?")]
    assert "column(s) text hold bytes that are not UTF-8" in result.rejects[0].reason
    assert "caf" not in result.rejects[0].reason


def test_duplicate_id_rejects_the_later_row_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text("id,text\na,one\nb,two\na,three\nc,four\n", encoding="utf-8")
    result = read_records(path)
    assert [r.text for r in result.records] == ["one", "two", "four"]
    (reject,) = result.rejects
    assert (reject.line, reject.id) == (4, "a")
    assert "id 'a' already appears on line 2" in reject.reason


def test_malformed_csv_rows_are_rejected_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_bytes("\ufeffid,text,label\n1,ok,C1\n2,too,many,fields\n\n3,also ok,\n".encode())
    result = read_records(path)
    assert [(r.id, r.label) for r in result.records] == [("1", "C1"), ("3", None)]
    assert [(r.line, r.reason) for r in result.rejects] == [
        (3, "the row has 4 fields but the header has 3; check for an unquoted comma or a missing field")
    ]


def test_impossible_dates_and_long_texts(tmp_path: Path) -> None:
    path = tmp_path / "dates.csv"
    letter = "appeal letter paragraph. " * 8000  # ~200 KB, over csv's default field limit
    path.write_text(
        f"id,text,date\n1,ok,2024-02-29\n2,ok,2023-02-29\n3,ok,2024-13-01\n4,{letter},2024-03-01T09:30:00\n",
        encoding="utf-8",
    )
    result = read_records(path)
    assert [(r.id, r.date) for r in result.records] == [("1", dt.date(2024, 2, 29)), ("4", dt.date(2024, 3, 1))]
    assert len(result.records[1].text) == len(letter.strip())
    assert [(r.line, r.reason.split(" in column")[0]) for r in result.rejects] == [
        (3, "date '2023-02-29'"), (4, "date '2024-13-01'"),
    ]


def test_retired_category_is_rejected_naming_its_successor(tmp_path: Path, small_taxonomy) -> None:
    taxonomy = small_taxonomy.retire("I2", successor="I1", author="lead").taxonomy
    path = tmp_path / "old.csv"
    path.write_text("id,text,category\n1,appeal upheld,I2\n2,late claim,I1\n", encoding="utf-8")
    result = read_records(path, taxonomy=taxonomy)
    assert [r.label for r in result.records] == ["I1"]  # `category` is read as the label column
    assert "category 'I2' is retired" in result.rejects[0].reason and "successor is I1" in result.rejects[0].reason


def test_column_mapping_names_columns_and_refuses_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "mapped.csv"
    path.write_text(
        "claim_no,note,denial_code,service_date,payer,network,cpt\n"
        "c-1,auth absent,C1,2024-02-03,Acme,north,90837\n",
        encoding="utf-8",
    )
    mapping = ColumnMapping(text="note", id="claim_no", label="denial_code", date="service_date",
                            fields=["payer", "network"])
    (rec,) = read_records(path, mapping=mapping, default_source="north-network").records
    assert rec == Record(id="c-1", text="auth absent", fields={"payer": "Acme", "network": "north"},
                         source="north-network", date=dt.date(2024, 2, 3), label="C1")
    rest = read_records(path, mapping=ColumnMapping(text="note", label="denial_code")).records[0]
    assert rest.fields == {"claim_no": "c-1", "service_date": "2024-02-03", "payer": "Acme", "network": "north",
                           "cpt": "90837"}
    with pytest.raises(ColumnMappingError, match="text column 'text' not found .*--text-col"):
        read_records(path)
    with pytest.raises(ColumnMappingError, match="id column 'record_id' not found"):
        read_records(path, mapping=ColumnMapping(text="note", id="record_id"))


def test_rows_without_ids_get_stable_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "noid.csv"
    path.write_text("text,label\nsame note,C1\nsame note,C1\nother note,C2\n", encoding="utf-8")
    first, second = read_records(path).records, read_records(path).records
    assert [r.id for r in first] == [r.id for r in second]
    assert len({r.id for r in first}) == 3
    elsewhere = read_records(path, default_source="other-network").records
    assert not {r.id for r in elsewhere} & {r.id for r in first}


def test_jsonl_import_with_nested_fields_and_bad_lines(tmp_path: Path, small_taxonomy) -> None:
    path = tmp_path / "denials.jsonl"
    good = {"id": "j1", "text": "Precert absent", "label": "C1", "date": "2024-05-06",
            "source": "portal", "codes": {"group": "CO", "carc": "197", "rarc": ["N54"]}}
    path.write_bytes(
        (json.dumps(good) + "\n").encode()
        + b"\n"
        + b'{"id": "j2", "text": "broken json"\n'
        + b'["not", "an", "object"]\n'
        + b'{"id": "j4", "text": "caf\xe9"}\n'
        + (json.dumps({"id": "j5", "text": "no label here", "date": None}) + "\n").encode()
        + (json.dumps({"id": "j6", "note": "no text key"}) + "\n").encode()
        + (json.dumps({"id": "j7", "text": "wrong code", "label": "Q1"}) + "\n").encode()
    )
    result = read_records(path, taxonomy=small_taxonomy)
    assert [r.id for r in result.records] == ["j1", "j5"]
    assert result.records[0] == Record(
        id="j1", text="Precert absent", fields={"codes": {"group": "CO", "carc": "197", "rarc": ["N54"]}},
        source="portal", date=dt.date(2024, 5, 6), label="C1",
    )
    assert result.records[1].source == "denials.jsonl" and result.records[1].label is None
    assert [r.line for r in result.rejects] == [3, 4, 5, 7, 8]
    reasons = [r.reason for r in result.rejects]
    assert "not valid JSON" in reasons[0] and "JSON list" in reasons[1] and "not UTF-8" in reasons[2]
    assert "no 'text' field" in reasons[3] and "category 'Q1' is not in taxonomy" in reasons[4]


def test_parquet_import(tmp_path: Path, small_taxonomy, db_url: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "denials.parquet"
    table = pa.table({
        "id": ["p1", "p2", "p3", "p4"],
        "text": ["Timely filing limit passed", None, "Modifier 95 missing", "Member not found"],
        "label": ["I1", "I1", "G1", "A2"],
        "date": pa.array([dt.date(2024, 1, 2), dt.date(2024, 1, 3), None, dt.date(2024, 3, 4)], pa.date32()),
        "units": [1, 2, 3, 4],
    })
    pq.write_table(table, path)
    result = read_records(path, taxonomy=small_taxonomy)
    assert [(r.id, r.date, r.fields) for r in result.records] == [
        ("p1", dt.date(2024, 1, 2), {"units": 1}), ("p3", None, {"units": 3}), ("p4", dt.date(2024, 3, 4), {"units": 4}),
    ]
    assert [(r.line, r.id) for r in result.rejects] == [(2, "p2")]
    assert count_rows(path) == 4
    with Store.open(db_url) as store:
        assert store.add_records(result.records, who="t").inserted == 3
        assert store.add_records(read_records(path).records, who="t").unchanged == 3


def test_whole_file_errors_are_one_clear_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="input file '.*missing.csv' does not exist"):
        read_records(tmp_path / "missing.csv")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(RecordError, match="cannot tell the format .*pass --format"):
        read_records(tmp_path / "data.txt")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RecordError, match="is empty; expected a header"):
        read_records(tmp_path / "empty.csv")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(RecordError, match="not a readable Parquet file"):
        read_records(tmp_path / "fake.parquet")


def test_format_registry_takes_new_readers(tmp_path: Path) -> None:
    assert {"csv", "jsonl", "parquet", "835"} <= set(FORMATS)

    def read_pipes(path: Path):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split("|")
            yield (n, {"id": parts[0], "text": parts[1]}) if len(parts) == 2 else (n, ValueError("segment is cut short"))

    register_format("pipes", read_pipes, suffixes=(".pipes",))
    try:
        path = tmp_path / "x.pipes"
        path.write_text("a|first\nb\nc|third\n")
        result = read_records(path)
        assert [r.id for r in result.records] == ["a", "c"]
        assert [(r.line, r.reason) for r in result.rejects] == [(2, "segment is cut short")]
    finally:
        FORMATS.pop("pipes")


def test_progress_callback_reports_positions(tmp_path: Path) -> None:
    path = tmp_path / "denials.csv"
    write_denials_csv(path, 1200, {})
    seen: list[int] = []
    read_records(path, on_progress=seen.append)
    assert seen[0] > 0 and seen == sorted(seen[:-1]) + [-1]
    assert count_rows(path) == 1201  # the two-line row counts twice: an estimate for the bar


def test_jsonl_rows_are_checked_one_by_one_even_the_first(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"id": "a", "body": "no text key"}) + "\n"
        + json.dumps({"id": "b", "text": "kept", "extra": 1}) + "\n"
        + json.dumps({"id": "c", "text": "kept too"}) + "\n"
    )
    result = read_records(path, mapping=ColumnMapping(label="code"))  # 'code' is in no row: read as unlabelled
    assert [(r.id, r.label, r.fields) for r in result.records] == [("b", None, {"extra": 1}), ("c", None, {})]
    assert [(r.line, r.reason) for r in result.rejects] == [(1, "the row has no 'text' field; every record needs its text")]


def test_no_reject_reason_carries_record_text(tmp_path: Path, small_taxonomy) -> None:
    marker = "PATIENT JANE ROE DOB 1970"
    csv_path = tmp_path / "phi.csv"
    csv_path.write_bytes(
        "id,text,label,date\n"
        f"1,{marker} ok,C1,2024-01-01\n"
        f"2,{marker} unknown,Z9,2024-01-01\n"
        f"3,{marker} bad date,C1,01/01/2024\n"
        f"1,{marker} duplicate,C1,2024-01-01\n"
        f"5,{marker} ragged,C1,2024-01-01,extra\n".encode()
        + f"6,{marker} latin-1 \xe9,C1,2024-01-01\n".encode("latin-1")
    )
    jsonl_path = tmp_path / "phi.jsonl"
    jsonl_path.write_text(f'{{"id": "7", "text": "{marker} broken\n["{marker}"]\n')
    rejects = read_records(csv_path, taxonomy=small_taxonomy).rejects + read_records(jsonl_path).rejects
    assert len(rejects) == 7
    for r in rejects:
        assert "JANE" not in r.reason and "JANE" not in repr(r), r.reason
    out = write_rejects(rejects, tmp_path / "rejects.csv")
    assert "JANE" not in out.read_text()


# ----- no record content in rejects, NUL refused (issue 11) -----------------------------------
MARKER = "ZQXJ-MARKER Jane Roe member W123456789"


@pytest.mark.parametrize(
    "mapping",
    [ColumnMapping(label="text"), ColumnMapping(date="text"), ColumnMapping(id="text"), ColumnMapping(label="note")],
    ids=["label-col text", "date-col text", "id-col text", "label-col other text"],
)
def test_a_wrong_column_mapping_never_copies_text_into_rejects(tmp_path: Path, small_taxonomy, mapping) -> None:
    path = tmp_path / "denials.csv"
    path.write_text(
        "id,text,note,label,date\n"
        f"1,{MARKER} denied,{MARKER} follow-up,C1,2024-01-01\n"
        f"2,{MARKER} denied,{MARKER} follow-up,C1,2024-01-01\n"
        f"3,{MARKER} denied,{MARKER} follow-up,C1,2024-01-01\n",
        encoding="utf-8",
    )
    result = read_records(path, mapping=mapping, taxonomy=small_taxonomy)
    assert result.rejects, "each mapping above must reject something"
    out = write_rejects(result.rejects, tmp_path / "rejects.csv").read_text()
    assert "ZQXJ" not in out and "W123456789" not in out
    for r in result.rejects:
        assert "ZQXJ" not in r.reason and "ZQXJ" not in r.id
    if mapping.label:
        assert f"column '{mapping.label}' holds a value that is not a category code" in result.rejects[0].reason
    if mapping.date:
        assert "the date (not shown) in column 'text' is not an ISO date" in result.rejects[0].reason
    if mapping.id:
        assert [r.reason.split(" already")[0] for r in result.rejects] == ["the id in column 'text'"] * 2


def test_short_codes_and_dates_are_still_named(tmp_path: Path, small_taxonomy) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("id,text,label,date\n1,note,Z9,2024-01-01\n2,note,C1,12/31/2024\n", encoding="utf-8")
    reasons = [r.reason for r in read_records(path, taxonomy=small_taxonomy).rejects]
    assert "category 'Z9' is not in taxonomy" in reasons[0] and "date '12/31/2024'" in reasons[1]


def test_nul_characters_reject_their_row(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(b"id,text,payer\n1,first note,P1\n2,second\x00note,P1\n3,third note,P\x00X\n4\x00,fourth,P1\n5,fifth,P1\n")
    jsonl = tmp_path / "nul.jsonl"
    jsonl.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": "a\\u0000b"}\n{"id": "3", "text": "x", "f": {"k": "\\u0000"}}\n')
    result = read_records(path)
    assert [r.id for r in result.records] == ["1", "5"]
    assert [(r.line, r.id) for r in result.rejects] == [(3, "2"), (4, "3"), (5, "")]
    assert "column(s) text hold a NUL character" in result.rejects[0].reason
    assert "column(s) payer hold a NUL character" in result.rejects[1].reason
    assert all("\x00" not in r.reason for r in result.rejects)
    result = read_records(jsonl)
    assert [r.id for r in result.records] == ["1"] and [r.line for r in result.rejects] == [2, 3]


def test_a_headerless_file_does_not_quote_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text("".join(f"{i},{MARKER} denied for lack of precertification,C1\n" for i in (1, 2)), encoding="utf-8")
    with pytest.raises(ColumnMappingError) as err:
        read_records(path)
    assert "ZQXJ" not in str(err.value) and "-character name>" in str(err.value)


# ----- Ctrl-C: exit 130 and say what was kept (issue 11) -------------------------------------
def test_ctrl_c_exits_130_with_the_resume_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    import taxonomist.cli as cli
    from taxonomist.cli._console import resumable

    app = typer.Typer()
    done = {"n": 0}

    @app.command()
    def work() -> None:
        with resumable(lambda: f"{done['n']:,} of 5,000 records written to out.csv; rerun the same command to resume"):
            done["n"] = 1200
            raise KeyboardInterrupt

    @app.command()
    def plain() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_app", lambda: app)
    for command, line in (
        ("work", "interrupted: 1,200 of 5,000 records written to out.csv; rerun the same command to resume"),
        ("plain", "interrupted"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main([command])
        assert exc.value.code == 130  # typer returned 130 and main used to exit 0
        assert capsys.readouterr().err.strip().splitlines() == [line]


def test_import_interrupted_says_nothing_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import taxonomist.store as store_module
    from taxonomist.cli import main

    path = tmp_path / "denials.csv"
    write_denials_csv(path, 50, {})
    db = tmp_path / "s.db"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(SystemExit) as exc:
        m.setattr(store_module.Store, "add_records", interrupted)
        main(["import", str(path), "--db", str(db), "--who", "t"])
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted: no records from denials.csv were stored (they are written in one transaction); "
        "rerun the same command to import it"
    )
    main(["import", str(path), "--db", str(db), "--who", "t"])
    with Store.open(db) as store:
        assert store.stats()["records"] == 50
