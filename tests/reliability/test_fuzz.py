"""Hypothesis property tests: the readers never crash, never lose a valid row, never leak text into rejects;
taxonomy operations on a store always revert to the labels they started from."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxonomist.errors import RecordError, TaxonomistError
from taxonomist.records import Record, read_records, write_rejects

pytestmark = pytest.mark.reliability

# Text-like (spaces): a message may quote a short code, never something shaped like this.
MARKER = "Zqxj Marker Jane Roe W739105528"
# Seeded (derandomize) so CI runs the same examples each time; no example database in the work tree.
FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

# Record text: anything Unicode except what cannot be stored (NUL, lone surrogates), not blank.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=60).filter(
    lambda t: t.strip() != ""
)
BAD_CSV_ROWS = st.sampled_from([
    b"bad,too,many,fields,here\n",
    b"bad-utf8,caf\xe9 " + MARKER.encode() + b",C1\n",
    b"bad-nul," + MARKER.encode() + b" \x00 note,C1\n",
    b"bad-blank,   ,C1\n",
    b"bad-short\n",
])


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="taxonomist-fuzz-"))


def _assert_no_leak(rejects, tally) -> None:
    out = io.StringIO()
    for r in rejects:
        out.write(f"{r.line},{r.id},{r.reason}\n")
    leaked = sum(1 for r in rejects if "Zqxj" in r.reason or "Zqxj" in r.id or "W739105528" in r.reason)
    tally["leaked"] += leaked
    assert leaked == 0, out.getvalue()


@FAST
@given(rows=st.lists(st.tuples(TEXT, st.sampled_from(["", "C1", "A1"])), max_size=25),
       bad=st.lists(st.tuples(st.integers(0, 25), BAD_CSV_ROWS), max_size=6))
def test_csv_keeps_every_valid_row_rejects_each_bad_one_and_quotes_no_text(rows, bad, tally):
    tally["fuzz_examples"] += 1
    body = io.StringIO()
    w = csv.writer(body)  # "\r\n" rows: a "\r" in a text is quoted, as Excel and pandas write it
    valid = {f"r{i}": (f"{MARKER} {text}", label) for i, (text, label) in enumerate(rows)}
    lines = [body.getvalue().encode()]
    for rid, (text, label) in valid.items():
        body.seek(0), body.truncate()
        w.writerow([rid, text, label])
        lines.append(body.getvalue().encode("utf-8"))
    for position, row in sorted(bad, key=lambda b: -b[0]):
        lines.insert(1 + min(position, len(lines) - 1), row)
    path = _tmp() / "fuzz.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(lines[1:]))
    result = read_records(path)
    kept = {r.id: (r.text, r.label) for r in result.records}
    expected = {rid: (text.strip(), label or None) for rid, (text, label) in valid.items()}
    lost = sum(1 for rid in expected if kept.get(rid) != expected[rid])
    tally["lost"] += lost
    tally["records_checked"] += len(expected)
    assert lost == 0
    assert set(kept) == set(expected)  # no bad row slipped in as a record
    assert len(result.rejects) == len(bad)
    _assert_no_leak(result.rejects, tally)
    write_rejects(result.rejects, path.with_suffix(".rejects.csv"))
    assert "Zqxj" not in path.with_suffix(".rejects.csv").read_text()
    shutil.rmtree(path.parent)


@FAST
@given(rows=st.lists(TEXT, max_size=20), garbage=st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b), max_size=8),
       ascii_only=st.booleans())
def test_jsonl_garbage_lines_never_cost_a_valid_row(rows, garbage, ascii_only, tally):
    tally["fuzz_examples"] += 1
    lines = [json.dumps({"id": f"r{i}", "text": f"{MARKER} {t}"}, ensure_ascii=ascii_only).encode() for i, t in enumerate(rows)]
    for k, g in enumerate(garbage):
        lines.insert((k * 7) % (len(lines) + 1), g)
    path = _tmp() / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = read_records(path)
    kept = {r.id: r.text for r in result.records}
    lost = sum(1 for i, t in enumerate(rows) if kept.get(f"r{i}") != f"{MARKER} {t}".strip())
    tally["lost"] += lost
    tally["records_checked"] += len(rows)
    assert lost == 0
    _assert_no_leak(result.rejects, tally)
    shutil.rmtree(path.parent)


@FAST
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".csv", ".jsonl", ".835"]),
       header=st.sampled_from([b"", b"id,text,label\n", b"ISA*00*"]))
def test_arbitrary_bytes_end_in_records_rejects_or_one_record_error(data, suffix, header, tally):
    tally["fuzz_examples"] += 1
    path = _tmp() / f"any{suffix}"
    path.write_bytes(header + data)
    try:
        result = read_records(path)
    except RecordError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(r, Record) and r.text and "\x00" not in r.text for r in result.records)
        assert len({r.id for r in result.records}) == len(result.records)
    shutil.rmtree(path.parent)


# ----- 835: one corrupted segment inside a claim costs at most that claim --------------------
@pytest.fixture(scope="module")
def remit() -> tuple[str, list[dict]]:
    from taxonomist.demo_data import generate_records
    from taxonomist.x12 import write_835

    cols = generate_records(records=40, seed=11)
    recs = [{k: cols[k][i] for k in cols} for i in range(40)]
    out = io.StringIO()
    write_835(recs, out, control_seed=7)
    return out.getvalue(), recs


@FAST
@given(pick=st.integers(0, 10_000), junk=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="~\x00"), max_size=40),
       where=st.sampled_from(["replace", "element"]))
def test_835_corrupted_segment_loses_at_most_its_claim_and_quotes_nothing(remit, pick, junk, where, tally):
    from taxonomist.x12 import Reject835, parse_835

    text, recs = remit
    segs = text.split("~")
    clp = [k for k, s in enumerate(segs) if s.strip().startswith("CLP*")]
    inside = [k for k in range(clp[0], len(segs)) if segs[k].strip() and not segs[k].strip().startswith(("SE*", "GE*", "IEA*"))]
    k = inside[pick % len(inside)]
    owner = max(c for c in clp if c <= k)
    claim_lines = sum(1 for s in segs[owner : next((c for c in clp if c > owner), len(segs))] if s.strip().startswith("SVC*"))
    evil = f"{MARKER} {junk}"
    segs[k] = ("\n" if segs[k].startswith("\n") else "") + (evil if where == "replace" else segs[k].strip() + "*" + evil)
    items = list(parse_835(io.StringIO("~".join(segs))))
    rows = [i for i in items if not isinstance(i, Reject835)]
    rejects = [i for i in items if isinstance(i, Reject835)]
    tally["fuzz_examples"] += 1
    tally["records_checked"] += len(recs)
    lost = len(recs) - len(rows)
    assert 0 <= lost <= claim_lines
    if lost:
        assert rejects, "a line was dropped without a reject saying so"
    claim_of = {r["id"]: r["claim_id"] for r in recs}
    misfiled = [r.id for r in rows if r.id in claim_of and r.claim_id != claim_of[r.id]]
    tally["misfiled"] += len(misfiled)
    assert misfiled == [], "lines filed under another claim"
    leaked = sum(1 for r in rejects if "Zqxj" in r.message() or "W739105528" in r.message())
    tally["leaked"] += leaked
    assert leaked == 0


# ----- taxonomy operations on a store, then revert newest-first ------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["add", "merge", "split", "rename", "retire"]), st.integers(0, 99), st.integers(0, 99)),
               min_size=1, max_size=6)


@pytest.fixture(scope="module")
def template_store(tmp_path_factory, small_taxonomy) -> Path:
    from taxonomist.store import Store

    path = tmp_path_factory.mktemp("ops") / "template.db"
    codes = small_taxonomy.codes
    with Store.open(path) as store:
        store.save_taxonomy(small_taxonomy)
        store.add_records(
            [Record(id=f"r{i:02d}", text=f"{MARKER} note {i}", label=codes[i % len(codes)]) for i in range(40)],
            who="importer", taxonomy_version=small_taxonomy.version_id,
        )
    return path


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_sequence_of_operations_reverts_to_the_original_labels(template_store, small_taxonomy, ops, tally):
    from taxonomist.store import Store

    tally["fuzz_examples"] += 1
    folder = _tmp()
    shutil.copy(template_store, folder / "s.db")
    taxonomy, applied, counter = small_taxonomy, [], 0
    with Store.open(folder / "s.db") as store:
        before = store.current_labels()
        for op, a, b in ops:
            active = [c for c in taxonomy.codes if taxonomy[c].active]
            x, y = active[a % len(active)], active[b % len(active)]
            counter += 1
            new = f"N{counter}"
            try:
                if op == "add":
                    change = taxonomy.add(new, f"New {counter}", group=taxonomy[x].group, author="fuzz")
                elif op == "merge":
                    change = taxonomy.merge(sorted({x, y}), new if x == y else y, name=f"Merged {counter}", author="fuzz")
                elif op == "split":
                    change = taxonomy.split(x, {f"{new}A": "part a", f"{new}B": "part b"}, author="fuzz")
                elif op == "rename":
                    change = taxonomy.rename(x, new_code=new, author="fuzz")
                else:
                    change = taxonomy.retire(x, successor=None if x == y else y, author="fuzz")
            except TaxonomistError:
                continue  # an operation the taxonomy refuses (e.g. retiring the last category of a group)
            result = store.relabel(change, who="fuzz")
            applied.append(result.relabel_id)
            for rid in [rid for rid, code in store.current_labels().items() if code == x][:2] if op == "split" else []:
                store.assign(rid, f"{new}A", who="fuzz", relabel_id=result.relabel_id)
            taxonomy = change.taxonomy
        for relabel_id in reversed(applied):
            store.revert_relabel(relabel_id, who="fuzz")
        after = store.current_labels()
    tally["records_checked"] += len(before)
    tally["taxonomy_operations"] += len(applied)
    assert after == before
    shutil.rmtree(folder)
