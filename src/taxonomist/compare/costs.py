"""The editable price table and the cost model that turns measured seconds and tokens into dollars.

Prices live in a YAML file (`prices.yaml` in this package holds the defaults; pass
your own with `taxonomist compare --prices FILE`). The cost model is deliberately
simple and stated in the report: a self-hosted engine pays for an always-on
serving machine plus CPU time per item plus retraining (machine time and a human
review of each retrain); a hosted LLM pays per token and nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The project's one price table lives in `taxonomist.prices`; the cost model reads it.
from ..prices import PriceTable, load_prices


__all__ = [
    "PriceTable",
    "CostModel",
    "load_prices",
    "break_even_volume",
]




@dataclass(frozen=True)
class CostModel:
    """Monthly cost of one approach as a line: fixed dollars per month plus dollars per item.

    `fixed_per_month` holds the always-on serving machine (self-hosted engines)
    and retraining (retrains per month × (machine time + human review)).
    """

    approach: str
    per_item: float
    fixed_per_month: float
    retrains_per_month: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def monthly(self, volume: float) -> float:
        return self.fixed_per_month + self.per_item * volume

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["per_1000_items"] = self.per_item * 1000
        return out

    @classmethod
    def self_hosted(
        cls,
        approach: str,
        *,
        prices: PriceTable,
        seconds_per_item: float,
        train_seconds: float,
        retrains_per_month: float,
        gpu: bool = False,
    ) -> CostModel:
        per_item = prices.serve_cost(seconds_per_item, gpu=gpu)
        serving = prices.serve_hours_per_month * (prices.serve_gpu_per_hour if gpu else prices.serve_cpu_per_hour)
        retrain = retrains_per_month * (prices.train_cost(train_seconds, gpu=gpu) + prices.retrain_review_cost)
        notes = (
            f"serving machine ${serving:,.2f}/month",
            f"{retrains_per_month:.2f} retrains/month × (${prices.train_cost(train_seconds, gpu=gpu):.4f} compute + ${prices.retrain_review_cost:.2f} review)",
        )
        return cls(approach, per_item, serving + retrain, retrains_per_month, notes)

    @classmethod
    def hosted_llm(cls, approach: str, *, prices: PriceTable, input_tokens: float, output_tokens: float, cached_tokens: float = 0.0) -> CostModel:
        per_item = prices.llm_cost(input_tokens, output_tokens, cached_tokens)
        notes = (f"{input_tokens:.0f} input ({cached_tokens:.0f} cached) + {output_tokens:.0f} output tokens per item at {prices.llm_model} prices",)
        return cls(approach, per_item, 0.0, 0.0, notes)


def break_even_volume(a: CostModel, b: CostModel) -> float | None:
    """Monthly volume at which `a` and `b` cost the same; None when one is cheaper at every volume."""
    d_fixed = a.fixed_per_month - b.fixed_per_month
    d_item = b.per_item - a.per_item
    if d_item == 0:
        return None
    volume = d_fixed / d_item
    return volume if volume > 0 else None
