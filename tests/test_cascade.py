"""The cascade engine: routing, shortlist, accounting, deferral, thresholds that keep their promise, save/load,
taxonomy mapping and learning from reviewed answers.

The contract suite (tests/test_engine_contract.py) runs the cascade like every engine; here, the behaviour
that is the cascade's own. The LLM stage runs against a fake OpenAI-compatible server on 127.0.0.1
(tests/llm_servers.py), so routing and accounting are checked whatever model would be behind it.
"""

from __future__ import annotations

import numpy as np
import pytest

from taxonomist.engines import create_engine, load_engine
from taxonomist.engines.calibration import ANSWER_NOTHING, wilson_lower
from taxonomist.engines.cascade import REVIEW, search_thresholds
from taxonomist.errors import EngineError
from taxonomist.prediction import Reason
from taxonomist.taxonomy import ABSTAIN, Taxonomy

from ._data import read_csv

TRAIN = read_csv("banking77_small_train.csv")
TEST = read_csv("banking77_small_test.csv")


def _answered_accuracy(preds, truth):
    pairs = [(p.category, y) for p, y in zip(preds, truth) if p.category != ABSTAIN]
    return len(pairs) / len(truth), (np.mean([a == b for a, b in pairs]) if pairs else None)


# ----- the search, on synthetic calibrated stages ---------------------------------------------------
def _stage(rng, n, quality):
    """Confidences with P(correct | conf) = conf: a calibrated stage; `quality` shifts mass to high confidence."""
    conf = rng.beta(quality, 1.0, n)
    return conf, rng.random(n) < conf


def test_search_meets_the_target_on_fresh_records_and_prefers_the_cheap_stage():
    rng = np.random.default_rng(0)
    fit = [_stage(rng, 4000, 3.0), _stage(rng, 4000, 8.0)]
    plan = search_thresholds([c for c, _ in fit], [k for _, k in fit], [1.0, 10.0], target_accuracy=0.9, z=1.645)
    assert plan.feasible and plan.accuracy_lower >= 0.9
    assert plan.stage_shares[0] > 0.1  # the cheap stage answers what it is sure of
    assert plan.cost_per_record == pytest.approx(1.0 + 10.0 * plan.reach[1])
    # The same thresholds on records the search never saw keep the promise.
    new = [_stage(rng, 20000, 3.0), _stage(rng, 20000, 8.0)]
    t0, t1 = plan.thresholds
    first = new[0][0] >= t0
    second = ~first & (new[1][0] >= t1)
    hits = new[0][1][first].sum() + new[1][1][second].sum()
    assert hits / (first.sum() + second.sum()) >= 0.9
    assert abs((first.sum() + second.sum()) / 20000 - plan.coverage) < 0.03


def test_search_takes_the_cheaper_route_at_equal_coverage():
    rng = np.random.default_rng(1)
    conf, ok = _stage(rng, 3000, 6.0)
    # Two identical stages: whatever the second answers the first could have answered for 5 times less.
    plan = search_thresholds([conf, conf], [ok, ok], [1.0, 5.0], target_accuracy=0.9, z=1.645)
    assert plan.stage_shares[0] >= plan.coverage - 0.006 and plan.stage_shares[1] <= 0.006
    assert plan.cost_per_record == pytest.approx(1.0 + 5.0 * (1 - plan.stage_shares[0]))


def test_impossible_target_sends_everything_to_review():
    rng = np.random.default_rng(2)
    conf, _ = _stage(rng, 500, 2.0)
    plan = search_thresholds([conf], [np.zeros(500, bool)], [1.0], target_accuracy=0.9)
    assert not plan.feasible and plan.coverage == 0 and plan.thresholds == [ANSWER_NOTHING] and plan.note


def test_max_drop_bounds_the_paired_loss_against_the_last_stage_and_a_point_estimate_answers_more():
    rng = np.random.default_rng(3)
    n = 4000
    strong_conf, strong_ok = _stage(rng, n, 9.0)
    cheap_conf, cheap_ok = _stage(rng, n, 4.0)
    costs = [1.0, 20.0]
    plans = {level: search_thresholds([cheap_conf, strong_conf], [cheap_ok, strong_ok], costs, target_accuracy=0.0,
                                      z=z, defer=False, max_drop=0.005)
             for level, z in (("point", 0.0), ("bound", 1.645))}
    for plan in plans.values():
        t = plan.thresholds[0]
        right = np.where(cheap_conf >= t, cheap_ok, strong_ok)
        d = strong_ok.astype(float) - right
        assert plan.drop == pytest.approx(d.mean())
        assert plan.drop_upper <= 0.005 + 1e-12 and plan.coverage == 1.0
    # The bound is stricter than the point estimate: the cheap stage answers less and the loss is smaller ...
    assert plans["bound"].stage_shares[0] < plans["point"].stage_shares[0]
    assert plans["bound"].drop < plans["point"].drop
    # ... and on fresh records from the same stages it stays within the tolerance.
    fresh_strong, fresh_cheap = _stage(rng, 50000, 9.0), _stage(rng, 50000, 4.0)
    right = np.where(fresh_cheap[0] >= plans["bound"].thresholds[0], fresh_cheap[1], fresh_strong[1])
    assert fresh_strong[1].mean() - right.mean() <= 0.005
    # Lower thresholds would break the bound: the chosen one is the lowest of the grid that keeps it (the cheapest).
    lower = np.quantile(cheap_conf, max(0.0, float((cheap_conf < plans["bound"].thresholds[0]).mean()) - 0.06))
    right = np.where(cheap_conf >= lower, cheap_ok, strong_ok)
    d = strong_ok.astype(float) - right
    assert d.mean() + 1.645 * d.std(ddof=1) / np.sqrt(n) > 0.005


# ----- real engines ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfidf_head():
    return create_engine("cascade", stages=["tfidf", "head"], target_accuracy=0.85, folds=3).fit(*TRAIN)


def test_thresholds_meet_the_target_on_held_out_records(tfidf_head):
    plan = tfidf_head.plan_
    assert plan.feasible and plan.accuracy_lower >= 0.85
    preds = tfidf_head.predict_batch(TEST[0])
    coverage, accuracy = _answered_accuracy(preds, TEST[1])
    assert coverage >= 0.5 and accuracy >= 0.85
    routes = {p.route for p in preds}
    assert routes <= {"tfidf", "head", REVIEW} and "tfidf" in routes
    for p in preds:
        assert (p.route == REVIEW) == (p.category == ABSTAIN)
        if p.route == REVIEW:
            assert p.reason == Reason.DEFERRED and p.extra["stages_tried"] == 2
        # every record pays for the stages it went through, cheap first
        expected = sum(tfidf_head.stage_costs_[: p.extra["stages_tried"]])
        assert p.cost_usd == pytest.approx(expected)
    summary = tfidf_head.summary()
    assert set(summary["stage_shares"]) == {"tfidf", "head"} and 0 <= summary["to_people"] <= 1


def test_a_higher_target_answers_less(tfidf_head):
    low, high = tfidf_head.plan_at(0.8), tfidf_head.plan_at(0.95)
    assert high.coverage <= low.coverage
    assert low.answered_accuracy >= 0.8


def test_save_load_gives_identical_decisions(tfidf_head, tmp_path):
    tfidf_head.save(tmp_path / "m")
    assert (tmp_path / "m" / "stages" / "00-tfidf" / "manifest.json").is_file()
    loaded = load_engine(tmp_path / "m")
    a, b = tfidf_head.predict_batch(TEST[0]), loaded.predict_batch(TEST[0])
    assert [(p.category, p.route, p.reason) for p in a] == [(p.category, p.route, p.reason) for p in b]
    np.testing.assert_allclose([p.confidence for p in a], [p.confidence for p in b], atol=1e-6)
    assert loaded.thresholds_ == tfidf_head.thresholds_ and loaded.model_id == tfidf_head.model_id
    # The thresholds are part of the model: editing them is refused on load.
    path = tmp_path / "m" / "cascade.json"
    path.write_text(path.read_text().replace('"threshold": ', '"threshold": 0.0000', 1))
    with pytest.raises(EngineError, match="changed after the model was saved"):
        load_engine(tmp_path / "m")


def test_thresholds_by_hand_route_everything_to_the_last_stage(tfidf_head):
    tfidf_head.set_params(thresholds=[ANSWER_NOTHING, 0.0])
    try:
        preds = tfidf_head.predict_batch(TEST[0][:10])
        assert {p.route for p in preds} == {"head"}
    finally:
        tfidf_head.set_params(thresholds=None)


def test_taxonomy_mapping_works_through_the_cascade(tfidf_head):
    preds = tfidf_head.predict_batch(TEST[0])
    answered = [p.category for p in preds if p.category != ABSTAIN]
    a, b = sorted(set(answered))[:2]
    merged = Taxonomy.from_labels(TRAIN[1]).merge([a, b], a, author="t").taxonomy  # b retired into a
    mapped = tfidf_head.predict_batch(TEST[0], taxonomy=merged)
    assert any(p.category == b for p in preds)
    for before, after in zip(preds, mapped):
        assert after.route == before.route and after.taxonomy_version == merged.version_id
        if before.category == b:
            assert after.category == a and after.reason == Reason.MAPPED and after.extra["mapped_from"] == b
        elif before.category == ABSTAIN:
            assert after.category == ABSTAIN
        else:
            assert after.category == before.category


def test_reviewed_answers_lower_the_share_deferred():
    texts, labels = TRAIN
    # A small start (5 examples per category), reviewers then answer 150 more records.
    seen: dict[str, int] = {}
    start, reviewed = [], []
    for i, y in enumerate(labels):
        seen[y] = seen.get(y, 0) + 1
        (start if seen[y] <= 5 else reviewed).append(i)
    reviewed = reviewed[:150]
    cascade = create_engine("cascade", stages=["tfidf", "knn"], target_accuracy=0.8, folds=2).fit(
        [texts[i] for i in start], [labels[i] for i in start])

    def deferred() -> float:
        return float(np.mean([p.route == REVIEW for p in cascade.predict_batch(TEST[0], evidence=False)]))

    before = deferred()
    assert cascade.add_examples([texts[i] for i in reviewed], [labels[i] for i in reviewed]) == ["knn"]
    after_examples = deferred()
    assert cascade.distill([texts[i] for i in start], [labels[i] for i in start]) == ["tfidf"]
    after_distill = deferred()
    assert cascade.stages_[0].n_train_ == len(start) + len(reviewed)
    assert after_examples < before and after_distill <= after_examples, (before, after_examples, after_distill)


def test_invalid_stages_are_clear_errors():
    with pytest.raises(EngineError, match="unknown engine 'nope'"):
        create_engine("cascade", stages=["tfidf", "nope"]).fit(*TRAIN)
    with pytest.raises(EngineError, match="itself a cascade"):
        create_engine("cascade", stages=["tfidf", "cascade"]).fit(*TRAIN)
    with pytest.raises(EngineError, match="expected 2 numbers"):
        create_engine("cascade", stages=["tfidf", "tfidf"], thresholds=[0.5]).fit(*TRAIN)


# ----- an LLM as the last stage, behind a fake OpenAI-compatible server ------------------------------------
@pytest.fixture(scope="module")
def faults():
    pytest.importorskip("openai")
    from .llm_servers import FaultServer

    srv = FaultServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def with_llm(faults):
    llm = {"backend": "openai", "base_url": faults.base_url, "model": "fault-model", "structured": "none",
           "cache": False, "max_retries": 0, "timeout_s": 5.0, "n_examples": 2, "shortlist": 3, "max_prompt_tokens": 800}
    faults.script(("content", "NONE"),)
    return create_engine("cascade", stages=["tfidf", ["llm", llm]], target_accuracy=0.8, folds=2, shortlist_k=3,
                         expensive_sample=12).fit(*TRAIN)


def test_llm_stage_is_asked_only_when_the_cheap_stage_is_unsure_with_its_shortlist(with_llm, faults):
    records = TEST[0][:12]
    tfidf = with_llm.stages_[0]
    order = np.argsort(-tfidf.predict_proba(records), axis=1, kind="stable")[:, :3]
    shortlists = [[str(tfidf.classes_[j]) for j in row] for row in order]
    # Route by hand: tfidf answers only what it is very sure of; the llm answers the first code it is offered.
    with_llm.set_params(thresholds=[0.5, 0.0])
    try:
        faults.script(("content", "card_arrival"),)  # whatever it is asked: one fixed reply
        preds = with_llm.predict_batch(records)
    finally:
        with_llm.set_params(thresholds=None)
    to_llm = [i for i, p in enumerate(preds) if p.extra["stages_tried"] == 2]
    assert to_llm and all(preds[i].route == "tfidf" and preds[i].cost_usd == pytest.approx(with_llm.stage_costs_[0])
                          for i in range(len(records)) if i not in to_llm)
    # One call per record sent on, a second (the repair) where the fixed reply was not on its shortlist.
    assert len(faults.requests) == sum(1 if "card_arrival" in shortlists[i] else 2 for i in to_llm)
    for i in to_llm:
        p = preds[i]
        asked = [b for b in faults.requests if records[i] in " ".join(m["content"] for m in b["messages"])]
        first = min(asked, key=lambda b: len(b["messages"]))
        prompt = " ".join(m["content"] for m in first["messages"])
        assert p.extra["shortlist"] == shortlists[i] and all(code in prompt for code in shortlists[i])
        if "card_arrival" in shortlists[i]:
            assert p.route == "llm" and p.category == "card_arrival"
        else:  # not one of the allowed codes, even after the repair: the record goes to people
            assert p.route == REVIEW and p.category == ABSTAIN and p.reason == Reason.DEFERRED
        # tokens at the price table's API prices (the fake server reports 10 prompt + 3 completion tokens a call)
        calls = len(asked)
        assert p.extra["prompt_tokens"] == 10 * calls
        assert p.cost_usd == pytest.approx(with_llm.stage_costs_[0] + calls * (10 * 0.15 + 3 * 0.60) / 1e6)


def test_llm_stage_without_an_answer_defers(with_llm, faults):
    with_llm.set_params(thresholds=[ANSWER_NOTHING, 0.0])
    try:
        faults.script(("content", "crypto_scam"),)  # never a valid code
        preds = with_llm.predict_batch(TEST[0][:3])
    finally:
        with_llm.set_params(thresholds=None)
    assert all(p.category == ABSTAIN and p.reason == Reason.DEFERRED and p.route == REVIEW for p in preds)
    assert all(p.extra["invalid_output"] for p in preds)


def test_wilson_bound_used_by_the_plan(tfidf_head):
    plan = tfidf_head.plan_
    answered = round(plan.coverage * plan.n)
    hits = round(plan.answered_accuracy * answered)
    assert plan.accuracy_lower == pytest.approx(float(wilson_lower(hits, answered, 1.6448536269514722)), abs=1e-6)


def test_cli_train_cascade_prints_thresholds_shares_people_accuracy_and_cost(tmp_path, capsys):
    import json

    from taxonomist.cli import main

    from .test_engine_contract import DATA

    out = tmp_path / "m"
    try:
        main(["train", "cascade", "--stages", "tfidf,tfidf", "--param", "folds=3", "--target-accuracy", "0.8",
              "--data", str(DATA / "banking77_small_train.csv"), "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["target_accuracy"] == 0.8 and len(printed["thresholds"]) == 2
    assert set(printed["stage_shares"]) == {"tfidf#1", "tfidf#2"} and "to_people" in printed
    assert printed["answered_accuracy"] >= 0.8 and printed["cost_per_1000"] > 0
    assert "held_out" in printed and printed["records"] == len(TRAIN[0])  # cross-fitted: nothing held back
    assert "left to people" in captured.err and "per 1,000 records" in captured.err
    assert load_engine(out).plan_.target_accuracy == 0.8


def test_compare_evaluates_the_cascade_at_each_target_against_its_stages_alone(tmp_path):
    from taxonomist.compare import EngineSpec, Settings, load_dataset, run_compare

    from .test_engine_contract import DATA

    (tmp_path / "b77.csv").write_text((DATA / "banking77_small_train.csv").read_text())
    data = load_dataset(tmp_path / "b77.csv")
    spec = EngineSpec("cascade", params={"stages": ["tfidf", "knn"], "folds": 3}, ks=("all",))
    results = run_compare(data, None, [EngineSpec("tfidf"), spec], out_dir=tmp_path / "out",
                          settings=Settings(seeds=1, ks=(5, "all"), latency_items=5, throughput_items=20))
    [casc] = results["cascade"]
    assert casc["stages"] == ["tfidf", "knn"] and [t["target"] for t in casc["targets"]] == [0.90, 0.93, 0.95, 0.97, 0.99]
    for t in casc["targets"]:
        assert sum(t["stage_shares"].values()) + t["to_people"] == pytest.approx(1.0)
        assert set(t["singles"]) == {"tfidf", "knn"}
        # the cascade answers at least as much as its cheap stage alone at the same promise
        assert 1 - t["to_people"] >= t["singles"]["tfidf"]["coverage"] - 0.05
        assert t["cost_per_1000"] >= t["singles"]["tfidf"]["cost_per_1000"] - 1e-12
    shares = [1 - t["to_people"] for t in casc["targets"]]
    assert shares[0] >= shares[-1]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Cheap first, expensive when unsure" in html and "knn alone" in html
