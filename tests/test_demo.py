"""`taxonomist demo` end to end on a small generated data set with the fast engine."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from taxonomist.cli import main
from taxonomist.compare import EngineSpec
from taxonomist.compare.demo import DEMO_SETTINGS, demo_engines, run_demo

SMALL = replace(DEMO_SETTINGS, seeds=1, ks=(1, 10, "all"), backtest_per_month=60, new_category_ks=(1, 5),
                new_category_eval=40, general_eval=150, network_eval=150, network_history=400,
                latency_items=5, throughput_items=50)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    messages: list[str] = []
    # The demo's own caps, smaller: one tfidf on at most 1,500 records, retrained only on drift.
    tfidf = EngineSpec("tfidf", max_train=800, policies=("never", "drift"))
    results, report = run_demo(out, records=6000, engines=[tfidf], settings=SMALL, say=messages.append)
    return out, results, report, messages


def test_demo_writes_data_report_and_store(demo_run):
    out, results, report, messages = demo_run
    assert report == out / "report.html" and report.is_file()
    for name in ("denials.parquet", "taxonomy.yaml", "network_b.parquet", "crosswalk_network_b.yaml"):
        assert (out / "data" / name).is_file(), name
    assert (out / "compare.db").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["demo"]["records"] == 6000 and saved["demo"]["total_seconds"] > 0
    assert any("generating 6,000 denial records" in m for m in messages)


def test_demo_shows_drift_new_category_and_network(demo_run):
    _, results, _, _ = demo_run
    bt = results["backtest"]["engines"]["tfidf"]
    assert bt["policies"]["never"]["mean_accuracy"] < bt["reference_accuracy"]
    nc = results["events"]["new_category"]
    assert nc["category"] == "G7" and nc["first_month"] == 19
    assert nc["engines"]["tfidf"]["points"][0]["recall_new"] == 0.0  # unknown to a model trained before the split
    nw = results["events"]["network"]
    assert nw["engines"]["tfidf"]["as_is"] > 0.3
    assert any(p["cheaper_above"] for p in results["cost_speed"]["break_even"])
    assert "Demo wall time" in " ".join(results["notes"])


def test_demo_engines_leave_out_unknown_ones_with_a_note():
    said: list[str] = []
    specs = demo_engines(["tfidf", "nosuch"], say=said.append)
    assert [s.name for s in specs] == ["tfidf"]
    assert any("nosuch" in m for m in said)


def test_demo_help_is_the_reference(capsys):
    try:
        main(["demo", "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "--records" in out and "10 minutes" in out


def test_generated_records_say_whether_their_text_determines_the_category():
    from taxonomist.demo_data import generate_records
    from taxonomist.demo_data._generator import accuracy_ceiling

    r = generate_records(records=3000, seed=5)
    td = r["text_determines"]
    assert {type(x) for x in td} == {bool}
    assert all(not d for d, noisy in zip(td, r["label_is_noise"]) if noisy)  # a wrong label is never determined
    generic = [d for d, c, rarc, noisy in zip(td, r["carc"], r["rarcs"], r["label_is_noise"])
               if c in ("16", "A1", "96") and not rarc and not noisy]
    assert generic and 0 < sum(generic) < len(generic)  # generic codes: determined only by a specific remark
    share = sum(td) / len(td)
    ceiling = accuracy_ceiling(td, r["label"], list(zip(r["group_code"], r["carc"], r["rarcs"], r["payer"])))
    assert 0.5 < share < ceiling < 1.0


def test_demo_report_shows_each_engine_against_the_accuracy_ceiling(demo_run):
    out, results, _, _ = demo_run
    c = results["ceiling"]["engines"]["tfidf"]
    assert c["distance"] == c["ceiling"] - c["accuracy"]
    assert c["accuracy_determined"]["value"] > c["accuracy_other"]["value"]  # the ambiguous records are where it fails
    assert "Accuracy ceiling: about" in (out / "data" / "DATACARD.md").read_text()
    assert "distance to the accuracy ceiling" in (out / "report.md").read_text()
