"""The project's one price table: hosted-LLM token prices, CPU/GPU hours, staff time, per-model LLM prices.

One YAML file (`prices.yaml` in this package holds the defaults; pass your own with
`--prices FILE`) feeds both the decision report's cost model
(`taxonomist.compare.costs`) and the llm engine's per-call accounting
(`taxonomist.llm.accounting`), so a CPU-hour costs the same everywhere. A local
LLM is priced by CPU time at `compute.serve_cpu_per_hour` unless the `models:`
section names it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ExperimentError

__all__ = ["PriceTable", "load_prices", "PriceError"]

#: Price problems are reported as the comparison's errors (one line, the file and the key).
PriceError = ExperimentError

_MODEL_KEYS = ("input", "cached", "output", "cpu_hour")


def _model_prices(body: Any, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(body, Mapping):
        raise PriceError(f"price table '{source}': 'models' must map model names to {{input, cached, output, cpu_hour}}")
    out: dict[str, dict[str, float]] = {}
    for name, entry in body.items():
        if not isinstance(entry, Mapping) or set(entry) - set(_MODEL_KEYS):
            raise PriceError(
                f"price table '{source}': model '{name}' must map to {{input, cached, output, cpu_hour}} in dollars "
                f"(per 1M tokens, or per CPU-hour); found keys {sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__}"
            )
        try:
            out[str(name)] = {k: float(v) for k, v in entry.items() if v is not None}
        except (TypeError, ValueError):
            raise PriceError(f"price table '{source}': model '{name}' has a price that is not a number") from None
    return out


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
    #: Per-model LLM prices for the llm engine's accounting ({name or pattern: {input, cached, output, cpu_hour}}).
    models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
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
            raise PriceError(f"price table '{source}': expected sections llm_api, compute, operations at the top level")
        known_sections = {s for s, _ in cls._LAYOUT} | {"models"}
        values: dict[str, Any] = {}
        for section, body in data.items():
            if section == "models":
                values["models"] = _model_prices(body, source)
                continue
            if section not in known_sections:
                raise PriceError(
                    f"price table '{source}': unknown section '{section}' (known: {', '.join(sorted(known_sections))})"
                )
            if not isinstance(body, Mapping):
                raise PriceError(f"price table '{source}': section '{section}' must be a mapping of prices")
            for key, value in body.items():
                target = cls._LAYOUT.get((section, key))
                if target is None:
                    known = ", ".join(k for s, k in cls._LAYOUT if s == section)
                    raise PriceError(f"price table '{source}': unknown price '{section}.{key}' (known: {known})")
                if target == "llm_model":
                    values[target] = str(value)
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise PriceError(
                        f"price table '{source}': '{section}.{key}' is {value!r}; expected a number (dollars)"
                    ) from None
                if not math.isfinite(number) or number < 0:
                    raise PriceError(f"price table '{source}': '{section}.{key}' must be a non-negative number, found {value!r}")
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
    """Read a price table YAML (or JSON); with no path, the defaults shipped in the package."""
    from ._yaml import safe_load

    if path is None:
        text = resources.files("taxonomist").joinpath("prices.yaml").read_text(encoding="utf-8")
        source = "defaults (taxonomist/prices.yaml)"
    else:
        p = Path(path)
        if not p.is_file():
            raise PriceError(f"price table '{p}' does not exist; copy taxonomist/prices.yaml and edit it")
        text, source = p.read_text(encoding="utf-8"), str(p)
    data = safe_load(text, source=f"price table '{source}'", error=PriceError) or {}
    return PriceTable.from_mapping(data, source=source)
