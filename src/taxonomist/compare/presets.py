"""Budgets: how much of the data each engine sees, so a comparison fits the time the user has.

Fast engines (`tfidf`) always run on everything. Engines that embed with MiniLM
(~1,000 texts/s on 2 idle cores, far fewer when shared), fine-tune it, or prompt
an LLM (~1 s a record locally) train on a capped stratified subsample and are scored on a prefix of
each shared test set; the report states every cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..errors import ExperimentError
from .experiments import ALL, EngineSpec, Settings

__all__ = ["BUDGETS", "engine_specs", "settings_for", "DEFAULT_ENGINES"]

BUDGETS = ("quick", "standard", "full")
DEFAULT_ENGINES = ("tfidf", "knn", "head", "llm")

# budget -> engine kind -> caps
_CAPS: dict[str, dict[str, dict]] = {
    "quick": {
        "embed": {"max_train": 2500, "max_test": 400},
        "finetune": {"max_train": 1200, "max_test": 200, "seeds": 1, "ks": (10, ALL), "policies": ("never", "drift"), "event_ks": (10,)},
        "llm": {"max_train": 2500, "seeds": 1, "ks": (5, ALL), "policies": ("never",), "event_ks": (5,), "batch_size": 4},
    },
    "standard": {
        "embed": {"max_train": 8000, "max_test": 1000},
        "finetune": {"max_train": 4000, "max_test": 400, "seeds": 1, "ks": (10, 100, ALL), "policies": ("never", "drift"), "event_ks": (5, 25)},
        "llm": {"max_train": 8000, "seeds": 1, "ks": (5, ALL), "policies": ("never", "monthly"), "event_ks": (5,), "batch_size": 4},
    },
    "full": {
        "embed": {},
        "finetune": {"seeds": 1},
        "llm": {"seeds": 1, "batch_size": 4},
    },
}

def engine_specs(names: Sequence[str], *, budget: str = "standard", llm_sample: int = 40, params: dict[str, dict] | None = None) -> list[EngineSpec]:
    """EngineSpecs for engine names under a budget; `llm_sample` caps the records the LLM engine answers per evaluation."""
    if budget not in BUDGETS:
        raise ExperimentError(f"unknown budget '{budget}'; expected one of {', '.join(BUDGETS)}")
    from ..engines.base import ENGINES, _ensure_registered

    _ensure_registered()
    out = []
    for name in names:
        if name not in ENGINES:
            raise ExperimentError(f"unknown engine '{name}' (known: {', '.join(sorted(ENGINES))}); fix --engines")
        cls = ENGINES[name]
        spec = EngineSpec(name=name, label=cls.label or name, params=dict((params or {}).get(name, {})))
        if cls.budget_kind in _CAPS[budget]:
            spec = replace(spec, **_CAPS[budget][cls.budget_kind])
        if cls.budget_kind == "llm":
            spec = replace(spec, max_test=llm_sample)
        out.append(spec)
    return out


def settings_for(budget: str, *, seeds: int | None = None) -> Settings:
    if budget not in BUDGETS:
        raise ExperimentError(f"unknown budget '{budget}'; expected one of {', '.join(BUDGETS)}")
    base = {
        "quick": Settings(seeds=2, max_test=1500, backtest_per_month=200, general_eval=400, network_eval=400, network_history=2000),
        "standard": Settings(),
        "full": Settings(max_test=5000, backtest_per_month=1000, new_category_eval=1000, general_eval=2000, network_eval=2000, network_history=10000),
    }[budget]
    return replace(base, seeds=seeds) if seeds else base
