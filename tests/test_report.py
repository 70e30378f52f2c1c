"""The report's headline numbers recomputed from results.json and the stored predictions, independently."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from taxonomist.compare import EngineSpec, load_dataset, run_compare
from taxonomist.compare.harness import open_store
from taxonomist.engines.calibration import choose_threshold
from taxonomist.store import Store

from .test_compare import TINY, write_dated


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    data = load_dataset(write_dated(d / "records.csv", n=1200, seed=3))
    store = open_store(d / "out" / "compare.db")
    try:
        run_compare(data, None, [EngineSpec("tfidf"), EngineSpec("knn", seeds=1, skip=("backtest",))], out_dir=d / "out", settings=TINY, store=store)
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


Z95 = 1.959963984540054


def _wilson(p: float, n: int) -> tuple[float, float]:
    """Two-sided 95% Wilson interval, written out here rather than imported, to check the report's."""
    centre = p + Z95 * Z95 / (2 * n)
    spread = Z95 * np.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n))
    return (centre - spread) / (1 + Z95 * Z95 / n), (centre + spread) / (1 + Z95 * Z95 / n)


def _per_record(store, truth, run_ids) -> dict[str, float]:
    """Record id -> correctness averaged over the runs (seeds), from the stored predictions."""
    hits: dict[str, list[float]] = {}
    for run_id in run_ids:
        for r in store.predictions(run_id=run_id):
            hits.setdefault(r["record_id"], []).append(float(truth[r["record_id"]] == r["category"]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def test_headline_numbers_recompute_from_results_json_and_store(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    headline = results["headline"]
    assert len(headline) >= 5
    with Store.open(report_dir / "compare.db") as store:
        truth = store.current_labels()
        checked = intervals = 0
        for item in headline:
            if "runs" in item:
                values, sizes = [], []
                for run_id in item["runs"]:
                    rows = store.predictions(run_id=run_id)
                    assert rows, f"no stored predictions for run {run_id}"
                    values.append(_accuracy(truth, rows) if item["metric"] == "accuracy" else _macro_f1(truth, rows))
                    sizes.append(len(rows))
                assert np.mean(values) == pytest.approx(item["value"], abs=1e-9), item["key"]
                if item["metric"] == "accuracy":
                    # Seeds score the same records; months pool distinct ones.
                    n = sum(sizes) if item.get("pooled") else sizes[0]
                    assert item["n"] == n, item["key"]
                    assert item["ci"] == pytest.approx(_wilson(item["value"], n), abs=1e-9), item["key"]
                    assert item["ci"][0] <= item["value"] <= item["ci"][1]
                    assert item["inconclusive"] == (n < 100)
                    intervals += 1
                checked += 1
            elif "runs_a" in item:  # a paired bootstrap difference over the same records
                a = _per_record(store, truth, item["runs_a"])
                b = _per_record(store, truth, item["runs_b"])
                ids = sorted(set(a) & set(b))
                d = np.array([a[i] - b[i] for i in ids])
                rng = np.random.default_rng(item["seed"])
                boot = d[rng.integers(0, len(d), size=(item["reps"], len(d)))].mean(axis=1)
                assert item["n"] == len(ids) and item["value"] == pytest.approx(d.mean(), abs=1e-12), item["key"]
                assert item["ci"] == pytest.approx(list(np.percentile(boot, [2.5, 97.5])), abs=1e-12), item["key"]
                checked += 1
                intervals += 1
            elif "decay_runs" in item:  # slope of monthly accuracy; records resampled within months
                correct = []
                for run_id in item["decay_runs"]:
                    rows = sorted(store.predictions(run_id=run_id), key=lambda r: r["record_id"])
                    correct.append(np.array([truth[r["record_id"]] == r["category"] for r in rows], dtype=float))
                run_meta = {r["run_id"]: r for r in results["runs"]}
                x = np.array([run_meta[r]["month"] for r in item["decay_runs"]], dtype=float)
                xc = x - x.mean()
                slope = xc @ np.array([c.mean() for c in correct]) / (xc @ xc)
                assert slope == pytest.approx(item["value"], abs=1e-12), item["key"]
                assert item["n"] == sum(len(c) for c in correct)
                assert item["ci"][0] <= item["value"] <= item["ci"][1]
                checked += 1
                intervals += 1
            elif "review_run" in item:  # each half routed by the threshold chosen on the other half; Wilson interval
                rows = store.predictions(run_id=item["review_run"])
                half = np.array([hashlib.blake2b(r["record_id"].encode(), digest_size=1).digest()[0] & 1 for r in rows])
                conf = np.array([r["confidence"] for r in rows])
                ok = np.array([truth[r["record_id"]] == r["category"] for r in rows])
                for h in (0, 1):  # each threshold is the lowest one whose answered records on its own half reach the target
                    assert item["thresholds"][h] == choose_threshold(conf[half == h], ok[half == h], min_accuracy=results["settings"]["review_target"])
                routed_by = [item["thresholds"][1 - h] for h in half]
                share = 1.0 - float(np.mean([t is not None and c >= t for t, c in zip(routed_by, conf)]))
                assert share == pytest.approx(item["value"], abs=1e-9)
                assert item["ci"] == pytest.approx(_wilson(share, len(rows)), abs=1e-9)
                checked += 1
                intervals += 1
            elif item["format"] == "volume":
                models = {m["approach"]: m for m in results["cost_speed"]["cost_models"]}
                a, b = (models[n] for n in item["cost_models"])
                volume = (a["fixed_per_month"] - b["fixed_per_month"]) / (b["per_item"] - a["per_item"])
                assert volume == pytest.approx(item["value"], rel=1e-9), item["key"]
                checked += 1
    assert checked == len(headline)
    assert intervals >= 8
    keys = {h["key"].split("/")[0] for h in headline}
    assert {"accuracy_all", "in_period", "frozen_later", "new_category", "break_even", "decay_never", "review_share", "diff"} <= keys


def test_every_paired_difference_recomputes_from_the_store(report_dir):
    # Engines at k=all, each policy vs never, and trained vs retrieval at every k of the learning curve (the crossover).
    results = json.loads((report_dir / "results.json").read_text())
    diffs = results["uncertainty"]["differences"]
    assert {d["kind"] for d in diffs} == {"engines", "policy", "crossover"}
    with Store.open(report_dir / "compare.db") as store:
        truth = store.current_labels()
        for item in diffs:
            a = _per_record(store, truth, item["runs_a"])
            b = _per_record(store, truth, item["runs_b"])
            ids = sorted(set(a) & set(b))
            d = np.array([a[i] - b[i] for i in ids])
            boot = d[np.random.default_rng(item["seed"]).integers(0, len(d), size=(item["reps"], len(d)))].mean(axis=1)
            assert item["n"] == len(ids) and item["diff"] == pytest.approx(d.mean(), abs=1e-12), item["key"]
            assert [item["lo"], item["hi"]] == pytest.approx(list(np.percentile(boot, [2.5, 97.5])), abs=1e-12), item["key"]
            assert item["inconclusive"] == (len(ids) < 100)


def test_first_screen_answers_the_three_questions_before_the_details(report_dir):
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    for text in (md, html):
        first, rec, details = (text.index(h) for h in ("The three questions", "Recommendation", "Details"))
        assert first < rec < details
    table = md[md.index("## The three questions"):md.index("## Recommendation")]
    for figure in ("accuracy change per month, never retrained", "retrained monthly", "crossover: tfidf vs knn",
                   "recall of new category C9", "time to adapt to a taxonomy edit", "monthly cost at 20,000 items",
                   "break-even vs hosted LLM", "priced, accuracy not measured", "share left to people"):
        assert figure in table, figure
    assert "| question | figure | tfidf | knn |" in table
    assert "<th scope='col'>question</th>" in html


def test_every_accuracy_in_the_report_carries_its_interval(report_dir):
    md = (report_dir / "report.md").read_text()
    results = json.loads((report_dir / "results.json").read_text())
    answers = "\n".join(results["answers"].values())
    # Every percentage in the answers' sentences is either followed by its interval or is a share stated plainly
    # (the k=0 "before" recall, macro-F1): count the intervals against the figures that need one.
    assert answers.count("95% CI") >= 8
    for h in results["headline"]:
        if h["format"] in ("pct", "pts", "slope") and h.get("metric") != "macro_f1":
            assert "ci" in h, h["key"]
    assert "95% CI" in md


def test_comparative_sentences_follow_the_interval():
    from taxonomist.compare.report import diff_sentence

    clear = {"diff": 0.031, "lo": 0.012, "hi": 0.050, "n": 300, "inconclusive": False}
    assert diff_sentence(clear, "A", "B") == "A is more accurate than B by 3.1 pts (95% CI 1.2 to 5.0, n = 300)"
    assert diff_sentence({**clear, "diff": -0.031, "lo": -0.050, "hi": -0.012}, "A", "B").startswith("B is more accurate than A by 3.1 pts")
    assert diff_sentence({**clear, "lo": -0.01}, "A", "B").startswith("no clear difference between A and B")
    assert "inconclusive" in diff_sentence({**clear, "n": 40, "inconclusive": True}, "A", "B")


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


def test_charts_have_titles_and_text_alternatives(report_dir):
    html = (report_dir / "report.html").read_text()
    charts = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(charts) >= 6
    for svg in charts:
        assert re.search(r"<title>[^<]+</title>", svg) and "role=\"img\"" in svg
        if "no data" not in svg:
            assert re.search(r"<desc>[^<]*\bat\b[^<]*</desc>", svg)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_the_three_questions_first(report_dir):
    # Debian's chromium through Playwright, launched as tests/test_web.py does; nothing is fetched from elsewhere.
    import os
    from pathlib import Path

    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from .test_web import ARGS, IMG

    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report_dir / "report.html").as_uri())
            headings = page.locator("h2").all_inner_texts()
            assert headings[:3] == ["The three questions", "Recommendation", "Details"]
            first = page.locator("table").first
            assert first.locator("thead th").all_inner_texts()[:2] == ["question", "figure"]
            assert first.is_visible() and first.bounding_box()["y"] < 900  # on the first screen
            assert page.locator("svg title").count() >= 6
            IMG.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(IMG) / "report_first_screen.png"))
        finally:
            browser.close()
    assert all(u.startswith("file://") for u in requests), requests


def test_per_category_recall_precision_and_confused_ids_recompute_from_the_store(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    with Store.open(report_dir / "compare.db") as store:
        truth = store.current_labels()
        for engine, body in results["confusions"].items():
            rows = store.predictions(run_id=body["run_id"])
            pairs = [(truth[r["record_id"]], r["category"], r["record_id"]) for r in rows]
            for c in body["per_category"]:
                n_true = sum(t == c["category"] for t, _, _ in pairs)
                n_pred = sum(p == c["category"] for _, p, _ in pairs)
                tp = sum(t == p == c["category"] for t, p, _ in pairs)
                assert (c["n"], c["predicted"]) == (n_true, n_pred), (engine, c["category"])
                if n_true:
                    assert c["recall"]["value"] == pytest.approx(tp / n_true)
                    assert [c["recall"]["lo"], c["recall"]["hi"]] == pytest.approx(_wilson(tp / n_true, n_true))
                if n_pred:
                    assert c["precision"]["value"] == pytest.approx(tp / n_pred)
            for p in body["pairs"]:
                wrong = sorted(i for t, q, i in pairs if (t, q) == (p["true"], p["predicted"]))
                assert p["count"] == len(wrong) and set(p["record_ids"]) <= set(wrong) and "texts" not in p
    md = (report_dir / "report.md").read_text()
    assert "## Per-category errors" in md and "record ids (first 5)" in md and "text (--show-text)" not in md
