"""The prompt builder (static prefix first, budget counted with SmolLM2's tokenizer) and the `prompt`/`llm` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# llama.cpp's OpenMP threads must not busy-wait on shared cores; read when llama_cpp loads (importorskip below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest.importorskip("llama_cpp")

from taxonomist.llm.backends import LlamaCppBackend  # noqa: E402
from taxonomist.llm.prompt import PROMPT_VERSION, TEMPLATE_HASH, PromptBuilder, prompt_id  # noqa: E402
from taxonomist.prediction import Evidence  # noqa: E402
from taxonomist.records import Record  # noqa: E402
from taxonomist.taxonomy import ABSTAIN, Category, Group, Taxonomy  # noqa: E402

# 77 codes shaped like BANKING77's (snake_case intents, 2-6 words).
WORDS = ["card", "transfer", "top_up", "refund", "pending", "declined", "fee", "charged", "exchange", "rate",
         "cash", "withdrawal", "verify", "identity", "account", "balance", "virtual", "physical", "pin", "blocked"]


def big_taxonomy(n: int = 77, definitions: bool = True) -> Taxonomy:
    cats = []
    for i in range(n):
        code = ("_".join(WORDS[(i * k + 3) % len(WORDS)] for k in range(1, 2 + i % 3)))[:24] + f"_{i}"
        cats.append(Category(
            code=code, name=code.replace("_", " "), group="ALL",
            definition=(f"The customer asks about {code.replace('_', ' ')}: what happened, why, and what to do next. "
                        "Use it when the message is mainly about this issue.") if definitions else "",
        ))
    return Taxonomy(name="bank77", groups=[Group(code="ALL", name="All")], categories=cats)


def examples(tax: Taxonomy, n: int) -> list[Evidence]:
    return [Evidence(kind="example", category=c, score=1 - i / 100, ref=f"r{i}",
                     text=f"I have a question about {c.replace('_', ' ')} on my account, it happened yesterday again")
            for i, c in enumerate(list(tax.codes)[:n])]


@pytest.fixture(scope="module")
def counter():
    backend = LlamaCppBackend(n_ctx=4096, n_threads=2)
    yield backend.count_chat_tokens  # the model's own tokenizer and chat template
    backend.close()


def test_77_categories_with_shortlist_fit_in_1500_tokens(counter):
    tax = big_taxonomy()
    builder = PromptBuilder(tax, count=counter, max_prompt_tokens=1500)
    assert builder.catalogue == "compact"  # full definitions of 77 categories do not fit, the code list does
    short = list(tax.codes)[5:15]
    prompt = builder.build("My card payment was declined twice " * 3, examples=examples(tax, 8), shortlist=short)
    assert prompt.tokens_exact and prompt.tokens <= 1500
    assert prompt.choices == tuple(short) + (ABSTAIN,)
    system = prompt.messages[0]["content"]
    assert system.startswith(builder.static_prefix)
    assert all(c in system[len(builder.static_prefix):] for c in short)  # shortlisted definitions after the prefix
    assert counter(prompt.messages)[0] == prompt.tokens


def test_static_prefix_is_identical_for_every_record(counter):
    tax = big_taxonomy()
    builder = PromptBuilder(tax, count=counter, max_prompt_tokens=1500)
    a = builder.build("first record", examples=examples(tax, 3), shortlist=list(tax.codes)[:5])
    b = builder.build("another one", examples=examples(tax, 2), shortlist=list(tax.codes)[40:45])
    assert a.messages[0]["content"][: len(a.static_prefix)] == b.messages[0]["content"][: len(b.static_prefix)]
    assert all(c in a.static_prefix for c in tax.codes)  # every code is in the cached prefix


def test_small_taxonomy_puts_full_definitions_in_the_prefix(counter):
    tax = big_taxonomy(6)
    builder = PromptBuilder(tax, count=counter, max_prompt_tokens=1500)
    assert builder.catalogue == "full"
    prompt = builder.build("text", shortlist=())
    assert prompt.choices == tuple(tax.codes) + (ABSTAIN,)
    assert "what happened, why" in prompt.static_prefix


def test_budget_drops_least_similar_examples_first_then_truncates(counter):
    tax = big_taxonomy(6)
    ex = examples(tax, 6)
    roomy = PromptBuilder(tax, count=counter, max_prompt_tokens=1500).build("short record", examples=ex)
    assert len(roomy.examples) == 6
    budget = roomy.tokens - 40  # two or so examples too many
    builder = PromptBuilder(tax, count=counter, max_prompt_tokens=budget, prefix_share=0.9)
    prompt = builder.build("short record", examples=ex)
    assert prompt.tokens <= budget and 0 < len(prompt.examples) < 6
    assert list(prompt.examples) == ex[: len(prompt.examples)]  # the most similar are kept
    long = builder.build("a very long record text " * 200, examples=ex)
    assert long.tokens <= budget and long.record_truncated and not long.examples


def test_prompt_is_versioned():
    assert prompt_id() == f"p{PROMPT_VERSION}-{TEMPLATE_HASH}" and len(TEMPLATE_HASH) == 10


# ----- the commands ----------------------------------------------------------------------
def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taxonomist", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.slow
def test_prompt_show_for_a_stored_record(tmp_path):
    from taxonomist.store import Store

    db = tmp_path / "t.db"
    rows = [("a1", "My card has not arrived", "card_arrival"), ("a2", "Where is my new card?", "card_arrival"),
            ("b1", "I lost my card", "card_lost"), ("b2", "My card was stolen", "card_lost"),
            ("c1", "What is the euro exchange rate?", "exchange_rate"), ("q1", "The card I ordered is late", None)]
    with Store.open(db) as store:
        store.add_records([Record(id=i, text=t, label=y) for i, t, y in rows], who="test")
    out = run("prompt", "show", "--record", "q1", "--db", str(db), "--examples", "2", "--shortlist", "2", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["prompt_id"] == prompt_id() and data["tokens_exact"] is True
    assert data["messages"][-1]["content"].endswith("The card I ordered is late")
    assert data["choices"][-1] == ABSTAIN and len(data["choices"]) == 3
    assert data["examples"] and data["examples"][0]["ref"]
    missing = run("prompt", "show", "--record", "nope", "--db", str(db))
    assert missing.returncode == 1 and "record 'nope' is not in the store" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_prompt_show_needs_one_record_source():
    out = run("prompt", "show")
    assert out.returncode == 1 and "exactly one of --record" in out.stderr


@pytest.mark.slow
def test_llm_ping_local_model():
    out = run("llm", "ping")
    assert out.returncode == 0, out.stderr
    assert "answered" in out.stdout and "tokenizer exact" in out.stdout


def test_llm_package_imports_no_backend_library_and_pins_its_names():
    code = ("import sys, taxonomist.llm as m, taxonomist.engines.llm; "
            "print(sorted(m.__all__) == sorted(n for n in dir(m) if n in m.__all__), "
            "'llama_cpp' in sys.modules, 'openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"category": "card_lost"}', "card_lost"),
        ("card_lost", "card_lost"),
        ('"Card_Lost".', "card_lost"),
        ("card_lost because the customer says so", "card_lost"),
        ("NONE", ABSTAIN),
        ('{"category": "card_los', None),  # truncated JSON
        ("crypto_scam", None),  # an invented label is never accepted
        ("", None),
    ],
)
def test_reply_parsing_accepts_only_allowed_codes(reply, expected):
    from taxonomist.engines.llm import _parse

    assert _parse(reply, ("card_arrival", "card_lost", ABSTAIN)) == expected
