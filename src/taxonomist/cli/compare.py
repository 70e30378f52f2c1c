"""`taxonomist compare` and `taxonomist demo`: measure prompting against fine-tuning on your own data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._console import console, err_console, progress, resumable

__all__ = ["register"]


@contextmanager
def progress_callback(every: float = 10.0) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """The `Comparison` progress hook: a rich bar per stage on a terminal, else a line per stage and every ~10 s."""
    if not err_console.is_terminal:
        import threading
        import time

        start_all = time.monotonic()
        last = [start_all]
        active: list = [None]  # the stage now running
        lock = threading.Lock()

        def line(state: dict, now: float) -> None:
            finished = state["done"] >= state["total"]
            rate = state["done"] / max(now - state["t0"], 1e-9)
            left = (state["total"] - state["done"]) / rate if rate > 0 else None
            eta = "done" if finished else (f"about {left:.0f} s left" if left is not None else "first step running")
            err_console.print(f"[{now - start_all:6.0f} s] {state['description']}: {state['done']:,}/{state['total']:,}, {eta}",
                              highlight=False, markup=False)
            last[0] = now

        def start_plain(description: str, total: int) -> Callable[[int], None]:
            state = {"description": description, "done": 0, "total": max(total, 1), "t0": time.monotonic()}
            with lock:
                active[0] = state
                err_console.print(f"[{time.monotonic() - start_all:6.0f} s] {description}: {state['total']:,} to do",
                                  highlight=False, markup=False)

            def advance(n: int = 1) -> None:
                with lock:
                    state["done"] += n
                    now = time.monotonic()
                    if state["done"] >= state["total"] or now - last[0] >= every:
                        line(state, now)

            return advance

        stop = threading.Event()

        def heartbeat() -> None:
            # A long step (embedding 80,000 records) still prints a line every ~`every` seconds.
            while not stop.wait(every / 2):
                with lock:
                    now = time.monotonic()
                    if active[0] is not None and now - last[0] >= every:
                        line(active[0], now)

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            yield start_plain
        finally:
            stop.set()
        return
    with progress() as bar:
        def start(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=max(total, 1))

            def advance(n: int = 1) -> None:
                bar.advance(task, n)

            return advance

        yield start


def print_answers(results: dict, report: Path) -> None:
    from ..compare.report import QUESTIONS

    for key, question in QUESTIONS:
        console.print(f"\n[bold]{question}[/bold]")
        for line in results["answers"].get(key, "").splitlines():
            console.print(line, highlight=False, markup=False)
    console.print(f"\nReport: {report}")


def compare(
    data: Annotated[Path, typer.Option("--data", help="Labelled records: CSV, JSONL or Parquet with text,label (and date or month for the time experiments).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.html, report.md, results.json and the store of predictions.")],
    taxonomy: Annotated[Optional[Path], typer.Option("--taxonomy", help="Taxonomy YAML; default: a flat taxonomy from the labels.")] = None,
    engines: Annotated[str, typer.Option("--engines", help="Comma-separated engines to compare: tfidf, knn, head, finetune, ensemble, llm.")] = "tfidf,knn,head,llm",
    budget: Annotated[str, typer.Option("--budget", help="quick | standard | full: how much data slow engines (MiniLM, fine-tuning, LLM) see; every cap is stated in the report.")] = "standard",
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds for the learning curve (default by budget).")] = None,
    llm_sample: Annotated[int, typer.Option("--llm-sample", min=1, help="Records the LLM engine answers per evaluation (a fixed prefix of each test set).")] = 40,
    prices: Annotated[Optional[Path], typer.Option("--prices", help="Price table YAML (copy taxonomist/prices.yaml and edit); the llm engine prices its calls from the same file.")] = None,
    network: Annotated[Optional[Path], typer.Option("--network", help="Another network's labelled records, in their codes, to import through --crosswalk.")] = None,
    crosswalk: Annotated[Optional[Path], typer.Option("--crosswalk", help="Crosswalk from the other network's codes to ours (YAML or CSV).")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Store for every prediction (default: OUT/compare.db).")] = None,
    text_fields: Annotated[str, typer.Option("--text-fields", help="Structured columns to prepend to the text, comma-separated (default none).")] = "",
    new_category: Annotated[Optional[str], typer.Option("--new-category", help="Category the new-category replay introduces (default: the one first seen after the training period with the most records).")] = None,
    volume: Annotated[int, typer.Option("--volume", min=1, help="Items a month to price each approach at on the first screen.")] = 20000,
    show_text: Annotated[bool, typer.Option("--show-text", help="Put record text next to the ids of the most confused pairs (off by default: record text is protected health information and the report may travel).")] = False,
    llm_base_url: Annotated[Optional[str], typer.Option("--llm-base-url", help="An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1) to measure on a stratified sample of --llm-sample test records.")] = None,
    llm_model: Annotated[Optional[str], typer.Option("--llm-model", help="Model name at --llm-base-url.")] = None,
    llm_api_key_env: Annotated[str, typer.Option("--llm-api-key-env", help="Environment variable holding the endpoint's API key (never the key itself; local servers need none).")] = "OPENAI_API_KEY",
    llm_structured: Annotated[str, typer.Option("--llm-structured", help="How the endpoint constrains answers: auto, json_schema, json_object, grammar (llama.cpp servers), none.")] = "auto",
    jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, help="Fits run side by side on this many threads (default: the CPUs this process may use); the figures do not depend on it.")] = None,
) -> None:
    """Run every engine through the same experiments and write the decision report.

    Experiments: learning curve (k examples per category, several seeds);
    time backtest with retraining policies (needs dates); taxonomy events (a
    new category, a merge, a second network through a crosswalk); latency,
    throughput and cost with break-even volumes. Experiments the data cannot
    support are skipped, and the report says why.
    """
    from ..compare.costs import load_prices
    from ..compare.dataset import load_dataset
    from ..compare.harness import open_store, run_compare
    from ..compare.presets import engine_specs, settings_for
    from ..errors import ExperimentError
    from ..taxonomy import load_crosswalk, load_taxonomy

    if (network is None) != (crosswalk is None):
        raise ExperimentError("--network and --crosswalk go together: give both to replay the import of a second network, or neither")
    if (llm_base_url is None) != (llm_model is None):
        raise ExperimentError("--llm-base-url and --llm-model go together: give both to measure an endpoint, or neither")
    names = [e.strip() for e in engines.split(",") if e.strip()]
    specs = engine_specs(names, budget=budget, llm_sample=llm_sample)
    endpoints = []
    if llm_base_url and llm_model:
        base = engine_specs(["llm"], budget=budget, llm_sample=llm_sample)[0]
        endpoints.append(replace(base, label=f"{llm_model} @ {llm_base_url} (measured)", params={
            "backend": "openai", "base_url": llm_base_url, "model": llm_model, "api_key_env": llm_api_key_env,
            "structured": llm_structured}))
    fields = [f.strip() for f in text_fields.split(",") if f.strip()]
    dataset = load_dataset(data, text_fields=fields)
    tax = load_taxonomy(taxonomy) if taxonomy else None
    second = None
    if network is not None and crosswalk is not None:
        second = (load_dataset(network, text_fields=fields, name=network.stem), load_crosswalk(crosswalk))
    out.mkdir(parents=True, exist_ok=True)
    db_path = db or out / "compare.db"
    store = open_store(db_path)
    hint = f"the cells finished so far are stored in {db_path}; rerun the same command to resume from them"
    try:
        with resumable(hint), progress_callback() as cb:
            settings = replace(settings_for(budget, seeds=seeds), new_category=new_category, volume=volume,
                               show_text=show_text)
            results = run_compare(dataset, tax, specs, out_dir=out, settings=settings,
                                  prices=load_prices(prices), store=store, second_network=second, progress=cb,
                                  endpoints=endpoints, jobs=jobs)
    finally:
        store.close()
    for s in results["skipped"]:
        if s["engine"] == "all":
            err_console.print(f"skipped {s['experiment']}: {s['reason']}", highlight=False)
    print_answers(results, out / "report.html")


def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the generated data and the report.")] = Path("out/demo"),
    records: Annotated[int, typer.Option("--records", min=2000, help="Denial records to generate (24 months).")] = 24000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data generator.")] = 7,
    engines: Annotated[str, typer.Option("--engines", help="Comma-separated engines; default: all the demo's local engines.")] = "",
    llm_sample: Annotated[int, typer.Option("--llm-sample", min=1, help="Records the local LLM answers (a fixed sample of the held-out set; ~7 s each on 2 cores).")] = 10,
) -> None:
    """The flagship demo: generate denial data, compare the engines on it, print the three answers.

    Runs on local models only (MiniLM, SmolLM2); slow engines see fixed
    subsamples stated in the report. Takes under 10 minutes on 2 cores.
    """
    from ..compare.demo import run_demo

    with resumable(f"rerun the same command to resume: the cells finished so far are stored under {out}"), progress_callback() as cb:
        results, report = run_demo(out, records=records, seed=seed, engines=[e for e in engines.split(",") if e] or None,
                                   llm_sample=llm_sample, progress=cb, say=lambda m: err_console.print(m, highlight=False))
    print_answers(results, report)
    console.print(f"Total time: {results['demo']['total_seconds']:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("demo")(demo)
