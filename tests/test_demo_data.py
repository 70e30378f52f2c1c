"""The demo denial generator: deterministic, hard in the ways real data is, with the three events of the brief."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from taxonomist import load_crosswalk, load_taxonomy
from taxonomist.demo_data import COLUMNS, NETWORK_B_COLUMNS, Events, Knobs, base_taxonomy, generate
from taxonomist.demo_data._generator import category_priors

REPO = Path(__file__).resolve().parents[1]
N = 2000
EVENTS = Events()


def _read(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = generate(out, seed=11, records=N, x12_records=200)
    return result, _read(out / "denials.parquet"), _read(out / "network_b.parquet")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, seed=3, records=600, x12_records=50)
    generate(b, seed=3, records=600, x12_records=50)
    generate(c, seed=4, records=600, x12_records=50)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert set(da) == {
        "denials.parquet", "denials.csv", "network_b.parquet", "network_b.csv", "taxonomy.yaml",
        "network_b_taxonomy.yaml", "crosswalk_network_b.yaml", "DATACARD.md", "denials.835",
    }
    assert da == db
    assert da["denials.csv"] != dc["denials.csv"]


def test_columns_counts_and_csv_agree(demo):
    result, rows, _ = demo
    assert tuple(rows) == COLUMNS
    assert len(rows["id"]) == N == result.records
    assert len(set(rows["id"])) == N
    import csv

    with (result.out_dir / "denials.csv").open(newline="", encoding="utf-8") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == N
    assert csv_rows[17]["text"] == rows["text"][17]
    assert float(csv_rows[17]["billed_amount"]) == rows["billed_amount"][17]
    months = rows["month"]
    assert min(months) == 1 and max(months) == 24
    assert rows["date"] == sorted(rows["date"])  # ordered by date; months follow dates
    for date, month in zip(rows["date"], rows["month"]):
        y, m = int(date[:4]), int(date[5:7])
        assert (y - 2024) * 12 + m == month


def test_text_renders_codes_service_payer_and_remark(demo):
    _, rows, _ = demo
    for i in range(0, N, 97):
        text = rows["text"][i]
        assert text.startswith(f"{rows['group_code'][i]}-{rows['carc'][i]} {rows['rarcs'][i] or 'N/A'} | CPT {rows['cpt'][i]}")
        assert f"POS {rows['pos'][i]} | Payer: {rows['payer'][i]} | " in text
        assert text.endswith(rows["remark"][i])


def test_47_categories_before_the_event_and_48_after(demo):
    result, rows, _ = demo
    base = base_taxonomy()
    assert len(base) == 47
    before = {lab for lab, m in zip(rows["label"], rows["month"]) if m < EVENTS.new_category_month}
    after = {lab for lab, m in zip(rows["label"], rows["month"]) if m >= EVENTS.new_category_month}
    assert before <= set(base.codes) and "G7" not in before
    assert "G7" in after
    taxonomy = load_taxonomy(result.out_dir / "taxonomy.yaml")
    assert len(taxonomy) == 48 and taxonomy["G1"].active
    assert set(rows["label"]) <= set(taxonomy.codes)
    last = taxonomy.changelog[-1]
    assert (last.op, last.date) == ("split", "2025-07-01")
    assert last.details["into"] == ["G7"] and last.details["keep"] is True
    assert last.version == taxonomy.version_id
    assert "FQ" in taxonomy["G7"].definition


def test_label_noise_is_about_three_percent_and_flagged(demo):
    _, rows, _ = demo
    rate = sum(rows["label_is_noise"]) / N
    assert 0.02 <= rate <= 0.04


def test_near_duplicates_point_to_an_earlier_record_with_the_same_codes(demo):
    _, rows, _ = demo
    index = {rid: i for i, rid in enumerate(rows["id"])}
    dups = [i for i, d in enumerate(rows["near_duplicate_of"]) if d]
    assert 0.01 <= len(dups) / N <= 0.04
    for i in dups:
        j = index[rows["near_duplicate_of"][i]]
        assert j < i
        assert (rows["carc"][j], rows["cpt"][j], rows["payer"][j]) == (rows["carc"][i], rows["cpt"][i], rows["payer"][i])
        assert rows["remark"][j] != rows["remark"][i]  # edited, not copied


def test_same_carc_maps_to_several_categories(demo):
    _, rows, _ = demo
    by_carc: dict[str, set[str]] = {}
    for carc, label, noisy in zip(rows["carc"], rows["label"], rows["label_is_noise"]):
        if not noisy:
            by_carc.setdefault(carc, set()).add(label)
    assert len(by_carc["16"]) >= 5
    for carc in ("197", "50", "96"):
        assert len(by_carc[carc]) >= 2, carc
    generic = sum(1 for c, r in zip(rows["carc"], rows["rarcs"]) if c in ("16", "A1") and not r)
    assert generic / N > 0.03  # payers sending CO-16/A1 with no remark code


def test_long_tail_of_categories():
    codes, early = category_priors(Knobs(), late=False)
    shares = sorted(early, reverse=True)
    assert sum(shares[:5]) > 0.4
    assert sum(1 for s in shares if s * 80_000 < 50) >= 3  # a few categories with < 50 of 80,000


def test_wording_drift_events(demo):
    _, rows, _ = demo
    drift = EVENTS.wording_drift_month
    early = [i for i, m in enumerate(rows["month"]) if m < drift]
    late = [i for i, m in enumerate(rows["month"]) if m >= drift]
    assert not any(rows["pos"][i] == "10" for i in early)
    assert sum(rows["pos"][i] == "10" for i in late) > 20
    assert not any("pre-treatment" in rows["remark"][i].lower() for i in early)
    assert any("pre-treatment absent" in rows["remark"][i].lower() for i in late)
    assert not any(rows["payer"][i] == "Tri-County Medicaid Managed Care" for i in early)
    keystone_letters = ("Dear Provider", "Notice of adverse determination", "Important:")
    assert not any(rows["remark"][i].startswith(keystone_letters) for i in early)
    assert any(rows["remark"][i].startswith(keystone_letters) for i in late if rows["payer"][i] == "Keystone Health Plan")


def test_second_network_and_crosswalk_validate(demo):
    result, _, theirs = demo
    out = result.out_dir
    assert tuple(theirs) == NETWORK_B_COLUMNS
    assert len(theirs["id"]) == result.network_b_records == N // 8
    assert set(theirs["network"]) == {"B"}
    their_tax = load_taxonomy(out / "network_b_taxonomy.yaml")
    assert 28 <= len(their_tax) <= 36
    assert set(theirs["label"]) <= set(their_tax.codes)
    ours = load_taxonomy(out / "taxonomy.yaml")
    cw = load_crosswalk(out / "crosswalk_network_b.yaml")
    cw.check(ours)
    assert set(cw.mapping) == set(their_tax.codes)
    assert cw.merges["C1"] == ["AU01", "AU02"] and cw.merges["I1"] == ["AD01", "AD02"]
    change = ours.with_crosswalk(cw, author="test", date="2025-08-01")
    assert change.relabel["EL01"] == "A1"
    # Their coarse codes really do cover more than one of ours.
    covered: dict[str, set[str]] = {}
    for t, o, noisy in zip(theirs["label"], theirs["label_ours"], theirs["label_is_noise"]):
        if not noisy:
            covered.setdefault(t, set()).add(o)
    assert any(len(v) > 1 for v in covered.values())


def test_data_card_reports_counts_events_and_second_network(demo):
    result, rows, _ = demo
    card = (result.out_dir / "DATACARD.md").read_text(encoding="utf-8")
    assert "Seed **11**" in card and f"**{N:,}** records" in card
    assert "48 active categories" in card and "before month 19 labels come from the 47 categories" in card
    assert "G7" in card and "2025-07-01" in card and "Month 13 (2025-01)" in card
    assert "Second network" in card and "EL01" in card
    top, count = Counter(rows["label"]).most_common(1)[0]
    assert f"| 1 | {top} |" in card and f"| {count:,} |" in card


def test_packaged_taxonomy_is_the_example_taxonomy():
    packaged = REPO / "src" / "taxonomist" / "demo_data" / "taxonomy.yaml"
    assert packaged.read_bytes() == (REPO / "examples" / "denials" / "taxonomy.yaml").read_bytes()


def test_cli_writes_the_files_and_refuses_too_few_months(tmp_path, capsys):
    from taxonomist.cli import main

    main(["demo-data", "--out", str(tmp_path / "d"), "--records", "300", "--seed", "2", "--x12", "40"])
    assert (tmp_path / "d" / "denials.835").read_text().startswith("ISA*")
    assert (tmp_path / "d" / "DATACARD.md").is_file()
    with pytest.raises(SystemExit) as exc:
        main(["demo-data", "--out", str(tmp_path / "e"), "--records", "300", "--months", "12"])
    assert exc.value.code == 1
    assert "--months must be at least 19" in capsys.readouterr().err
