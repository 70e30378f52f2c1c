"""The `llm` engine: a general LLM prompted with the taxonomy and retrieved examples (RAG).

`fit` trains nothing: it indexes the labelled examples in the `knn` retriever
(hybrid by default: MiniLM plus label-weighted n-grams, so codes such as
`CO-197` are matched exactly; see `taxonomist.retrieval`).
Each prediction retrieves class-balanced similar examples and a label
shortlist, builds a prompt (static taxonomy prefix first, see
`taxonomist.llm.prompt`), asks the backend for one code among the allowed
choices plus `NONE`, validates the answer (repairing once, else abstaining:
never an invented label), and records the evidence: examples, prompt id,
model id, tokens, cost.

Editing the taxonomy file or adding examples changes the next prediction with
no training step: the file is re-read when it changes, and `add_examples`
goes straight into the retriever.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BudgetExceededError, EngineError, TaxonomyError
from ..prediction import Evidence, Prediction, Reason
from ..taxonomy import ABSTAIN, Taxonomy, load_taxonomy
from .base import Engine, Manifest, create_engine, load_engine, register_engine

__all__ = ["LlmEngine", "LlmAnswer"]

#: Loaded models are expensive (a GGUF in memory, a client pool): engines with the same settings share one,
#: and with it one in-memory response cache (keyed by model, endpoint, prompt version and the whole prompt, so
#: sharing it is only reuse: a loaded copy of an engine answers exactly as the original did, where a local
#: model re-evaluating a prompt from its KV cache would differ in the last digits). Ledgers and budgets
#: belong to each engine (see `_stack`).
_SHARED_BACKENDS: dict[tuple, Any] = {}
_BACKEND_CACHES: dict[int, Any] = {}
_LOCK = threading.Lock()

REPAIR_TEMPLATE = "That is not one of the allowed codes. Reply with exactly one of: {codes}."


@dataclass
class LlmAnswer:
    """One record's outcome before it becomes a `Prediction`."""

    category: str
    confidence: float
    probs: dict[str, float]
    evidence: tuple[Evidence, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0
    latency_ms: float = 0.0


@register_engine
class LlmEngine(Engine):
    """Prompt + retrieval with a general LLM, in-process (llama.cpp) or any OpenAI-compatible endpoint.

    Parameters (keyword-only, stored unchanged):
      backend: "llamacpp" (in-process GGUF, SmolLM2-135M-Instruct by default) or "openai"
        (any OpenAI-compatible endpoint at `base_url`), or a `Backend` instance.
      model: .gguf path for llamacpp; model name for openai.
      base_url, api_key_env: endpoint and the environment variable holding its key.
      structured: how a remote backend constrains the answer ("auto", "json_schema", "json_object",
        "grammar" for llama.cpp servers, "none"); see `OpenAICompatibleBackend`.
      taxonomy: YAML path (re-read when it changes) or a `Taxonomy`; default: flat, from the labels.
      n_examples, per_class, mmr_lambda: retrieved few-shot examples, at most `per_class` per category.
      shortlist: number of candidate labels from retrieval (0: all codes are candidates).
      constrain: "shortlist" (answers limited to the shortlist + NONE) or "taxonomy" (any code + NONE).
      max_prompt_tokens: token budget of the prompt, counted with the model's tokenizer.
      allow_none: let the model abstain with NONE.
      threshold: abstain when the (calibrated) confidence is below it; None: the calibrator's
        threshold if `engines.calibration.calibrate` set one, else never.
      route_above: a cascade (Arora et al. 2024): when retrieval's top label has at least this
        probability, answer it without calling the LLM (None: always ask the LLM).
      price_table, budget_usd: cost accounting (see `taxonomist.llm.accounting`) and a spending cap.
      store: path/URL of the record store whose cache table holds responses (default: in memory).
      cache: reuse responses for identical prompts.
      votes: self-consistency samples when the backend gives no log-probabilities.
    """

    name = "llm"
    extra = "llm"
    family = "prompted"
    label = "llm (SmolLM2 RAG)"
    cost_kind = "tokens"
    budget_kind = "llm"
    # A cascade: the LLM (SmolLM2, in-process) answers only when retrieval is unsure, short prompts.
    test_params = {"n_examples": 2, "shortlist": 4, "route_above": 0.4, "allow_none": False}
    # ~7 s a prompt on 2 cores (its default 1,500-token RAG prompt): one fixed sample of the held-out set, nothing else.
    demo_caps = {"max_train": 1500, "seeds": 1, "ks": ("all",), "batch_size": 4,
                 "skip": ("backtest", "new_category", "merge", "network_import")}

    def __init__(
        self,
        *,
        backend: Any = "llamacpp",
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        structured: str = "auto",
        taxonomy: Any = None,
        n_examples: int = 8,
        per_class: int | None = 2,
        mmr_lambda: float | None = None,
        shortlist: int = 10,
        constrain: str = "shortlist",
        max_prompt_tokens: int = 1500,
        allow_none: bool = True,
        threshold: float | None = None,
        route_above: float | None = None,
        price_table: str | None = None,
        budget_usd: float | None = None,
        store: str | None = None,
        cache: bool = True,
        votes: int = 0,
        max_concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        retriever_params: dict | None = None,
    ) -> None:
        self.backend = backend
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.structured = structured
        self.taxonomy = taxonomy
        self.n_examples = n_examples
        self.per_class = per_class
        self.mmr_lambda = mmr_lambda
        self.shortlist = shortlist
        self.constrain = constrain
        self.max_prompt_tokens = max_prompt_tokens
        self.allow_none = allow_none
        self.threshold = threshold
        self.route_above = route_above
        self.price_table = price_table
        self.budget_usd = budget_usd
        self.store = store
        self.cache = cache
        self.votes = votes
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.retriever_params = retriever_params

    # ----- parts, built lazily (nothing heavy at construction) ------------------------
    def _backend(self) -> Any:
        from ..llm.backends import Backend, LlamaCppBackend, OpenAICompatibleBackend, RetryPolicy

        if isinstance(self.backend, Backend):
            return self.backend
        key = (self.backend, self.model, self.base_url, self.api_key_env, self.structured, self.max_concurrency,
               self.timeout_s, self.max_retries, self.n_ctx, self.n_threads)
        with _LOCK:
            found = _SHARED_BACKENDS.get(key)
            if found is not None:
                return found
            if self.backend == "llamacpp":
                made = LlamaCppBackend(model_path=self.model, n_ctx=self.n_ctx, n_threads=self.n_threads)
            elif self.backend == "openai":
                if not self.base_url or not self.model:
                    raise EngineError("backend='openai' needs base_url and model (e.g. base_url='http://127.0.0.1:8080/v1')")
                made = OpenAICompatibleBackend(
                    base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                    timeout_s=self.timeout_s, retry=RetryPolicy(max_retries=self.max_retries),
                    max_concurrency=self.max_concurrency, structured=self.structured,
                )
            else:
                raise EngineError(f"backend='{self.backend}' is not known; use 'llamacpp' or 'openai'")
            _SHARED_BACKENDS[key] = made
            return made

    def _cache(self) -> Any:
        if not self.cache:
            return None
        if getattr(self, "_cache_obj", None) is None:
            if self.store:
                from ..llm.cache import StoreResponseCache
                from ..store import Store

                self._cache_obj = StoreResponseCache(Store.open(self.store))
            else:
                from ..llm.cache import MemoryResponseCache

                backend = self._backend()
                with _LOCK:
                    self._cache_obj = _BACKEND_CACHES.setdefault(id(backend), MemoryResponseCache())
        return self._cache_obj

    def _ledger(self) -> Any:
        from ..llm.accounting import Ledger

        if getattr(self, "ledger_", None) is None or self.ledger_.budget_usd != self.budget_usd:
            self.ledger_ = Ledger(budget_usd=self.budget_usd)
        return self.ledger_

    def _prices(self) -> Any:
        from ..llm.accounting import load_price_table

        if getattr(self, "_prices_obj", None) is None:
            self._prices_obj = load_price_table(self.price_table)
        return self._prices_obj

    def _taxonomy_now(self) -> Taxonomy:
        """The taxonomy as it is now: a file is re-read when it changed (instant update)."""
        tax = self.taxonomy
        if isinstance(tax, Taxonomy):
            return tax
        if isinstance(tax, (str, Path)) and Path(tax).is_file():
            stamp = Path(tax).stat().st_mtime_ns
            if getattr(self, "_tax_stamp", None) != stamp or getattr(self, "taxonomy_", None) is None:
                self.taxonomy_ = load_taxonomy(tax)
                self._tax_stamp = stamp
            return self.taxonomy_
        if getattr(self, "taxonomy_", None) is None:
            raise EngineError(f"taxonomy '{tax}' is not a file; pass a taxonomy YAML path or a Taxonomy")
        return self.taxonomy_

    def _builder(self) -> Any:
        from ..llm.prompt import PromptBuilder

        tax = self._taxonomy_now()
        backend = self._backend()
        key = (tax.version_id, id(backend), self.max_prompt_tokens, self.constrain)
        if getattr(self, "_builder_key", None) != key:
            self._builder_obj = PromptBuilder(
                tax, count=backend.count_chat_tokens, max_prompt_tokens=self.max_prompt_tokens, constrain=self.constrain
            )
            self._builder_key = key
            self._sync_classes(tax)
            self._sync_retriever(tax)
        return self._builder_obj

    def _sync_classes(self, tax: Taxonomy) -> None:
        known = set(str(c) for c in self.classes_)
        new = [c for c in tax.codes if c not in known]
        if new:
            self.classes_ = np.array(sorted(known | set(new)), dtype=object)

    def _sync_retriever(self, tax: Taxonomy) -> None:
        # The retriever counts taxonomy definitions and examples as labelled points: give it the new version.
        retriever = self.retriever_
        if self.taxonomy is not None and getattr(retriever, "taxonomy_version_", None) != tax.version_id:
            retriever.set_taxonomy(tax)

    # ----- fit ------------------------------------------------------------------------
    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        if self.constrain not in ("shortlist", "taxonomy"):
            raise EngineError(f"constrain='{self.constrain}': expected 'shortlist' or 'taxonomy'")
        if self.taxonomy is None:
            self.taxonomy_ = _label_taxonomy(labels.tolist())
        else:
            self.taxonomy_ = None
            self.taxonomy_ = self._taxonomy_now()
            unknown = sorted(set(labels.tolist()) - set(c.code for c in self.taxonomy_.categories))
            if unknown:
                raise TaxonomyError(
                    f"fit: label(s) {', '.join(unknown[:5])} are not in taxonomy {self.taxonomy_.version_id}; "
                    "add them with `taxonomist taxonomy add` or fix the labels"
                )
        self.taxonomy_version_ = self.taxonomy_.version_id
        params = dict(self.retriever_params or {})
        if self.taxonomy is not None:
            params.setdefault("taxonomy", self.taxonomy_)
        self.retriever_ = create_engine("knn", **params).fit(texts, labels)
        self._sync_classes(self.taxonomy_)
        self.base_model_ = self._backend().model_id

    def fit_from_retriever(self, retriever: Engine) -> LlmEngine:
        """Use an already fitted `knn` engine as the retriever: the same as `fit` on its data, without re-indexing."""
        retriever._check_fitted()
        labels = [str(c) for c in retriever.classes_]
        self.classes_ = np.array(sorted(set(labels)), dtype=object)
        self.retriever_ = retriever
        self.taxonomy_ = _label_taxonomy(labels) if self.taxonomy is None else None
        if self.taxonomy_ is None:
            self.taxonomy_ = self._taxonomy_now()
        self.taxonomy_version_ = self.taxonomy_.version_id
        self._sync_classes(self.taxonomy_)
        self.train_seconds_ = 0.0
        self.training_data_hash_ = getattr(retriever, "training_data_hash_", "")
        self.n_train_ = getattr(retriever, "n_train_", 0)
        self.base_model_ = self._backend().model_id
        return self

    def add_examples(self, texts: Sequence[str], labels: Sequence[str]) -> LlmEngine:
        """Add labelled examples; the next prediction may use them (no training step)."""
        self._check_fitted()
        retriever = self.retriever_
        for name in ("add_examples", "partial_fit", "add"):
            if hasattr(retriever, name):
                getattr(retriever, name)(list(texts), list(labels))
                break
        else:
            raise EngineError("the retriever cannot add examples without a refit; update taxonomist")
        self._sync_classes(self._taxonomy_now())
        known = set(str(c) for c in self.classes_)
        new = sorted(set(map(str, labels)) - known)
        if new:
            self.classes_ = np.array(sorted(known | set(new)), dtype=object)
        return self

    # ----- retrieval + prompt -----------------------------------------------------------
    def _shortlist(self, text: str) -> list[tuple[str, float]]:
        return self._shortlists([text])[0]

    def _shortlists(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Retrieval's most likely labels per text (the retriever's `shortlist`, batched: one embedding pass)."""
        n = self.shortlist if self.shortlist and self.shortlist > 0 else (1 if self.route_above is not None else 0)
        if not n or not texts:
            return [[] for _ in texts]
        if len(texts) == 1:
            return [self.retriever_.shortlist(texts[0], n)]
        proba = self.retriever_.predict_proba(list(texts))
        classes = self.retriever_.classes_
        out = []
        for row in proba:
            order = np.argsort(-row, kind="stable")[:n]
            out.append([(str(classes[i]), float(row[i])) for i in order])
        return out

    def build_prompt(self, text: str, *, shortlist: Sequence[str] | None = None) -> Any:
        """The prompt this engine would send for `text` (retrieval included)."""
        self._check_fitted()
        builder = self._builder()
        examples: list[Evidence] = []
        if self.n_examples > 0:
            # Ask for more than needed: definitions count as points but are not few-shot examples.
            found = self.retriever_.retrieve(text, k=2 * self.n_examples, per_class=self.per_class, mmr_lambda=self.mmr_lambda)
            examples = [e for e in found if e.kind == "example" and e.text][: self.n_examples]
        if shortlist is None:
            shortlist = [c for c, _ in self._shortlist(text)]
        if not (self.shortlist and self.shortlist > 0):
            shortlist = []
        return builder.build(text, examples=examples, shortlist=shortlist)

    def _routed(self, text: str, scored: list[tuple[str, float]], start: float) -> LlmAnswer:
        """The cascade's cheap path: retrieval is confident enough, no LLM call."""
        top, p = scored[0]
        evidence = (Evidence(kind="vote", category=top, score=float(p), ref="retrieval"),)
        return LlmAnswer(
            category=top, confidence=float(p), probs=dict(scored), evidence=evidence,
            extra={"routed": "retrieval", "model": "", "prompt_tokens": 0, "cached_tokens": 0,
                   "evaluated_tokens": 0, "completion_tokens": 0, "from_cache": False, "invalid_output": False,
                   "confidence_source": "retrieval", "shortlist": [c for c, _ in scored]},
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    # ----- asking ------------------------------------------------------------------------
    def _stack(self) -> Any:
        """The backend as this engine calls it: `CachedBackend(MeteredBackend(backend))`, built once per part."""
        from ..llm.backends import CachedBackend, MeteredBackend

        backend, cache, ledger, prices = self._backend(), self._cache(), self._ledger(), self._prices()
        key = (id(backend), id(cache), id(ledger), id(prices))
        if getattr(self, "_stack_key", None) != key:
            stack = MeteredBackend(backend, ledger=ledger, prices=prices)
            if cache is not None:
                stack = CachedBackend(stack, cache=cache, on_hit=lambda hit: ledger.add(hit, 0.0))
            self._stack_obj, self._stack_key = stack, key
        return self._stack_obj

    def _ask(self, request: Any) -> Any:
        response = self._stack().complete(request)
        return response, (0.0 if response.from_cache else response.cost_usd)

    def _answer(self, text: str, scored: list[tuple[str, float]] | None = None) -> LlmAnswer:
        from ..llm.backends import ChatRequest

        start = time.perf_counter()
        if scored is None:
            scored = self._shortlist(text)
        if self.route_above is not None and scored and scored[0][1] >= self.route_above:
            return self._routed(text, scored, start)
        prompt = self.build_prompt(text, shortlist=[c for c, _ in scored])
        choices = prompt.choices if self.allow_none else tuple(c for c in prompt.choices if c != ABSTAIN)
        request = ChatRequest(messages=prompt.messages, choices=choices, max_tokens=_max_tokens(choices))
        response, cost = self._ask(request)
        responses = [response]
        code = _parse(response.text, choices)
        repaired = False
        if code is None:  # parse-validate-repair once, else abstain
            repaired = True
            repair = ChatRequest(
                messages=prompt.messages
                + ({"role": "assistant", "content": response.text[:200]},
                   {"role": "user", "content": REPAIR_TEMPLATE.format(codes=", ".join(choices))}),
                choices=choices,
                max_tokens=request.max_tokens,
            )
            response2, cost2 = self._ask(repair)
            responses.append(response2)
            cost += cost2
            code = _parse(response2.text, choices)
            response = response2
        probs, source = _choice_probs(response, choices, code)
        if code is None:
            category, confidence = ABSTAIN, 0.0
            probs = {}
        else:
            if self.votes and self.votes > 1 and source == "none":
                probs, extra_cost = self._votes(prompt, choices, code)
                cost += extra_cost
                source = "votes"
            category = code
            confidence = float(probs.get(code, 0.0)) if probs else 1.0
        backend = self._backend()
        evidence = tuple(
            Evidence(kind="example", category=e.category, score=float(e.score), ref=e.ref, text=e.text)
            for e in prompt.examples
        ) + (Evidence(kind="prompt", category=category, score=confidence, ref=f"{prompt.prompt_id}|{backend.model_id}"),)
        extra = {
            "routed": "llm",
            "prompt_id": prompt.prompt_id,
            "model": backend.model_id,
            "taxonomy_version": self._taxonomy_now().version_id,
            "catalogue": prompt.catalogue,
            "shortlist": list(prompt.shortlist),
            "choices": len(choices),
            "prompt_tokens": sum(r.prompt_tokens for r in responses),
            "prompt_tokens_exact": prompt.tokens_exact,
            "cached_tokens": sum(r.cached_tokens for r in responses),
            "evaluated_tokens": sum(max(r.evaluated_tokens, 0) for r in responses),
            "completion_tokens": sum(r.completion_tokens for r in responses),
            "from_cache": all(r.from_cache for r in responses),
            "constrained": response.constrained,
            "repaired": repaired,
            "invalid_output": code is None,
            "confidence_source": source,
            "retries": sum(r.retries for r in responses),
        }
        return LlmAnswer(
            category=category,
            confidence=confidence,
            probs=probs,
            evidence=evidence,
            extra=extra,
            cost_usd=cost,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    def _votes(self, prompt: Any, choices: tuple[str, ...], first: str) -> tuple[dict[str, float], float]:
        from ..llm.backends import ChatRequest

        counts = {first: 1}
        cost = 0.0
        for seed in range(1, self.votes):
            req = ChatRequest(messages=prompt.messages, choices=choices, max_tokens=_max_tokens(choices), temperature=0.7, seed=seed)
            resp, c = self._ask(req)
            cost += c
            code = _parse(resp.text, choices)
            if code is not None:
                counts[code] = counts.get(code, 0) + 1
        total = sum(counts.values())
        return {k: v / total for k, v in counts.items()}, cost

    # ----- batch with budget --------------------------------------------------------------
    def predict_many(self, texts: Iterable[str], *, on_prediction: Any = None) -> list[Prediction]:
        """Predictions for many records, calls in parallel up to the backend's limit.

        When the budget cap is reached the run stops cleanly: the error raised
        (`BudgetExceededError`) carries `.predictions`, those made so far, and
        `on_prediction(i, prediction)` has been called for each of them.
        """
        from .base import _as_texts

        self._check_fitted()
        texts = _as_texts(texts)
        done: list[Prediction | None] = [None] * len(texts)
        self._builder()  # build once before threads start

        scored = self._shortlists(texts)

        def one(i: int) -> None:
            p = self._to_prediction(self._answer(texts[i], scored[i]))
            done[i] = p
            if on_prediction is not None:
                on_prediction(i, p)

        self._threaded(len(texts), one, done)
        return [p for p in done if p is not None]

    def shortlisted_answers(self, texts: Sequence[str], *, shortlists: Sequence[Sequence[str]] | None = None) -> list[LlmAnswer]:
        """Every text's answer; `shortlists[i]` (e.g. a cascade's earlier stage's top codes) replaces retrieval's
        candidate codes for text i. Turn them into distributions with `answers_proba`."""
        from .base import _as_texts

        self._check_fitted()
        texts = _as_texts(texts)
        if shortlists is None:
            return self._answers(texts)
        if len(shortlists) != len(texts):
            raise EngineError(f"shortlisted_answers: {len(texts)} texts but {len(shortlists)} shortlists; give one per text")
        return self._answers(texts, scored=[[(str(c), 0.0) for c in s] for s in shortlists])

    def answers_proba(self, answers: Sequence[LlmAnswer]) -> np.ndarray:
        """The answers' raw distributions over `classes_` (before calibration), the greedy answer winning ties."""
        index = {str(c): i for i, c in enumerate(self.classes_)}
        rows = []
        for ans in answers:
            row = self._row(ans, index)
            if ans.category in index and ans.probs:  # the model's greedy answer wins ties
                row[index[ans.category]] += 1e-9
                row /= row.sum()
            rows.append(row)
        return np.vstack(rows) if rows else np.zeros((0, len(index)))

    def _answers(self, texts: list[str], scored: list[list[tuple[str, float]]] | None = None) -> list[LlmAnswer]:
        """Every text's answer, calls in parallel up to the backend's limit (budget errors carry what was done)."""
        self._builder()
        if scored is None:
            scored = self._shortlists(texts)
        done: list[LlmAnswer | None] = [None] * len(texts)

        def one(i: int) -> None:
            done[i] = self._answer(texts[i], scored[i])

        self._threaded(len(texts), one, done)
        return [a for a in done if a is not None]

    def _threaded(self, n: int, one: Any, done: list) -> None:
        """Run `one(i)` for i < n on the backend's concurrency; a budget stop keeps what finished."""

        workers = max(1, min(self.max_concurrency, getattr(self._backend(), "max_concurrency", 1)))
        try:
            if workers == 1:
                for i in range(n):
                    one(i)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for f in [pool.submit(one, i) for i in range(n)]:
                        f.result()
        except BudgetExceededError as exc:
            kept = [p for p in done if p is not None]
            if kept and isinstance(kept[0], LlmAnswer):
                kept = self._to_predictions(kept)
            exc.predictions = kept  # type: ignore[attr-defined]
            exc.done = [i for i, p in enumerate(done) if p is not None]  # type: ignore[attr-defined]
            raise

    def _row(self, ans: LlmAnswer, index: dict[str, int]) -> np.ndarray:
        """The answer's distribution over `classes_` (NONE's mass left out), before calibration."""
        row = np.zeros(len(index))
        for c, p in ans.probs.items():
            if c in index:
                row[index[c]] += p
        total = row.sum()
        if total > 0:
            return row / total
        if ans.category in index:  # an answer without scores (no log-probabilities): all on it
            row[index[ans.category]] = 1.0
            return row
        # Abstained with no distribution: spread over the shortlist.
        short = [c for c in ans.extra.get("shortlist", []) if c in index] or list(index)
        row[[index[c] for c in short]] = 1.0 / len(short)
        return row

    def _to_predictions(self, answers: Sequence[LlmAnswer], *, ids=None, top_k: int = 5, evidence: bool = True,
                        taxonomy: Any = None, code_map: Any = None) -> list[Prediction]:
        """Answers through the one decision path (calibration, threshold, taxonomy version, reasons)."""
        proba = self.answers_proba(answers)
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is not None:
            proba = calibrator.apply(proba)
        forced = [
            None if a.category != ABSTAIN else (Reason.INVALID_OUTPUT if a.extra.get("invalid_output") else Reason.OUT_OF_SCOPE)
            for a in answers
        ]
        preds = self._decide(
            proba, [], ids=ids, top_k=top_k, taxonomy=taxonomy, code_map=code_map,
            evidence=[a.evidence for a in answers] if evidence else None, start=time.perf_counter(),
            forced=forced, forced_confidence=[a.confidence if a.category == ABSTAIN else 0.0 for a in answers],
            costs=[a.cost_usd for a in answers], extras=[a.extra for a in answers],
            route=None,
        )
        return [dataclasses.replace(p, latency_ms=max(a.latency_ms, 1e-3), route=a.extra.get("routed", self.name))
                for p, a in zip(preds, answers)]

    def _to_prediction(self, ans: LlmAnswer, top_k: int = 5) -> Prediction:
        return self._to_predictions([ans], top_k=top_k)[0]

    def predict_batch(self, texts: Iterable[str], *, ids: Sequence[str] | None = None, top_k: int = 5,
                      evidence: bool = True, taxonomy: Any = None, code_map: Any = None) -> list[Prediction]:
        """The one decision path, with the LLM's calls threaded and budget-aware (see `predict_many`)."""
        from .base import _as_texts

        self._check_fitted()
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise EngineError(f"predict_batch: {len(texts)} texts but {len(ids)} ids; give one id per text or none")
        answers = self._answers(texts)
        return self._to_predictions(answers, ids=ids, top_k=top_k, evidence=evidence, taxonomy=taxonomy, code_map=code_map)

    # ----- the engine contract -------------------------------------------------------------
    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        """Raw distributions (the base class applies a calibrator, if one is attached)."""
        self._builder()
        index = {str(c): i for i, c in enumerate(self.classes_)}
        rows = [self._row(self._answer(text, scored), index) for text, scored in zip(texts, self._shortlists(texts))]
        return np.vstack(rows)

    # ----- save / load ---------------------------------------------------------------------
    def _save_weights(self, directory: Path) -> dict[str, Any]:
        self.retriever_.save(directory / "retriever")
        if self.taxonomy is not None:  # a label-only catalogue is rebuilt from the classes on load
            self._taxonomy_now().save(directory / "taxonomy.yaml")
        from ..llm.prompt import prompt_id

        return {"prompt_id": prompt_id(), "llm_model": self._backend().model_id, "retriever": "retriever/"}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        self.retriever_ = load_engine(directory / "retriever")
        saved = directory / "taxonomy.yaml"
        tax = self.taxonomy
        if tax is None or not saved.is_file():
            self.taxonomy_ = _label_taxonomy([str(c) for c in self.classes_])
        elif isinstance(tax, (str, Path)) and Path(tax).is_file():
            self.taxonomy_ = None
            self._taxonomy_now()
        else:
            self.taxonomy_ = load_taxonomy(saved)
            if tax is not None and not isinstance(tax, Taxonomy):
                self.taxonomy = str(saved)  # a Taxonomy object was saved as its file
        self.base_model_ = manifest.base_model

    def _libraries(self) -> tuple[str, ...]:
        return ("llama-cpp-python", "openai")


def _label_taxonomy(labels: Sequence[str]) -> Taxonomy:
    """A flat taxonomy from bare labels, as the prompt's catalogue when no document is given."""
    return Taxonomy.from_labels(labels)


# ----- answers ----------------------------------------------------------------------------
_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _max_tokens(choices: Sequence[str]) -> int:
    # JSON wrapper (~8 tokens) + the longest code (≤ 1 token per char, usually far fewer).
    return min(64, 12 + max((len(c) for c in choices), default=4))


def _parse(text: str, choices: Sequence[str]) -> str | None:
    """The choice named by a reply, or None. Accepts `{"category": X}`, a bare code, or a quoted code."""
    allowed = {c: c for c in choices}
    folded = {c.lower(): c for c in choices}
    raw = (text or "").strip()
    candidates: list[str] = []
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                for key in ("category", "code", "label", "answer"):
                    if isinstance(data.get(key), str):
                        candidates.append(data[key])
        except json.JSONDecodeError:
            pass
    else:
        candidates.append(raw.strip("`'\". \n"))
        first = _CODE_RE.match(raw.strip("`'\" \n"))
        if first:
            candidates.append(first.group(0).rstrip("."))
    for cand in candidates:
        if cand in allowed:
            return cand
        if cand.lower() in folded:
            return folded[cand.lower()]
    return None


def _choice_probs(response: Any, choices: Sequence[str], code: str | None) -> tuple[dict[str, float], str]:
    """A probability per choice: the backend's own, else from token log-probabilities, else none."""
    if code is None:
        return {}, "none"
    if response.choice_probs:
        probs = {c: float(p) for c, p in response.choice_probs.items() if p > 0}
        return probs, "choice_logprobs"
    if not response.logprobs:
        return {}, "none"
    # Find the tokens that spell the chosen code inside the reply text.
    text = "".join(t.token for t in response.logprobs)
    at = text.find(code)
    if at < 0:
        return {}, "none"
    pos, first_tok, logp = 0, None, 0.0
    for t in response.logprobs:
        span = (pos, pos + len(t.token))
        pos = span[1]
        if span[1] <= at or span[0] >= at + len(code):
            continue
        if first_tok is None:
            first_tok = t
        logp += t.logprob
    if first_tok is None:
        return {}, "none"
    probs = {code: math.exp(logp)}
    # Alternatives: other first tokens that begin some other choice.
    for tok, lp in first_tok.top:
        piece = tok.strip().strip('"')
        if not piece or code.startswith(piece):
            continue
        for c in choices:
            if c != code and c.startswith(piece):
                probs[c] = probs.get(c, 0.0) + math.exp(lp)
                break
    total = sum(probs.values())
    return {c: p / total for c, p in probs.items()}, "token_logprobs"
