"""`taxonomist train`, `classify`, `evaluate` and `engines list`: thin commands over `taxonomist.service`."""

from __future__ import annotations

import csv
import json
from itertools import chain
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import EngineError, RecordError
from ._console import console, err_console, reporter, resumable
from .records import Create, Db
from .records import parse_day as _day

__all__ = ["register"]

engines_app = typer.Typer(help="The engines this installation has.", no_args_is_help=True)

TextCol = Annotated[str, typer.Option("--text-col", help="Column holding the record text.")]
LabelCol = Annotated[
    Optional[str], typer.Option("--label-col", help="Column holding the category. Default: 'label' or 'category'.")
]
IdCol = Annotated[Optional[str], typer.Option("--id-col", help="Column holding a unique record id. Default: 'id' if present, else derived.")]
Since = Annotated[Optional[str], typer.Option("--since", help="With --db: records dated on or after this day (YYYY-MM-DD).")]
Until = Annotated[Optional[str], typer.Option("--until", help="With --db: records dated on or before this day (YYYY-MM-DD).")]
Source = Annotated[Optional[str], typer.Option("--source", help="With --db: only records of this source.")]


def _engine_help() -> str:
    from ..engines.base import engine_classes

    return ", ".join(engine_classes())


def _read(path: Path, text_col: str, label_col: str | None, id_col: str | None, taxonomy=None, *, need_labels: bool):
    """Records from a file through the project's one reader; rejected rows reported by line and reason (never text)."""
    from ..records import ColumnMapping, read_records

    if not path.is_file():
        raise RecordError(f"input file '{path}' does not exist" if not path.exists() else f"input '{path}' is not a file")
    result = read_records(path, mapping=ColumnMapping(text=text_col, label=label_col, id=id_col), taxonomy=taxonomy)
    if result.rejects:
        err_console.print(f"[yellow]{len(result.rejects)} row(s) of {path} skipped[/yellow]")
        for r in result.rejects[:5]:
            err_console.print(f"  line {r.line}: {r.reason}", highlight=False, markup=False)
    records = result.records
    if need_labels:
        unlabelled = [r for r in records if not r.label]
        if unlabelled:
            raise RecordError(
                f"'{path}': {len(unlabelled)} record(s) have no label (first: id '{unlabelled[0].id}'); "
                "label them, drop them, or name the label column with --label-col"
            )
    if not records:
        raise RecordError(f"'{path}': no usable records; check --text-col and the rejected rows above")
    return records


def _params(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise EngineError(f"--param '{pair}': expected NAME=VALUE, e.g. --param C=0.5")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _settings(db: str | None, create: bool = False):
    from ..service import Settings

    return Settings.from_env(db=db, create=create)


def train(
    engine: Annotated[str, typer.Argument(help="Engine name (see `taxonomist engines list`).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the model (weights + manifest.json).", show_default=False)],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Labelled training file (.csv, .jsonl, .parquet, .835). Or train from --db.")
    ] = None,
    db: Db = None,
    since: Since = None,
    until: Until = None,
    source: Source = None,
    taxonomy: Annotated[
        Optional[Path],
        typer.Option("--taxonomy", help="Taxonomy YAML: labels must be its active codes (default with --db: the store's latest)."),
    ] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = None,
    id_col: IdCol = None,
    calibrate: Annotated[
        float,
        typer.Option("--calibrate", help="Hold out this share of each category to fit a temperature and threshold "
                     "(default with --target-accuracy: 0.1, or cross-fitting for cheap engines, see --calibrate-folds)."),
    ] = 0.0,
    calibrate_folds: Annotated[
        Optional[int],
        typer.Option("--calibrate-folds", min=0, help="Calibrate on out-of-fold predictions of every record instead of a "
                     "hold-out (K extra fits): a larger, steadier share answered at the same promise. 0: hold-out. "
                     "Default: 5 for engines cheap to refit (tfidf, knn, head) when --target-accuracy is given."),
    ] = None,
    target_accuracy: Annotated[
        Optional[float],
        typer.Option("--target-accuracy", "--abstain-accuracy", min=0.0, max=1.0,
                     help="Answer automatically only where answers are at least this accurate on held-out data; the rest "
                     "is NONE (to review). Prints the share answered."),
    ] = None,
    abstain_policy: Annotated[
        str,
        typer.Option("--abstain-policy", help="'answered': accuracy on the answered records (review routing); 'overall': "
                     "accuracy over all records, abstentions counted wrong (out-of-scope detection)."),
    ] = "answered",
    abstain_confidence: Annotated[
        float,
        typer.Option(
            "--abstain-confidence",
            min=0.5,
            max=0.9999,
            help="With --target-accuracy: the held-out accuracy must clear it with this one-sided confidence "
            "(Wilson bound), so that the promise holds on new data too; 0.5 = point estimate.",
        ),
    ] = 0.95,
    param: Annotated[list[str], typer.Option("--param", help="Engine parameter NAME=VALUE (JSON values), repeatable.")] = [],
    stages: Annotated[
        Optional[str], typer.Option("--stages", help="cascade: its stages, cheapest first, e.g. tfidf,head,llm (same as --param stages=[...]).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the calibration hold-out split.")] = 0,
    activate: Annotated[bool, typer.Option("--activate", help="With --db: make the new model the active one.")] = False,
    create: Create = False,
) -> None:
    """Fit ENGINE on a labelled file or on the store's current labels, save it to --out and register it (with --db)."""
    from .. import service
    from ..taxonomy import load_taxonomy

    if abstain_policy not in ("answered", "overall"):
        raise EngineError(f"--abstain-policy '{abstain_policy}': expected 'answered' or 'overall'")
    if (data is None) == (db is None) and data is None:
        raise RecordError("give the training data: --data FILE, or --db STORE to train on its current labels")
    tax = load_taxonomy(taxonomy) if taxonomy else None
    store = service.open_store(_settings(db, create)) if db is not None else None
    try:
        if store is not None and tax is None:
            tax = store.get_taxonomy()
        if data is not None:
            records = _read(data, text_col, label_col, id_col, None, need_labels=True)
        else:
            records = service.store_records(store, since=_day(since, "--since"), until=_day(until, "--until"), source=source)
            err_console.print(f"training data: {len(records)} labelled record(s) from {store}"
                              + (f", {since or '…'} to {until or '…'}" if since or until else ""))
        with reporter(f"training {engine}"), resumable("nothing was saved; rerun the command"):
            result = service.train(
                engine, records, out=out, taxonomy=tax, taxonomy_path=taxonomy,
                params={**_params(param), **({"stages": [s.strip() for s in stages.split(",") if s.strip()]} if stages else {})},
                calibrate=calibrate, calibrate_folds=calibrate_folds, target_accuracy=target_accuracy, policy=abstain_policy,
                confidence_level=abstain_confidence, seed=seed, store=store, activate=activate,
                say=lambda m: err_console.print(m, highlight=False, markup=False),
            )
    finally:
        if store is not None:
            store.close()
    for note in result.notes:
        err_console.print(note, highlight=False, markup=False)
    summary: dict[str, Any] = {"engine": result.engine, "records": result.records, "classes": result.classes,
                               "train_seconds": result.train_seconds, "taxonomy_version": result.taxonomy_version}
    if result.held_out:
        summary["held_out"] = result.held_out
        summary["calibration_method"] = result.calibration_method
    if result.calibration:
        summary.update(result.calibration)
    summary["model_id"] = result.model_id
    summary["out"] = result.out
    if result.registered:
        summary["registered"] = "active" if activate else "candidate"
    console.print_json(json.dumps(summary, default=str))


# ----- classify -------------------------------------------------------------------------------
OUT_COLUMNS = ["id", "category", "confidence", "reason", "alternatives", "model_id", "taxonomy_version"]


def _prepare_output(output: Path, model_id: str) -> set[str]:
    """Ids already written to `output` by the same model (resume); a cut last line is truncated away.

    Refuses an output written by another model: two models in one file cannot be told apart later.
    """
    if not output.exists() or output.stat().st_size == 0:
        return set()
    data = output.read_bytes()
    if not data.endswith(b"\n"):
        # An interrupted write left half a line: drop it, that record is redone.
        cut = data.rfind(b"\n") + 1
        with output.open("r+b") as f:
            f.truncate(cut)
        err_console.print(f"{output}: removed a partial last line left by an interruption", highlight=False, markup=False)
    ids: set[str] = set()
    models: set[str] = set()
    if output.suffix in (".jsonl", ".ndjson"):
        with output.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    ids.add(str(row.get("id")))
                    models.add(str(row.get("model_id", "")))
    else:
        with output.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames and "model_id" not in reader.fieldnames:
                raise RecordError(f"'{output}' is not a predictions file of taxonomist (no model_id column); choose another --output")
            for row in reader:
                if row.get("id") and row.get("category"):
                    ids.add(row["id"])
                    models.add(row.get("model_id") or "")
    others = sorted(m for m in models if m and m != model_id)
    if others:
        raise RecordError(
            f"'{output}' holds predictions of model {others[0]}, not {model_id}; resuming would mix two models in one "
            "file: write to another --output, or delete the file to start over"
        )
    return ids


def classify(
    output: Annotated[
        Path,
        typer.Option("--output", help="Predictions: .csv or .jsonl. If it exists, records already in it are skipped (resume). "
                     "With --executor ray: a new folder of Parquet parts.", show_default=False),
    ],
    model: Annotated[
        str, typer.Option("--model", help="A model directory, or with --db a registered model id or 'active'.")
    ] = "active",
    input: Annotated[
        Optional[Path], typer.Option("--input", help="Records to classify (.csv, .jsonl, .parquet, .835; with --executor ray "
                                     "a .csv/.jsonl/.parquet file or a folder of them). Default with --db: the store's records.")
    ] = None,
    db: Db = None,
    since: Since = None,
    until: Until = None,
    source: Source = None,
    text_col: TextCol = "text",
    id_col: IdCol = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Records per engine call; each batch is written before the next.")] = 256,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Alternatives written per record.")] = 3,
    review: Annotated[bool, typer.Option("--review/--no-review", help="With --db: put NONE decisions in the review queue.")] = True,
    executor: Annotated[
        str, typer.Option("--executor", help="'inprocess' (streams in this process), or 'ray' (Ray Data: a local Ray, or the "
                          "cluster at --address; needs taxonomist[ray]).")
    ] = "inprocess",
    address: Annotated[
        Optional[str], typer.Option("--address", help="With --executor ray: 'auto' (the cluster this machine is part of), "
                                    "ray://HOST:PORT (a Ray client server), or none for a local Ray on this machine.")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="With --executor ray: at most this many model copies (actors); "
                                    "default: the cluster's CPUs / --cpus-per-worker.")
    ] = None,
    cpus_per_worker: Annotated[
        float, typer.Option("--cpus-per-worker", min=0.1, help="With --executor ray: CPUs each model copy takes.")
    ] = 1.0,
    create: Create = False,
) -> None:
    """Classify records into --output in batches, resumably; with --db every decision goes to the store's decision log.

    Decisions are valid in the store's current taxonomy: a model trained before
    a merge or rename answers the new code, one trained before a split or a
    retirement answers NONE (to review) for the affected codes, and a warning
    names both versions. Records are read and written as they come: memory
    does not grow with the input.
    """
    from .. import service

    if executor not in ("inprocess", "ray"):
        raise EngineError(f"--executor '{executor}': expected 'inprocess' or 'ray'")
    if input is None and db is None:
        raise RecordError("give the records: --input FILE, or --db STORE to classify its records")
    if executor == "ray":
        if input is None:
            raise RecordError("--executor ray reads --input (a file or a folder); export the store's records first "
                              "(`taxonomist records export --out records.parquet`)")
        from ..ray_classify import classify_on_ray

        store = service.open_store(_settings(db, create)) if db is not None else None
        try:
            loaded = service.load_model(model, store)
            with reporter("classifying on Ray") as update, resumable(
                f"the parts written so far are in {output}" + (" and the store's decision log" if store else "")
                + "; a Ray run does not resume: delete the folder (or choose another --output) and rerun"
            ):
                result = classify_on_ray(
                    loaded, input, output, store=store, address=address, text_col=text_col, id_col=id_col,
                    batch_size=batch_size, top_k=top_k, to_review=review, workers=workers, cpus_per_worker=cpus_per_worker,
                    progress=lambda d: update(d, None), say=lambda m: err_console.print(m, highlight=False, markup=False),
                    warn=lambda m: err_console.print(f"[yellow]warning:[/yellow] {m}", highlight=False),
                )
        finally:
            if store is not None:
                store.close()
        _said(result, output)
        return
    store = service.open_store(_settings(db, create)) if db is not None else None
    try:
        loaded = service.load_model(model, store)
        done = _prepare_output(output, loaded.model_id)
        if input is not None:
            from ..records import count_rows

            skipped = _Skipped(input)
            records = skipped.records(text_col, id_col)
            total = count_rows(input)  # after the check above: a scan of the file, for progress
        else:
            records = store.records(labelled=None, since=_day(since, "--since"), until=_day(until, "--until"), source=source)
            total = None
        # The first record before anything is written: a file with none is refused as before, leaving no output.
        first = next(records, None)
        if first is None and input is not None:
            skipped.report()
            raise RecordError(f"'{input}': no usable records; check --text-col and the rejected rows above")
        if done:
            err_console.print(f"resuming: {len(done)}" + (f" of {total}" if total else "") + f" records already in {output}")
        todo = (r for r in chain([first] if first is not None else [], records) if r.id not in done)
        _run_classify(loaded, todo, output, store, batch_size, top_k, review, total=total, already=len(done))
        if input is not None:
            skipped.report()
    finally:
        if store is not None:
            store.close()


class _Skipped:
    """A classify input read as it comes; rows that are not records are counted and the first few shown at the end."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise RecordError(f"input file '{path}' does not exist" if not path.exists() else f"input '{path}' is not a file")
        self.path, self.count, self.first = path, 0, []

    def records(self, text_col: str, id_col: str | None):
        from ..records import ColumnMapping, Reject, iter_records

        for item in iter_records(self.path, mapping=ColumnMapping(text=text_col, id=id_col), keep_raw=False):
            if isinstance(item, Reject):
                self.count += 1
                if len(self.first) < 5:
                    self.first.append(item)
                continue
            yield item

    def report(self) -> None:
        if self.count:
            err_console.print(f"[yellow]{self.count} row(s) of {self.path} skipped[/yellow]")
            for r in self.first:
                err_console.print(f"  line {r.line}: {r.reason}", highlight=False, markup=False)


def _run_classify(loaded, todo, output: Path, store, batch_size: int, top_k: int, review: bool, *,
                  total: int | None, already: int) -> None:
    from .. import service

    jsonl = output.suffix in (".jsonl", ".ndjson")
    new_file = not output.exists() or output.stat().st_size == 0
    output.parent.mkdir(parents=True, exist_ok=True)
    written = [already]
    with output.open("a", encoding="utf-8", newline="") as f, reporter("classifying", total) as update, resumable(
        lambda: f"{written[0]:,}" + (f" of {total:,}" if total else "") + f" records are in {output}"
        + (" and the store's decision log" if store is not None else "") + "; rerun the same command to resume"
    ):
        writer = None if jsonl else csv.DictWriter(f, fieldnames=OUT_COLUMNS)
        if writer is not None and new_file:
            writer.writeheader()

        def write(batch, preds) -> None:
            for rec, p in zip(batch, preds):
                row = service.output_row(rec.id, p)
                if jsonl:
                    f.write(json.dumps(row) + "\n")
                else:
                    row["alternatives"] = ";".join(f"{a['category']}:{a['score']}" for a in row["alternatives"])
                    writer.writerow(row)
            f.flush()
            written[0] += len(batch)

        result = service.classify(
            loaded.engine, todo, store=store, batch_size=batch_size, top_k=top_k, to_review=review, total=total,
            on_batch=write, progress=lambda d, t: update(already + d, t),
            warn=lambda m: err_console.print(f"[yellow]warning:[/yellow] {m}", highlight=False),
        )
    _said(result, output)


def _said(result, output: Path) -> None:
    from ..prediction import Reason

    mapped = result.reasons.get(Reason.MAPPED, 0)
    reasons = ", ".join(f"{k} {v}" for k, v in result.reasons.most_common() if k != Reason.MAPPED) or "none"
    err_console.print(
        f"wrote {result.records} prediction(s) to {output}: {result.answered} answered ({result.coverage:.1%})"
        + (f", {mapped} of them mapped to a code's successor" if mapped else "")
        + f"; {result.records - result.answered} NONE ({reasons})"
        + (f"; decision log run {result.run_id}" if result.run_id else "")
        + (f"; {result.skipped} input row(s) skipped (no id or no text)" if result.skipped else ""),
        highlight=False,
    )


# ----- evaluate -------------------------------------------------------------------------------
def evaluate(
    model: Annotated[str, typer.Option("--model", help="A model directory, or with --db a registered id or 'active'.")] = "active",
    data: Annotated[Optional[Path], typer.Option("--data", help="Labelled test file (.csv, .jsonl, .parquet). Or --db.")] = None,
    db: Db = None,
    since: Since = None,
    until: Until = None,
    source: Source = None,
    text_col: TextCol = "text",
    label_col: LabelCol = None,
    id_col: IdCol = None,
    oos_label: Annotated[
        Optional[str], typer.Option("--oos-label", help="Label of out-of-scope rows (e.g. 'oos'): reports in-scope accuracy and oos recall.")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON here.")] = None,
) -> None:
    """Coverage, accuracy on the answered records and overall, abstain reasons, macro-F1, ECE and confusions."""
    from .. import service

    if data is None and db is None:
        raise RecordError("give labelled records: --data FILE, or --db STORE (its current labels)")
    store = service.open_store(_settings(db)) if db is not None else None
    try:
        loaded = service.load_model(model, store)
        if data is not None:
            records = _read(data, text_col, label_col, id_col, need_labels=True)
        else:
            records = service.store_records(store, since=_day(since, "--since"), until=_day(until, "--until"), source=source)
            if not records:
                raise RecordError("no labelled records in the store for those filters")
        taxonomy = store.get_taxonomy() if store is not None else None
        with reporter("evaluating", len(records)) as update:
            ev = service.evaluate(loaded.engine, records, taxonomy=taxonomy, oos_label=oos_label, progress=update)
    finally:
        if store is not None:
            store.close()
    report = ev.to_dict()
    name = data.name if data is not None else f"store records ({since or '…'} to {until or '…'})"
    table = Table(title=f"{loaded.engine.name} on {name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("records", ev.records), ("coverage (answered)", ev.coverage),
            ("accuracy on answered", ev.answered_accuracy if ev.answered_accuracy is not None else "n/a"),
            ("accuracy overall (NONE = wrong)", ev.accuracy), ("top-1 accuracy (no abstention)", ev.top1_accuracy),
            ("macro_f1", ev.macro_f1), ("ece", ev.ece if ev.ece is not None else "n/a")]
    for key in ("in_scope_accuracy", "oos_recall"):
        if key in report:
            rows.append((key, report[key]))
    for key, v in rows:
        table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    if ev.abstain_reasons:
        console.print("NONE by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.abstain_reasons.items())), highlight=False)
    if ev.top_confusions:
        conf_table = Table(title="top confusions")
        for col in ("true", "predicted", "count"):
            conf_table.add_column(col)
        for row in ev.top_confusions:
            conf_table.add_row(row["true"], row["predicted"], str(row["count"]))
        console.print(conf_table)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")


# ----- engines list -------------------------------------------------------------------------------
@engines_app.command("list")
def engines_list(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every engine (built in or added by another package): family, extra, cost, and whether it can run here."""
    from ..engines.base import engine_classes
    from ..errors import MissingExtraError

    rows = []
    for name, cls in engine_classes().items():
        available = True
        try:
            from ..compare.demo import _check_extra

            _check_extra(cls)
        except MissingExtraError:
            available = False
        rows.append({"name": name, "label": cls.label or name, "family": cls.family, "extra": cls.extra or "",
                     "cost": cls.cost_kind, "available": available, "module": cls.__module__})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="engines")
    for col in ("name", "family", "label", "extra", "cost", "available"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], r["label"], r["extra"] or "-", r["cost"], "yes" if r["available"] else "no")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("classify")(classify)
    app.command("evaluate")(evaluate)
    app.add_typer(engines_app, name="engines")
