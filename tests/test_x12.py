"""X12 835: what we write is a valid 5010 remittance, reads back exactly, and a bad segment loses only itself."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from taxonomist.demo_data import generate_records, render_text
from taxonomist.errors import RecordError
from taxonomist.x12 import Reject835, Remit835Row, parse_835, write_835

N = 1000


def _rows(cols: dict[str, list], n: int) -> list[dict]:
    return [{k: cols[k][i] for k in cols} for i in range(n)]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return _rows(generate_records(records=N, seed=5), N)


@pytest.fixture(scope="module")
def remit(records, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("x12") / "remit.835"
    write_835(records, path, control_seed=42)
    return path


def _segments(text: str) -> list[str]:
    return [s.strip() for s in text.split("~") if s.strip()]


def _assert_same(rec: dict, row: Remit835Row) -> None:
    assert row.id == rec["id"]
    assert (row.claim_id, row.line, row.date, row.payer) == (rec["claim_id"], rec["line"], rec["date"], rec["payer"])
    assert (row.cpt, " ".join(row.modifiers), row.pos) == (rec["cpt"], rec["modifiers"], rec["pos"])
    assert (row.group_code, row.carc, " ".join(row.rarcs)) == (rec["group_code"], rec["carc"], rec["rarcs"])
    assert row.billed_amount == pytest.approx(rec["billed_amount"], abs=1e-9)
    assert row.paid_amount == pytest.approx(rec["paid_amount"], abs=1e-9)
    assert row.adjustment_amount == pytest.approx(rec["adjustment_amount"], abs=1e-9)
    # Lines balance: billed - adjustments = paid (the CO-45 remainder included).
    assert row.billed_amount - sum(a.amount for a in row.adjustments) == pytest.approx(row.paid_amount, abs=0.005)


def test_round_trip_of_1000_records_keeps_every_code_amount_and_date(records, remit):
    items = list(parse_835(remit))
    assert not [i for i in items if isinstance(i, Reject835)]
    rows = {r.id: r for r in items}
    assert len(rows) == N
    for rec in records:
        _assert_same(rec, rows[rec["id"]])
    statuses = {r.claim_status for r in rows.values()}
    assert {"4", "1", "22"} <= statuses  # denials, partly paid (write-downs, cost-share), reversals


def test_claim_level_cas_and_moa_read_back_the_same(records, tmp_path):
    payers = sorted({r["payer"] for r in records})
    path = tmp_path / "claim_level.835"
    write_835(records, path, control_seed=7, claim_level_payers=payers)
    text = path.read_text()
    segs = _segments(text)
    assert any(s.startswith("MOA*") for s in segs)
    # a CAS right after a CLP is a claim-level (loop 2100) adjustment
    assert any(a.startswith("CLP*") and b.startswith("CAS*") for a, b in zip(segs, segs[1:]))
    rows = {r.id: r for r in parse_835(path)}
    assert len(rows) == N
    for rec in records:
        _assert_same(rec, rows[rec["id"]])


def test_envelope_counts_and_control_numbers_agree(remit, records):
    segs = _segments(remit.read_text())
    isa, gs, ge, iea = segs[0], segs[1], segs[-2], segs[-1]
    assert len(isa) == 105 and isa.count("*") == 16  # fixed-width ISA (the terminator is the 106th character)
    isa13 = isa.split("*")[13]
    assert iea == f"IEA*1*{isa13}"
    assert ge.split("*")[2] == gs.split("*")[6]
    sts = [i for i, s in enumerate(segs) if s.startswith("ST*")]
    assert ge.split("*")[1] == str(len(sts)) == str(len({r["payer"] for r in records}))
    for start in sts:
        end = next(i for i in range(start, len(segs)) if segs[i].startswith("SE*"))
        st02 = segs[start].split("*")[2]
        assert segs[end] == f"SE*{end - start + 1}*{st02}"
        clps = [s for s in segs[start:end] if s.startswith("CLP*")]
        bpr = segs[start + 1].split("*")
        paid = sum(float(c.split("*")[4]) for c in clps)
        plb = sum(float(s.split("*")[4]) for s in segs[start:end] if s.startswith("PLB*"))
        assert float(bpr[2]) == pytest.approx(paid - plb, abs=0.005)  # BPR02 = sum(CLP04) - PLB
    denied = [s for s in segs if s.startswith("CLP*") and s.split("*")[2] == "4"]
    assert denied and all(float(s.split("*")[4]) == 0 for s in denied)
    assert any(s.startswith("SVC*HC:") and ":" in s.split("*")[1][3:] for s in segs)  # HC:code:modifier
    assert any(s.startswith("LQ*HE*") for s in segs) and any(s.startswith("DTM*472*") for s in segs)


def _validate_with_pyx12(path: Path, caplog) -> bool:
    x12n = pytest.importorskip("pyx12.x12n_document")
    params = pytest.importorskip("pyx12.params")
    import logging

    with caplog.at_level(logging.ERROR):
        return bool(
            x12n.x12n_document(
                param=params.params(), src_file=str(path), fd_997=None, fd_html=None, fd_xmldoc=None, xslt_files=None
            )
        )


def test_pyx12_finds_the_written_file_valid_5010(records, tmp_path, caplog):
    path = tmp_path / "small.835"
    write_835(records[:150], path, control_seed=9, claim_level_payers=["Cascade Medicaid MCO"])
    assert _validate_with_pyx12(path, caplog), [r.getMessage() for r in caplog.records][:5]
    # ...and the validator does fail a broken file, so the check above means something.
    bad = tmp_path / "bad.835"
    bad.write_text(re.sub(r"CAS\*CO\*[^~]*~", "CAS*CO~", path.read_text(), count=1))
    caplog.clear()
    assert not _validate_with_pyx12(bad, caplog)


def _break(text: str, pattern: str, replacement: str) -> tuple[str, int]:
    """Replace the first segment matching `pattern`; return the text and that segment's 1-based position."""
    segs = text.split("~")
    for k, s in enumerate(segs):
        if re.match(pattern, s.strip()):
            segs[k] = "\n" + replacement if s.startswith("\n") else replacement
            return "~".join(segs), k + 1
    raise AssertionError(f"no segment matches {pattern}")


def test_truncated_cas_is_rejected_with_its_position_and_the_rest_is_kept(records, remit, tmp_path):
    text, position = _break(remit.read_text(), r"CAS\*CO\*197\*", "CAS*CO")
    path = tmp_path / "truncated.835"
    path.write_text(text)
    items = list(parse_835(path))
    rejects = [i for i in items if isinstance(i, Reject835)]
    assert len(rejects) == 1
    bad = rejects[0]
    assert (bad.segment, bad.segment_id) == (position, "CAS")
    assert bad.interchange == "000000042" and re.fullmatch(r"\d{4}", bad.transaction)
    assert "truncated" in bad.reason
    assert bad.message().startswith(f"segment {position} (CAS) of interchange 000000042, transaction {bad.transaction}")
    rows = {r.id: r for r in items if isinstance(r, Remit835Row)}
    assert len(rows) == N - 1
    for rec in records:
        if rec["id"] in rows:
            _assert_same(rec, rows[rec["id"]])


def test_bad_amount_and_out_of_order_segments_lose_only_themselves(records, remit, tmp_path):
    text, svc_pos = _break(remit.read_text(), r"SVC\*HC:90837\*", "SVC*HC:90837*12x.00*0**1")
    text, lq_pos = _break(text, r"NM1\*QC\*", "LQ*HE*N130")  # an LQ where the patient name should be
    path = tmp_path / "broken.835"
    path.write_text(text)
    items = list(parse_835(path))
    rejects = sorted((r.segment, r.segment_id) for r in items if isinstance(r, Reject835))
    assert rejects == sorted([(svc_pos, "SVC"), (lq_pos, "LQ")])
    assert sum(isinstance(r, Remit835Row) for r in items) == N - 1


def test_truncated_file_and_unknown_segments_are_reported(remit):
    segs = remit.read_text().split("~")
    cut = "~".join(segs[: len(segs) // 2]) + "~ZZZ*1~"
    items = list(parse_835(io.StringIO(cut)))
    rejects = [r for r in items if isinstance(r, Reject835)]
    assert [r.segment_id for r in rejects] == ["ZZZ", "SE"]
    assert "ends inside a transaction" in rejects[-1].reason
    assert sum(isinstance(r, Remit835Row) for r in items) > 100


def test_separators_are_taken_from_the_isa(records, remit):
    text = remit.read_text()
    other = text.replace("*", "|").replace(":", ">").replace("~\n", "\n")
    assert other[105] == "\n" and other[3] == "|"
    rows = {r.id: r for r in parse_835(io.StringIO(other))}
    assert len(rows) == N
    _assert_same(records[3], rows[records[3]["id"]])


def test_not_an_x12_file_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.835"
    path.write_text("id,text\n1,hello\n")
    with pytest.raises(RecordError, match="must start with an ISA segment"):
        list(parse_835(path))
    with pytest.raises(RecordError, match="does not exist"):
        list(parse_835(tmp_path / "missing.835"))
    with pytest.raises(RecordError, match="no 'claim_id'"):
        write_835([{"date": "2024-01-01"}], tmp_path / "x.835")


def test_import_through_the_records_registry(records, remit, tmp_path):
    from taxonomist.records import read_records

    result = read_records(remit, format="835")
    assert len(result.records) == N and not result.rejects
    by_id = {r.id: r for r in result.records}
    rec = records[10]
    got = by_id[rec["id"]]
    assert got.label is None
    assert got.text == render_text(
        rec["group_code"], rec["carc"], rec["rarcs"], rec["cpt"], rec["modifiers"], rec["pos"], rec["payer"], ""
    )
    assert rec["text"].startswith(got.text + " | ")  # the generator's text is the same line plus the remark
    assert str(got.date) == rec["date"]
    assert got.fields["carc"] == rec["carc"] and got.fields["billed_amount"] == rec["billed_amount"]

    text, position = _break(remit.read_text(), r"CAS\*CO\*197\*", "CAS*CO")
    bad = tmp_path / "bad.835"
    bad.write_text(text)
    result = read_records(bad)  # format from the .835 suffix
    assert len(result.records) == N - 1
    assert len(result.rejects) == 1
    reject = result.rejects[0]
    assert reject.line == position
    assert reject.reason.startswith(f"segment {position} (CAS) of interchange 000000042, transaction ")
    assert "truncated" in reject.reason


HANDWRITTEN = Path(__file__).parent / "data" / "x12" / "handwritten.835"


def test_reads_an_835_laid_out_the_way_payers_send_it(caplog):
    assert _validate_with_pyx12(HANDWRITTEN, caplog)
    items = list(parse_835(HANDWRITTEN))
    assert all(isinstance(i, Remit835Row) for i in items)
    paid, addon, unprocessable, reversal = items
    assert (paid.payer, paid.payee, paid.claim_id, paid.line, paid.line_id) == (
        "ACME HEALTH PLAN", "SAMPLE COUNSELING GROUP", "CLM1001", 1, "LINE-1001-1"
    )
    assert (paid.cpt, paid.modifiers, paid.date, paid.billed_amount, paid.paid_amount) == ("90837", ("95",), "2024-03-01", 200.0, 96.5)
    assert [(a.group, a.reason, a.amount) for a in paid.adjustments] == [("CO", "45", 73.5), ("PR", "3", 30.0)]
    assert (addon.line, addon.carc, addon.rarcs) == (2, "97", ("M80", "N20"))
    # claim-level CAS and MOA apply to the claim's only line; DTM*150 gives its date
    assert (unprocessable.claim_status, unprocessable.group_code, unprocessable.carc) == ("4", "CO", "16")
    assert (unprocessable.rarcs, unprocessable.modifiers, unprocessable.pos) == (("MA130", "N382"), ("GT", "HO"), "02")
    assert (unprocessable.date, unprocessable.id) == ("2024-03-05", "CLM1002-1")
    assert (reversal.claim_status, reversal.billed_amount, reversal.paid_amount, reversal.adjustment_amount) == ("22", -120.0, -80.0, -40.0)
    assert unprocessable.text() == "CO-16 MA130 N382 | CPT 90834-GT-HO POS 02 | Payer: ACME HEALTH PLAN"


# ----- no segment content in messages (issue 11) ---------------------------------------------
MARKER_NAME, MARKER_ID = "ZQXJROE", "W987654321"


def _planted(remit: Path) -> str:
    """The written 835 with a marker patient name and member id in every NM1*QC."""
    return re.sub(r"NM1\*QC\*1\*DEMO\*PATIENT\*([^~]*)MI\*M\d+", rf"NM1*QC*1*{MARKER_NAME}*JANE*\1MI*{MARKER_ID}", remit.read_text())


@pytest.mark.parametrize("body", ["element", "terminator"])
def test_a_body_with_other_separators_than_its_isa_is_one_clear_error(remit, tmp_path, body):
    text = _planted(remit)
    isa, rest = text[:106], text[106:]
    rest = rest.replace("*", "|") if body == "element" else rest.replace("~", "\u001c")
    path = tmp_path / "mixed.835"
    path.write_text(isa + rest)
    with pytest.raises(RecordError, match="the body uses other separators than its ISA") as err:
        list(parse_835(path))
    assert MARKER_NAME not in str(err.value) and MARKER_ID not in str(err.value)


def _break_in_claim(text: str, claim: int, pattern: str, replacement: str) -> str:
    """Replace the first segment matching `pattern` after the `claim`-th CLP (0-based)."""
    segs = text.split("~")
    clps = [k for k, seg in enumerate(segs) if seg.strip().startswith("CLP*")]
    for k in range(clps[claim], len(segs)):
        if re.match(pattern, segs[k].strip()):
            segs[k] = ("\n" if segs[k].startswith("\n") else "") + replacement
            return "~".join(segs)
    raise AssertionError(f"no segment matches {pattern} after claim {claim}")


def test_rejects_name_segments_and_elements_never_their_values(remit, tmp_path):
    from taxonomist.records import read_records, write_rejects

    text = _planted(remit)
    text = _break_in_claim(text, 1, r"SVC\*", f"SVC*HC:90837*{MARKER_ID}*0**1")
    text = _break_in_claim(text, 3, r"CLP\*", f"CLP*C1*4*{MARKER_ID}*0")
    text = _break_in_claim(text, 5, r"DTM\*472\*", f"DTM*472*{MARKER_NAME}")
    text = _break_in_claim(text, 7, r"CAS\*", f"CAS*{MARKER_NAME}*45*10")
    text = _break_in_claim(text, 9, r"CAS\*", f"CAS*CO*45*{MARKER_ID}")
    text = _break_in_claim(text, 11, r"NM1\*", f"{MARKER_NAME} {MARKER_ID}*1")  # a segment that is not a segment
    text = _break_in_claim(text, 13, r"SE\*", f"SE*{MARKER_ID}*0001")
    path = tmp_path / "planted.835"
    path.write_text(text)
    result = read_records(path, format="835")
    assert len(result.rejects) == 7
    out = write_rejects(result.rejects, tmp_path / "rejects.csv").read_text()
    assert MARKER_NAME not in out and MARKER_ID not in out
    reasons = " | ".join(r.reason for r in result.rejects)
    assert "SVC SVC02 (charge) is not a number" in reasons and "CLP CLP03 (charge) is not a number" in reasons
    assert "DTM02 (date)" in reasons and "CAS01 (group code)" in reasons and "CAS03 (amount of triplet 1)" in reasons
    assert "(?)" in reasons and "SE01 (segment count)" in reasons


def test_a_damaged_st_or_clp_never_drops_or_misfiles_lines_silently(remit):
    text = remit.read_text()
    segs = text.split("~")
    sts = [k for k, seg in enumerate(segs) if seg.strip().startswith("ST*")]
    damaged = list(segs)
    damaged[sts[1]] = f"\n{MARKER_NAME} {MARKER_ID}"  # the second transaction's ST
    items = list(parse_835(io.StringIO("~".join(damaged))))
    assert sum(isinstance(i, Remit835Row) for i in items) == N  # read on: no claim of it is lost
    assert any("the ST before it is missing or damaged" in i.reason for i in items if isinstance(i, Reject835))
    clps = [k for k, seg in enumerate(segs) if seg.strip().startswith("CLP*")]
    k = clps[5]
    lines = sum(1 for seg in segs[k : clps[6]] if seg.strip().startswith("SVC*"))
    damaged = list(segs)
    damaged[k] = f"\n{MARKER_NAME} {MARKER_ID}"  # a claim's CLP
    items = list(parse_835(io.StringIO("~".join(damaged))))
    rows = [i for i in items if isinstance(i, Remit835Row)]
    assert len(rows) == N - lines  # its lines are rejected, not filed under the claim before it
    claims = {r["id"]: r["claim_id"] for r in _rows(generate_records(records=N, seed=5), N)}
    assert all(r.claim_id == claims[r.id] for r in rows)
    bad = [i for i in items if isinstance(i, Reject835) and i.segment == k + 1]
    assert any("where a claim's CLP should be" in i.reason for i in bad)
    assert not any(MARKER_ID in i.message() or MARKER_NAME in i.message() for i in items if isinstance(i, Reject835))
