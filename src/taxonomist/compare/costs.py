"""The editable price table and the cost model that turns measured seconds and tokens into dollars.

Prices live in a YAML file (`prices.yaml` in this package holds the defaults; pass
your own with `taxonomist compare --prices FILE`). The cost model is deliberately
simple and stated in the report: a self-hosted engine pays for an always-on
serving machine plus CPU time per item plus retraining (machine time and a human
review of each retrain); a hosted LLM pays per token and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ExperimentError

__all__ = [
    "PriceTable",
    "CostModel",
    "load_prices",
    "break_even_volume",
]


@dataclass(frozen=True)
class PriceTable:
    """Every price the cost model uses, flat, in dollars."""

    llm_model: str = "hosted small LLM"
    llm_input_per_1m: float = 0.15
    llm_cached_input_per_1m: float = 0.075
    llm_output_per_1m: float = 0.60
    train_cpu_per_hour: float = 0.10
    train_gpu_per_hour: float = 2.50
    serve_cpu_per_hour: float = 0.10
    serve_gpu_per_hour: float = 2.50
    serve_hours_per_month: float = 730.0
    retrain_review_hours: float = 0.5
    staff_per_hour: float = 60.0
    taxonomy_changes_per_year: float = 4.0
    source: str = "defaults"

    # YAML section.key -> field
    _LAYOUT = {
        ("llm_api", "model"): "llm_model",
        ("llm_api", "input_per_1m_tokens"): "llm_input_per_1m",
        ("llm_api", "cached_input_per_1m_tokens"): "llm_cached_input_per_1m",
        ("llm_api", "output_per_1m_tokens"): "llm_output_per_1m",
        ("compute", "train_cpu_per_hour"): "train_cpu_per_hour",
        ("compute", "train_gpu_per_hour"): "train_gpu_per_hour",
        ("compute", "serve_cpu_per_hour"): "serve_cpu_per_hour",
        ("compute", "serve_gpu_per_hour"): "serve_gpu_per_hour",
        ("compute", "serve_hours_per_month"): "serve_hours_per_month",
        ("operations", "retrain_review_hours"): "retrain_review_hours",
        ("operations", "staff_per_hour"): "staff_per_hour",
        ("operations", "taxonomy_changes_per_year"): "taxonomy_changes_per_year",
    }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str) -> PriceTable:
        if not isinstance(data, Mapping):
            raise ExperimentError(f"price table '{source}': expected sections llm_api, compute, operations at the top level")
        known_sections = {s for s, _ in cls._LAYOUT}
        values: dict[str, Any] = {}
        for section, body in data.items():
            if section not in known_sections:
                raise ExperimentError(
                    f"price table '{source}': unknown section '{section}' (known: {', '.join(sorted(known_sections))})"
                )
            if not isinstance(body, Mapping):
                raise ExperimentError(f"price table '{source}': section '{section}' must be a mapping of prices")
            for key, value in body.items():
                target = cls._LAYOUT.get((section, key))
                if target is None:
                    known = ", ".join(k for s, k in cls._LAYOUT if s == section)
                    raise ExperimentError(f"price table '{source}': unknown price '{section}.{key}' (known: {known})")
                if target == "llm_model":
                    values[target] = str(value)
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ExperimentError(
                        f"price table '{source}': '{section}.{key}' is {value!r}; expected a number (dollars)"
                    ) from None
                if not math.isfinite(number) or number < 0:
                    raise ExperimentError(f"price table '{source}': '{section}.{key}' must be a non-negative number, found {value!r}")
                values[target] = number
        return cls(**values, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ----- unit prices --------------------------------------------------------------
    def llm_cost(self, input_tokens: float, output_tokens: float, cached_tokens: float = 0.0) -> float:
        """Dollars for one call: cached tokens are the part of the input served from the prefix cache."""
        uncached = max(input_tokens - cached_tokens, 0.0)
        return (
            uncached * self.llm_input_per_1m + cached_tokens * self.llm_cached_input_per_1m + output_tokens * self.llm_output_per_1m
        ) / 1e6

    def train_cost(self, seconds: float, *, gpu: bool = False) -> float:
        rate = self.train_gpu_per_hour if gpu else self.train_cpu_per_hour
        return seconds / 3600.0 * rate

    def serve_cost(self, seconds: float, *, gpu: bool = False) -> float:
        rate = self.serve_gpu_per_hour if gpu else self.serve_cpu_per_hour
        return seconds / 3600.0 * rate

    @property
    def retrain_review_cost(self) -> float:
        return self.retrain_review_hours * self.staff_per_hour


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read a price table YAML; with no path, the defaults shipped in the package."""
    from .._yaml import safe_load

    if path is None:
        text = resources.files(__package__).joinpath("prices.yaml").read_text(encoding="utf-8")
        source = "defaults (taxonomist/compare/prices.yaml)"
    else:
        p = Path(path)
        if not p.is_file():
            raise ExperimentError(f"price table '{p}' does not exist; copy taxonomist/compare/prices.yaml and edit it")
        text, source = p.read_text(encoding="utf-8"), str(p)
    data = safe_load(text, source=f"price table '{source}'", error=ExperimentError) or {}
    return PriceTable.from_mapping(data, source=source)


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
