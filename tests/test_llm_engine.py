"""The `llm` engine end to end, the SAME tests against the in-process SmolLM2 and the same model behind
llama-cpp-python's real OpenAI-compatible HTTP server on 127.0.0.1; faults via a fault-injecting server.

Small on purpose: a 6-category taxonomy, a handful of records, short prompts, one model load per module.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# llama.cpp's OpenMP threads must not busy-wait on shared cores; read when llama_cpp loads (importorskip below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

from taxonomist.engines import create_engine, load_engine  # noqa: E402
from taxonomist.errors import BudgetExceededError, MissingExtraError  # noqa: E402
from taxonomist.llm.backends import default_gguf_path  # noqa: E402
from taxonomist.llm.prompt import prompt_id  # noqa: E402
from taxonomist.taxonomy import ABSTAIN, load_taxonomy  # noqa: E402

from .llm_servers import FaultServer, LlamaServer  # noqa: E402

pytestmark = pytest.mark.slow

TAXONOMY = """\
name: Card support
description: Messages from bank customers about their cards.
groups:
  - code: CARD
    name: Cards
    categories:
      - code: card_arrival
        name: Card not arrived
        definition: The customer ordered a card and it has not been delivered yet.
      - code: card_lost
        name: Lost or stolen card
        definition: The card was lost or stolen.
      - code: pin_blocked
        name: PIN blocked
        definition: The PIN is blocked after wrong attempts.
  - code: MONEY
    name: Money
    categories:
      - code: exchange_rate
        name: Exchange rate
        definition: Questions about currency exchange rates.
      - code: refund_missing
        name: Refund missing
        definition: A merchant refund has not appeared in the account.
      - code: top_up_failed
        name: Top-up failed
        definition: Adding money to the account failed.
"""

EXAMPLES = [
    ("My new card still has not come in the post", "card_arrival"),
    ("When will the card I ordered arrive?", "card_arrival"),
    ("I lost my card on the train", "card_lost"),
    ("Someone stole my wallet with the card", "card_lost"),
    ("My PIN is blocked, I typed it wrong three times", "pin_blocked"),
    ("How do I unblock my PIN?", "pin_blocked"),
    ("What rate do you use to convert dollars to euros?", "exchange_rate"),
    ("Is the exchange rate different at weekends?", "exchange_rate"),
    ("The shop said they refunded me but I don't see the money", "refund_missing"),
    ("My refund from last week is still not in my account", "refund_missing"),
    ("I tried to top up but it failed", "top_up_failed"),
    ("Top-up with my card was declined", "top_up_failed"),
]

RECORDS = ["Where is my card? I ordered it two weeks ago", "Why is my refund not showing?", "I forgot my PIN and now it is blocked"]

FAST = {"n_examples": 2, "shortlist": 3, "max_prompt_tokens": 600}


@pytest.fixture(scope="module")
def taxonomy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "taxonomy.yaml"
    path.write_text(TAXONOMY)
    return path


@pytest.fixture(scope="module")
def server():
    srv = LlamaServer(str(default_gguf_path()), n_ctx=2048, n_threads=2)
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["inprocess", "server"])
def backend_params(request):
    if request.param == "inprocess":
        return {"backend": "llamacpp", "n_ctx": 2048, "n_threads": 2}
    srv = request.getfixturevalue("server")
    # llama.cpp servers take a GBNF grammar: the answer is one of the allowed codes.
    return {"backend": "openai", "base_url": srv.base_url, "model": "smollm2", "structured": "grammar"}


def make(params, taxonomy, **kw):
    try:
        return create_engine("llm", taxonomy=str(taxonomy), **{**FAST, **params, **kw})
    except MissingExtraError as exc:  # pragma: no cover
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def fitted(backend_params, taxonomy_file):
    texts, labels = zip(*EXAMPLES)
    return make(backend_params, taxonomy_file).fit(list(texts), list(labels))


def test_every_output_is_a_code_or_none(fitted):
    codes = set(load_taxonomy(fitted.taxonomy).codes)
    preds = fitted.predict(RECORDS)
    assert len(preds) == len(RECORDS)
    assert set(preds) <= codes | {ABSTAIN}
    proba = fitted.predict_proba(RECORDS)
    assert proba.shape == (len(RECORDS), len(fitted.classes_))
    assert abs(proba.sum(axis=1) - 1).max() < 1e-6


def test_prediction_carries_evidence_prompt_version_and_model(fitted):
    p = fitted.predict_one(RECORDS[0])
    assert p.category in set(fitted.classes_) | {ABSTAIN}
    examples = [e for e in p.evidence if e.kind == "example"]
    assert 1 <= len(examples) <= FAST["n_examples"] and all(e.ref and e.text for e in examples)
    prompt_ev = [e for e in p.evidence if e.kind == "prompt"]
    assert prompt_ev and prompt_ev[0].ref.startswith(prompt_id())
    assert p.extra["prompt_id"] == prompt_id() and p.extra["model"]
    assert p.extra["prompt_tokens"] > 50 or p.extra["from_cache"]
    assert p.extra["constrained"] is True
    assert p.model_id.startswith("llm-") and 0.0 <= p.confidence <= 1.0


def test_confidence_comes_from_log_probabilities(fitted):
    p = fitted.predict_one("My card has not arrived yet")
    assert p.extra["confidence_source"] in ("choice_logprobs", "token_logprobs")
    assert 0.0 < p.confidence <= 1.0
    if p.category != ABSTAIN:
        assert p.alternatives[0].category == p.category


def test_second_identical_call_is_a_cache_hit_and_costs_nothing(fitted):
    first = fitted.predict_one("Exchange rate for yen please")
    again = fitted.predict_one("Exchange rate for yen please")
    assert again.extra["from_cache"] is True and again.cost_usd == 0.0
    assert again.category == first.category
    assert fitted.ledger_.cache_hits >= 1


def test_new_category_in_the_taxonomy_is_used_on_the_next_call(backend_params, tmp_path):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(TAXONOMY)
    texts, labels = zip(*EXAMPLES)
    engine = make(backend_params, path).fit(list(texts), list(labels))
    record = "I sent bitcoin to my crypto wallet and it never arrived"
    assert engine.build_prompt(record).choices.count("crypto_transfer") == 0
    tax = load_taxonomy(path)
    change = tax.add(
        "crypto_transfer", "Crypto transfer", group="MONEY", author="test",
        definition="Sending or receiving bitcoin or other cryptocurrency to or from a crypto wallet.",
        examples=["My bitcoin transfer to my crypto wallet is missing", "Crypto sent to my wallet never arrived",
                  "Where is the bitcoin I sent to my wallet?"],
    )
    change.taxonomy.save(path)  # edit the document: no fit, no training step
    prompt = engine.build_prompt(record)
    assert "crypto_transfer" in prompt.choices and "crypto_transfer" in prompt.static_prefix
    p = engine.predict_one(record)
    assert p.category == "crypto_transfer"
    assert "crypto_transfer" in set(engine.classes_)


def test_added_example_is_retrieved_on_the_next_call(fitted):
    record = "The ATM swallowed my card"
    before = {e.text for e in fitted.build_prompt(record).examples}
    fitted.add_examples(["An ATM machine swallowed my card and kept it"], ["card_lost"])
    after = {e.text for e in fitted.build_prompt(record).examples}
    assert "An ATM machine swallowed my card and kept it" in after - before


def test_prompt_stays_within_the_token_budget(backend_params, taxonomy_file):
    texts, labels = zip(*EXAMPLES)
    engine = make(backend_params, taxonomy_file, max_prompt_tokens=260, n_examples=6).fit(list(texts), list(labels))
    prompt = engine.build_prompt("A long message about my card " * 20)
    assert prompt.tokens <= 260
    assert prompt.dropped_examples > 0 or prompt.record_truncated


def test_budget_cap_stops_cleanly_keeping_predictions(backend_params, taxonomy_file, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  '*': {input: 50.0, output: 50.0, cpu_hour: 1000.0}\n")
    texts, labels = zip(*EXAMPLES)
    engine = make(backend_params, taxonomy_file, price_table=str(prices), budget_usd=1e-9, cache=False, max_concurrency=1)
    engine.fit(list(texts), list(labels))
    seen = []
    with pytest.raises(BudgetExceededError, match="budget") as info:
        engine.predict_many(RECORDS, on_prediction=lambda i, p: seen.append(i))
    assert len(info.value.predictions) == 1 and seen == [0]
    assert engine.ledger_.calls == 1 and engine.ledger_.cost_usd > 1e-9


def test_save_and_load_give_the_same_answers(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = load_engine(tmp_path / "m")
    assert list(loaded.classes_) == list(fitted.classes_)
    assert list(loaded.predict(RECORDS[:2])) == list(fitted.predict(RECORDS[:2]))
    manifest = (tmp_path / "m" / "manifest.json").read_text()
    assert prompt_id() in manifest


def test_local_prefix_cache_is_reused_across_records(backend_params, taxonomy_file):
    if backend_params["backend"] != "llamacpp":
        pytest.skip("llama-cpp-python's server does not report cached prompt tokens")
    texts, labels = zip(*EXAMPLES)
    engine = make(backend_params, taxonomy_file, cache=False).fit(list(texts), list(labels))
    later = [engine.predict_one(t) for t in RECORDS[:2]]
    assert all(p.extra["cached_tokens"] > 0 for p in later)
    assert all(p.extra["evaluated_tokens"] < p.extra["prompt_tokens"] for p in later)


# ----- faults at the engine level: repair once, else abstain; never an invented label -------------
@pytest.fixture(scope="module")
def faults():
    srv = FaultServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fault_engine(faults, taxonomy_file):
    texts, labels = zip(*EXAMPLES)
    engine = create_engine(
        "llm", backend="openai", base_url=faults.base_url, model="fault-model", structured="none",
        taxonomy=str(taxonomy_file), cache=False, max_retries=2, timeout_s=5.0, **FAST,
    )
    return engine.fit(list(texts), list(labels))


def test_malformed_reply_is_repaired_once(faults, fault_engine):
    faults.script(("content", '{"category": "card_arr'), ("content", "card_arrival"))
    p = fault_engine.predict_one(RECORDS[0])
    assert p.category == "card_arrival" and p.extra["repaired"] is True
    assert len(faults.requests) == 2
    assert "not one of the allowed codes" in faults.requests[1]["messages"][-1]["content"]


def test_unrepairable_reply_abstains_never_invents(faults, fault_engine):
    faults.script(("content", "crypto_scam"),)  # a label that is not in the taxonomy, twice
    p = fault_engine.predict_one(RECORDS[1])
    assert p.category == ABSTAIN and p.extra["invalid_output"] is True and p.confidence == 0.0
    assert list(fault_engine.predict([RECORDS[1]])) == [ABSTAIN]


def test_429_then_200_through_the_engine(faults, fault_engine):
    faults.script(("status", 429, {"Retry-After": "0"}), ("content", "exchange_rate"))
    p = fault_engine.predict_one("exchange rate for pounds?")
    assert p.category in {"exchange_rate", ABSTAIN}  # shortlisted: exchange_rate is allowed
    assert p.extra["retries"] == 1


def test_responses_cached_in_the_store_and_predictions_keep_their_evidence(faults, taxonomy_file, tmp_path):
    from taxonomist.store import Store

    db = str(tmp_path / "store.db")
    texts, labels = zip(*EXAMPLES)
    params = dict(backend="openai", base_url=faults.base_url, model="fault-model", structured="none",
                  taxonomy=str(taxonomy_file), store=db, max_retries=1, **FAST)
    first = create_engine("llm", **params).fit(list(texts), list(labels))
    faults.script(("content", "card_arrival"),)
    preds = first.predict_many(RECORDS[:1])
    assert len(faults.requests) == 1 and preds[0].category == "card_arrival"
    with Store.open(db) as store:
        store.add_predictions([("r1", preds[0])])
        row = store.predictions()[0]
    assert row["category"] == "card_arrival" and row["prompt_tokens"] == 10
    kinds = {e["kind"] for e in row["evidence"]}
    assert kinds == {"example", "prompt"}
    assert any(e["ref"].startswith(prompt_id()) for e in row["evidence"] if e["kind"] == "prompt")
    # Another engine on the same store: the identical prompt is answered from the store, no HTTP call.
    second = create_engine("llm", **params).fit(list(texts), list(labels))
    faults.script(("content", "exchange_rate"),)
    again = second.predict_one(RECORDS[0])
    assert again.category == "card_arrival" and again.extra["from_cache"] and not faults.requests


def test_calibrator_from_engines_calibration_applies_to_llm_confidences(fitted):
    from taxonomist.engines.calibration import calibrate

    held_out = [*RECORDS, "My new card never arrived"]
    gold = ["card_arrival", "refund_missing", "pin_blocked", "card_arrival"]
    raw = fitted.predict_one(held_out[0])
    try:
        cal = calibrate(fitted, held_out, gold)
        assert cal.temperature > 0 and cal.n == 4
        p = fitted.predict_one(held_out[0])
        proba = fitted.predict_proba([held_out[0]])[0]
        if p.category != ABSTAIN:
            assert p.confidence == pytest.approx(proba.max(), abs=1e-6)
            assert p.category == raw.category  # temperature scaling never changes the choice
    finally:
        fitted.calibrator_ = None


def test_without_logprobs_confidence_comes_from_self_consistency_votes(faults, taxonomy_file):
    texts, labels = zip(*EXAMPLES)
    engine = create_engine(
        "llm", backend="openai", base_url=faults.base_url, model="fault-model", structured="none",
        taxonomy=str(taxonomy_file), cache=False, votes=3, constrain="taxonomy", **FAST,
    ).fit(list(texts), list(labels))
    faults.script(("content", "card_arrival"), ("content", "card_lost"), ("content", "card_arrival"))
    p = engine.predict_one(RECORDS[0])
    assert p.extra["confidence_source"] == "votes" and len(faults.requests) == 3
    assert p.category == "card_arrival" and p.confidence == pytest.approx(2 / 3)
    assert [r["temperature"] for r in faults.requests] == [0.0, 0.7, 0.7]
    assert {a.category: a.score for a in p.alternatives}["card_lost"] == pytest.approx(1 / 3)
