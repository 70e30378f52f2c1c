"""What LLM calls cost: per-model prices from the project's one price table, per-call cost, a ledger, a budget cap.

Prices come from `taxonomist.prices` (the same YAML the decision report reads),
in US dollars. Its `models:` section prices models by name or pattern:

    models:
      gpt-4o-mini:   {input: 0.15, cached: 0.075, output: 0.60}   # per 1M tokens
      "llama.cpp:*": {cpu_hour: 0.10}                              # local model: per CPU-hour
      "*":           {input: 1.0, output: 3.0}                     # anything else

Model names match exactly first, then by shell-style pattern in file order. A
local model not named there is priced by CPU time at the table's
`compute.serve_cpu_per_hour` (latency × cores / 3600 × that price), so a
CPU-hour costs the same in the report and in the ledger. Unknown remote models cost 0.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BackendError, BudgetExceededError
from .backends import ChatResponse

__all__ = ["Price", "PriceTable", "Ledger", "DEFAULT_PRICES", "load_price_table"]


@dataclass(frozen=True)
class Price:
    """Dollars per 1M input / cached-input / output tokens, and per CPU-hour for local models."""

    input: float = 0.0
    cached: float | None = None  # None: cached input tokens cost the same as input
    output: float = 0.0
    cpu_hour: float = 0.0

    def cost(self, response: ChatResponse, cpu_cores: float = 0.0) -> float:
        if response.from_cache:
            return 0.0
        cached = min(response.cached_tokens, response.prompt_tokens)
        fresh = response.prompt_tokens - cached
        cached_rate = self.input if self.cached is None else self.cached
        dollars = (fresh * self.input + cached * cached_rate + response.completion_tokens * self.output) / 1e6
        dollars += response.latency_s * cpu_cores / 3600.0 * self.cpu_hour
        return dollars


#: Without a price table: a local model at the default CPU price of taxonomist/prices.yaml; unknown remote models cost 0
#: until you give a table (the cost column then reads 0, never a guess).
DEFAULT_PRICES: dict[str, Price] = {"llama.cpp:*": Price(cpu_hour=0.10)}


class PriceTable:
    """Model name → `Price`, exact names first, then patterns in order."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    def price(self, model: str) -> Price:
        if model in self.prices:
            return self.prices[model]
        for pattern, price in self.prices.items():
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return Price()

    def to_dict(self) -> dict[str, Any]:
        return {"models": {k: asdict(v) for k, v in self.prices.items()}}

    @classmethod
    def from_prices(cls, table: Any) -> PriceTable:
        """From the project's `prices.PriceTable`: its `models:` first, then local models at its CPU price."""
        prices = {str(k): Price(**dict(v)) for k, v in table.models.items()}
        prices.setdefault("llama.cpp:*", Price(cpu_hour=table.serve_cpu_per_hour))
        return cls(prices)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "price table") -> PriceTable:
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise BackendError(f"{source}: expected a mapping 'models: {{name: {{input: .., output: ..}}}}'")
        prices = {}
        allowed = {"input", "cached", "output", "cpu_hour"}
        for name, entry in data["models"].items():
            if not isinstance(entry, dict) or set(entry) - allowed:
                raise BackendError(
                    f"{source}: model '{name}' must map to {{input, cached, output, cpu_hour}} in dollars "
                    f"(per 1M tokens, or per CPU-hour); found {entry!r}"
                )
            try:
                prices[str(name)] = Price(**{k: (None if v is None else float(v)) for k, v in entry.items()})
            except (TypeError, ValueError):
                raise BackendError(f"{source}: model '{name}' has a price that is not a number") from None
        return cls(prices)


def load_price_table(path: str | Path | None) -> PriceTable:
    """Per-model prices from the project's price table (`taxonomist.prices`); `None` gives the defaults."""
    from ..errors import ExperimentError
    from ..prices import load_prices

    try:
        table = load_prices(path)
    except ExperimentError as exc:
        raise BackendError(str(exc)) from None
    return PriceTable.from_prices(table)


@dataclass
class Ledger:
    """Running totals of a run's calls, thread-safe, with an optional budget cap in dollars.

    `check()` before a call raises `BudgetExceededError` once the spend has
    reached the cap, so a run stops between calls and keeps what it has.
    """

    budget_usd: float | None = None
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    evaluated_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def check(self) -> None:
        if self.budget_usd is not None and self.cost_usd >= self.budget_usd:
            raise BudgetExceededError(
                f"budget of ${self.budget_usd:.4f} reached (spent ${self.cost_usd:.4f} in {self.calls} calls); "
                "predictions so far are kept; raise the budget to continue"
            )

    def add(self, response: ChatResponse, cost: float) -> None:
        with self._lock:
            if response.from_cache:
                self.cache_hits += 1
                return
            self.calls += 1
            self.prompt_tokens += response.prompt_tokens
            self.cached_tokens += response.cached_tokens
            self.evaluated_tokens += response.evaluated_tokens if response.evaluated_tokens >= 0 else response.prompt_tokens - response.cached_tokens
            self.completion_tokens += response.completion_tokens
            self.latency_s += response.latency_s
            self.cost_usd += cost
            self.retries += response.retries

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
