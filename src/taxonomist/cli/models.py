"""`taxonomist models ...` (the registry: list, show, activate, register) and `taxonomist decisions ...` (the decision log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._console import console
from .records import Db, open_store

__all__ = ["register"]

models_app = typer.Typer(help="Models registered in the store: which exist, which one is active.", no_args_is_help=True)
decisions_app = typer.Typer(help="The decision log: every category or NONE a model gave a record, and why.", no_args_is_help=True)


def _metric(m: dict, key: str) -> str:
    v = (m.get("metrics") or {}).get(key)
    return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))


@models_app.command("list")
def models_list(
    db: Db = None,
    engine: Annotated[Optional[str], typer.Option("--engine", help="Only this engine.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Registered models, oldest first: id, engine, status, taxonomy version, held-out coverage and accuracy."""
    with open_store(db) as store:
        rows = store.models(engine)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in m.items() if k != "manifest"} for m in rows], indent=2, default=str))
        return
    if not rows:
        console.print("no models registered; train one with `taxonomist train ENGINE --db D --out DIR`")
        return
    table = Table(title="models")
    for col in ("id", "engine", "status", "taxonomy", "records", "threshold", "coverage", "acc. answered", "created"):
        table.add_column(col)
    for m in rows:
        table.add_row(m["id"], m["engine"], m["status"], m["taxonomy_version"] or "-", _metric(m, "records"),
                      _metric(m, "threshold"), _metric(m, "coverage"), _metric(m, "answered_accuracy"),
                      m["created"].strftime("%Y-%m-%d %H:%M") if m["created"] else "-")
    console.print(table)


@models_app.command("show")
def models_show(
    model_id: Annotated[str, typer.Argument(help="Model id (or a unique prefix), or 'active'.")],
    db: Db = None,
) -> None:
    """A model's registry entry and manifest (engine, parameters, classes, taxonomy version, data hash, files)."""
    with open_store(db) as store:
        m = store.model(model_id)
    typer.echo(json.dumps(m, indent=2, default=str))


@models_app.command("activate")
def models_activate(
    model_id: Annotated[str, typer.Argument(help="Model id (or a unique prefix).")],
    db: Db = None,
) -> None:
    """Make a model the active one: `classify --model active` and the API use it; the previous one is retired."""
    with open_store(db) as store:
        m = store.model(model_id)
        previous = store.activate_model(m["id"])
    console.print(f"{m['id']} is active" + (f"; {previous} retired" if previous else ""))


@models_app.command("register")
def models_register(
    directory: Annotated[Path, typer.Argument(help="A saved model directory.")],
    db: Db = None,
    activate: Annotated[bool, typer.Option("--activate", help="Make it the active model.")] = False,
) -> None:
    """Register a saved model directory (trained elsewhere, or moved) in the store."""
    from ..engines import load_engine

    engine = load_engine(directory)
    with open_store(db) as store:
        model_id = store.save_model(engine.manifest(), directory.resolve(), status="active" if activate else None)
    console.print(f"registered {model_id}" + (" (active)" if activate else ""))


@decisions_app.command("show")
def decisions_show(
    record_id: Annotated[str, typer.Argument(help="Record id.")],
    db: Db = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trail as JSON.")] = False,
) -> None:
    """A record's full trail: every decision (model, taxonomy version, category or NONE, reason, confidence,
    alternatives, evidence as record ids), and its labels."""
    with open_store(db) as store:
        decisions = store.predictions(record_id=record_id)
        labels = store.label_history(record_id)
    trail = [_decision(d) for d in decisions]
    if as_json:
        typer.echo(json.dumps({"record_id": record_id, "decisions": trail, "labels": labels}, indent=2, default=str))
        return
    if not trail and not labels:
        console.print(f"no decisions or labels for record '{record_id}'")
        return
    table = Table(title=f"decisions for {record_id}")
    for col in ("time", "model", "taxonomy", "category", "reason", "confidence", "alternatives", "evidence"):
        table.add_column(col, overflow="fold")
    for d in trail:
        table.add_row(str(d["time"])[:19], d["model_id"], d["taxonomy_version"] or "-", d["category"], d["reason"] or "-",
                      f"{d['confidence']:.3f}", ", ".join(f"{a['category']}:{a['score']:.2f}" for a in d["alternatives"][:3]),
                      ", ".join(e.get("ref") or e.get("category", "") for e in d["evidence"][:5]))
    console.print(table)
    for lab in labels:
        console.print(f"label {lab['category']} by {lab['who']} at {str(lab['labelled_at'])[:19]} ({lab['reason']})"
                      + ("" if lab["is_current"] else " [replaced]"), highlight=False)


def _decision(d: dict) -> dict:
    return {
        "record_id": d["record_id"], "model_id": d["model_id"], "taxonomy_version": d.get("taxonomy_version"),
        "category": d["category"], "reason": d.get("reason") or "", "confidence": d["confidence"],
        "alternatives": d.get("alternatives") or [], "evidence": d.get("evidence") or [], "route": d.get("route"),
        "extra": d.get("extra") or {}, "run_id": d.get("run_id"), "time": d["created"],
    }


@decisions_app.command("export")
def decisions_export(
    out: Annotated[Path, typer.Option("--out", help="Where to write: .jsonl or .csv.", show_default=False)],
    db: Db = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only decisions of this model id.")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only decisions of this classify run.")] = None,
    reason: Annotated[Optional[str], typer.Option("--reason", help="Only decisions with this reason (e.g. below_threshold).")] = None,
) -> None:
    """Write the decision log (never record text) as JSONL or CSV."""
    import csv

    n = 0
    with open_store(db) as store, out.open("w", encoding="utf-8", newline="") as f:
        rows = (_decision(d) for d in store.iter_predictions(model, run, reason=reason))
        if out.suffix == ".csv":
            cols = ["record_id", "model_id", "taxonomy_version", "category", "reason", "confidence", "alternatives", "evidence",
                    "route", "run_id", "time"]
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for d in rows:
                w.writerow({**d, "alternatives": json.dumps(d["alternatives"]), "evidence": json.dumps(d["evidence"])})
                n += 1
        else:
            for d in rows:
                f.write(json.dumps(d, default=str) + "\n")
                n += 1
    console.print(f"wrote {n} decision(s) to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(decisions_app, name="decisions")
