"""The report's headline numbers recomputed from results.json and the stored predictions, independently."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from taxonomist.compare import EngineSpec, load_dataset, run_compare
from taxonomist.compare.harness import open_store
from taxonomist.store import Store

from .test_compare import TINY, write_dated


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    data = load_dataset(write_dated(d / "records.csv", n=1200, seed=3))
    store = open_store(d / "out" / "compare.db")
    try:
        run_compare(data, None, [EngineSpec("tfidf")], out_dir=d / "out", settings=TINY, store=store)
    finally:
        store.close()
    return d / "out"


def _accuracy(truth: dict[str, str], rows: list[dict]) -> float:
    return float(np.mean([truth[r["record_id"]] == r["category"] for r in rows]))


def _macro_f1(truth: dict[str, str], rows: list[dict]) -> float:
    y = [truth[r["record_id"]] for r in rows]
    p = [r["category"] for r in rows]
    scores = []
    for c in sorted(set(y)):  # taxonomist.metrics: classes present in the truth
        tp = sum(a == c and b == c for a, b in zip(y, p))
        fp = sum(a != c and b == c for a, b in zip(y, p))
        fn = sum(a == c and b != c for a, b in zip(y, p))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_headline_numbers_recompute_from_results_json_and_store(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    headline = results["headline"]
    assert len(headline) >= 5
    with Store.open(report_dir / "compare.db") as store:
        truth = store.current_labels()
        checked = 0
        for item in headline:
            if "runs" in item:
                values = []
                for run_id in item["runs"]:
                    rows = store.predictions(run_id=run_id)
                    assert rows, f"no stored predictions for run {run_id}"
                    values.append(_accuracy(truth, rows) if item["metric"] == "accuracy" else _macro_f1(truth, rows))
                assert np.mean(values) == pytest.approx(item["value"], abs=1e-9), item["key"]
                checked += 1
            elif item["format"] == "volume":
                models = {m["approach"]: m for m in results["cost_speed"]["cost_models"]}
                a, b = (models[n] for n in item["cost_models"])
                volume = (a["fixed_per_month"] - b["fixed_per_month"]) / (b["per_item"] - a["per_item"])
                assert volume == pytest.approx(item["value"], rel=1e-9), item["key"]
                checked += 1
    assert checked == len(headline)
    keys = {h["key"].split("/")[0] for h in headline}
    assert {"accuracy_all", "in_period", "frozen_later", "new_category", "break_even"} <= keys


def test_answers_quote_the_headline_numbers(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    by_key = {h["key"]: h for h in results["headline"]}
    answers = results["answers"]
    assert f"{100 * by_key['in_period/tfidf']['value']:.1f}%" in answers["six_months"]
    assert f"{100 * by_key['frozen_later/tfidf']['value']:.1f}%" in answers["six_months"]
    assert f"{100 * by_key['accuracy_all/tfidf']['value']:.1f}%" in answers["examples"]
    assert f"{100 * by_key['new_category/tfidf']['value']:.1f}%" in answers["change"]
    assert "Retrain tfidf" in answers["recommendation"]


def test_html_is_self_contained_with_the_figures(report_dir):
    html = (report_dir / "report.html").read_text()
    assert html.count("<svg") >= 6  # 2 learning curves, by month, new category x2, cost, reliability
    for title in ("Learning curves", "Accuracy by month", "Adaptation", "Cost and speed", "Calibration", "Top confusions"):
        assert title in html
    # Nothing fetched from elsewhere: no scripts, stylesheets or images by URL.
    assert not re.search(r"<(script|link|img)\b", html)
    assert not re.search(r"(src|href)=['\"]https?:", html)
    md = (report_dir / "report.md").read_text()
    assert "## Will it still be accurate in six months?" in md and "| engine |" in md


def test_report_holds_no_record_text(report_dir):
    # Record text is PHI: the report shows codes and numbers, never the records.
    html = (report_dir / "report.html").read_text() + (report_dir / "results.json").read_text()
    assert "audio only fq" not in html and "w1x1 " not in html
