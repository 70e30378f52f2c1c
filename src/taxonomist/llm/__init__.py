"""Prompting a general LLM with retrieval: backends behind one seam, the prompt builder, accounting, response cache.

Importing this package needs no extra: `openai` and `llama_cpp` are imported
when a backend is created (and a missing one names `pip install 'taxonomist[llm]'`).
"""

from .accounting import DEFAULT_PRICES, Ledger, Price, PriceTable, load_price_table
from .backends import (
    Backend,
    ChatRequest,
    ChatResponse,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    RetryPolicy,
    TokenLogprob,
    default_gguf_path,
    estimate_tokens,
)
from .cache import MemoryResponseCache, ResponseCache, StoreResponseCache
from .prompt import PROMPT_VERSION, TEMPLATE_HASH, Prompt, PromptBuilder, prompt_id

__all__ = [
    "Backend",
    "ChatRequest",
    "ChatResponse",
    "DEFAULT_PRICES",
    "Ledger",
    "LlamaCppBackend",
    "MemoryResponseCache",
    "OpenAICompatibleBackend",
    "PROMPT_VERSION",
    "Price",
    "PriceTable",
    "Prompt",
    "PromptBuilder",
    "ResponseCache",
    "RetryPolicy",
    "StoreResponseCache",
    "TEMPLATE_HASH",
    "TokenLogprob",
    "default_gguf_path",
    "estimate_tokens",
    "load_price_table",
    "prompt_id",
]
