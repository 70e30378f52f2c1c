"""`taxonomist demo-data`: write the flagship demo data set (denials, taxonomy, second network, data card, 835)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ._console import err_console, progress

__all__ = ["register"]


def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into (created if missing).", show_default=False)],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed writes the same bytes.")] = 7,
    records: Annotated[int, typer.Option("--records", help="Denial lines of our network.", min=1)] = 80_000,
    months: Annotated[int, typer.Option("--months", help="Months covered (at least 19, so the 48th category appears).")] = 24,
    network_b: Annotated[
        int, typer.Option("--network-b", help="Records of the second network. Default: records / 8 (10,000 for 80,000).", show_default=False)
    ] = -1,
    x12: Annotated[
        int, typer.Option("--x12", help="Also write the first N records as an X12 835 5010 file, denials.835 (0: none).", min=0)
    ] = 0,
) -> None:
    """Generate realistic, labelled denial records (synthetic; no PHI) for demos, tests and benchmarks.

    Writes denials.parquet and denials.csv (our network: 47 categories, 48 from month 19), taxonomy.yaml,
    network_b.parquet/.csv with network_b_taxonomy.yaml and crosswalk_network_b.yaml, and DATACARD.md
    (how it was generated, class counts, events). With --x12 N, also denials.835.
    """
    from ..demo_data import generate

    t0 = time.perf_counter()
    with progress(transient=True) as bar:
        task = bar.add_task("generating denials", total=records)
        result = generate(
            out, seed=seed, records=records, months=months,
            network_b_records=None if network_b < 0 else network_b, x12_records=x12,
            on_progress=lambda k: bar.advance(task, k),
        )
    seconds = time.perf_counter() - t0
    err_console.print(
        f"wrote {result.records:,} denials and {result.network_b_records:,} network-B records "
        f"(seed {seed}) to {result.out_dir} in {seconds:.1f} s"
    )
    for path in result.files:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
