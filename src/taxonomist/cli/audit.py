"""`taxonomist audit`: rank the labelled history by how likely each label is wrong, with evidence."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import ExperimentError
from ._console import console, err_console, reporter, resumable
from .engines import IdCol, LabelCol, TextCol, _params, _read, _settings
from .records import Db, Who, _who

__all__ = ["register"]

#: The suspects file's columns; record text is never written.
COLUMNS = ("id", "given", "suggested", "score", "rank", "neighbours")


def audit(
    out: Annotated[Path, typer.Option("--out", help="Where to write the suspects (CSV: id,given,suggested,score,rank,neighbours).", show_default=False)],
    db: Db = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Audit a labelled file (.csv, .jsonl, .parquet) instead of the store (--db is then not read).", show_default=False)
    ] = None,
    taxonomy: Annotated[
        Optional[Path],
        typer.Option("--taxonomy", help="Taxonomy YAML: labels must belong to it; definitions go with each suspect. Default with --db: the store's latest."),
    ] = None,
    engines: Annotated[str, typer.Option("--engines", help="Engines whose out-of-fold probabilities are averaged, comma-separated.")] = "tfidf",
    param: Annotated[
        list[str], typer.Option("--param", help="An engine parameter as ENGINE.NAME=VALUE (JSON value), e.g. tfidf.C=0.1; repeatable.")
    ] = [],
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-fitting folds (stratified by label).")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Folds fitted at once, in separate processes (each holds a copy of the texts).")] = 1,
    top: Annotated[
        Optional[int], typer.Option("--top", min=1, help="Write the top N of the ranking instead of the flagged set.", show_default=False)
    ] = None,
    neighbours: Annotated[int, typer.Option("--neighbours", min=0, help="Nearest labelled records listed as evidence per suspect.")] = 5,
    skip_small: Annotated[
        bool, typer.Option("--skip-small", help="Leave out categories with fewer records than --folds instead of stopping.")
    ] = False,
    to_review: Annotated[
        bool, typer.Option("--to-review", help="Also put the suspects into the store's review queue (reason suspected_mislabel; needs --db).")
    ] = False,
    text_col: TextCol = "text",
    label_col: LabelCol = None,
    id_col: IdCol = None,
    who: Who = None,
) -> None:
    """Find labels that look wrong: out-of-fold probabilities, confident learning, and the evidence for each suspect.

    Each record is scored by models that never saw it (stratified folds); the
    suspects are the records the models are surest carry another category, as
    many as the audit estimates are wrong. Nothing is relabelled: review the
    suspects (--to-review puts them in the store's review queue).
    """
    from ..audit import audit as run_audit
    from ..audit import noise_estimate, records_to_audit
    from ..taxonomy import load_taxonomy

    if to_review and data is not None:
        raise ExperimentError("--to-review writes to the store's review queue: audit the store with --db instead of --data")
    names = [e.strip() for e in engines.split(",") if e.strip()]
    engine_params: dict[str, dict] = {}
    for item in param:
        engine, dot, rest = item.partition(".")
        if not dot or engine not in names:
            raise ExperimentError(f"--param '{item}': expected ENGINE.NAME=VALUE for one of --engines ({', '.join(names)}), e.g. tfidf.C=0.1")
        engine_params.setdefault(engine, {}).update(_params([rest]))
    tax = load_taxonomy(taxonomy) if taxonomy is not None else None
    store = None
    if data is not None:
        records = _read(data, text_col, label_col, id_col, tax, need_labels=False)
    else:
        from ..service import open_store

        store = open_store(_settings(db))  # a --db file that does not exist is refused, not created
        if tax is None:
            tax = store.get_taxonomy()
        records = list(store.records(labelled=True))
    try:
        ids, texts, labels = records_to_audit(records)
        del records
        with reporter("auditing: engine fits", len(names) * folds) as update, resumable("nothing was written; rerun the command"):
            result = run_audit(
                ids, texts, labels, engines=names, folds=folds, seed=seed, engine_params=engine_params, taxonomy=tax, top=top,
                neighbours=neighbours, skip_small=skip_small, jobs=jobs,
                on_progress=lambda done, total, what: update(done, total),
            )
        _write(out, result.suspects)
        estimate = noise_estimate(result, top_pairs=5)
        _summary(result, estimate, out)
        if to_review:
            added = store.add_review_items(
                (
                    {
                        "record_id": s.id, "reason": "suspected_mislabel", "suggested": s.suggested,
                        # The queue shows the lowest score first: give it the probability of the current label
                        # (the audit's order with the default score, where 1 - p reads 1.0 for the surest suspects).
                        "score": s.p_given,
                        "details": {
                            "audit_score": s.score, "rank": s.rank, "given": s.given, "p_given": s.p_given,
                            "p_suggested": s.p_suggested,
                            "neighbours": [{"id": n.id, "label": n.label, "similarity": n.similarity} for n in s.neighbours],
                            "engines": list(result.engines), "folds": result.folds, "seed": result.seed,
                        },
                    }
                    for s in result.suspects
                ),
                who=_who(who),
            )
            console.print(f"{added:,} suspect(s) added to the review queue ({len(result.suspects) - added:,} already open there)")
    finally:
        if store is not None:
            store.close()


def _write(path: Path, suspects) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for s in suspects:
            w.writerow([s.id, s.given, s.suggested, f"{s.score:.6f}", s.rank, s.neighbour_labels])


def _summary(result, estimate, out: Path) -> None:
    if result.skipped:
        err_console.print(
            "[yellow]left out (fewer records than folds): "
            + ", ".join(f"{c} ({n})" for c, n in result.skipped.items())
            + "[/yellow]"
        )
    console.print(
        f"{estimate.records:,} labelled records audited ({', '.join(result.engines)}, {result.folds} folds): "
        f"about {estimate.estimated_wrong:,.0f} labels look wrong ({estimate.noise_rate:.1%}); "
        f"{estimate.flagged:,} flagged; {len(result.suspects):,} written to {out}"
    )
    if estimate.pairs:
        table = Table(title="Most frequent confusions (estimated)")
        for col in ("labelled", "looks like", "about", "flagged"):
            table.add_column(col, justify="right" if col in ("about", "flagged") else "left")
        for p in estimate.pairs:
            table.add_row(p.given, p.suggested, f"{p.estimated:,.0f}", f"{p.flagged:,}")
        console.print(table)
    worst = [c for c in estimate.categories if c.estimated_wrong >= 1][:5]
    if worst:
        table = Table(title="Categories with the most suspect labels")
        for col in ("category", "records", "est. wrong", "rate", "flagged"):
            table.add_column(col, justify="left" if col == "category" else "right")
        for c in worst:
            table.add_row(c.category, f"{c.records:,}", f"{c.estimated_wrong:,.0f}", f"{c.noise_rate:.1%}", f"{c.flagged:,}")
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
