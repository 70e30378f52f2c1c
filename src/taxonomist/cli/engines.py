"""`taxonomist train`, `classify` and `evaluate`: fit an engine on a labelled file, apply it, measure it."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import EngineError, RecordError
from ._console import console, err_console, progress

__all__ = ["register"]

TextCol = Annotated[str, typer.Option("--text-col", help="Column holding the record text.")]
LabelCol = Annotated[
    Optional[str], typer.Option("--label-col", help="Column holding the category. Default: 'label' or 'category'.")
]
IdCol = Annotated[Optional[str], typer.Option("--id-col", help="Column holding a unique record id. Default: 'id' if present, else derived.")]


def _read(path: Path, text_col: str, label_col: str | None, id_col: str | None, taxonomy=None, *, need_labels: bool):
    """Records from a CSV/JSONL/Parquet file; rejected rows are reported by line and reason (never text)."""
    from ..records import ColumnMapping, read_records

    result = read_records(path, mapping=ColumnMapping(text=text_col, label=label_col, id=id_col), taxonomy=taxonomy)
    if result.rejects:
        err_console.print(f"[yellow]{len(result.rejects)} row(s) of {path} skipped[/yellow]")
        for r in result.rejects[:5]:
            err_console.print(f"  line {r.line}: {r.reason}")
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


def _split(records, fraction: float, seed: int):
    """Stratified hold-out: about `fraction` of each category (at least one, if it has two or more)."""
    by_label: dict[str, list] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    rng = random.Random(seed)
    fit, held = [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        n = int(round(len(group) * fraction)) if len(group) > 1 else 0
        n = max(n, 1) if len(group) > 1 else 0
        held += group[:n]
        fit += group[n:]
    return fit, held


def train(
    engine: Annotated[str, typer.Argument(help="Engine name: tfidf, knn, head, finetune, ensemble, llm.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Labelled training file (.csv, .jsonl, .parquet).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the model (weights + manifest.json).", show_default=False)],
    taxonomy: Annotated[
        Optional[Path],
        typer.Option("--taxonomy", help="Taxonomy YAML: labels must be its active codes; knn/llm also use its definitions."),
    ] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = None,
    id_col: IdCol = None,
    calibrate: Annotated[
        float,
        typer.Option("--calibrate", help="Hold out this share of each category to fit a temperature (and threshold). 0: none."),
    ] = 0.0,
    abstain_accuracy: Annotated[
        Optional[float],
        typer.Option(
            "--abstain-accuracy",
            help="With --calibrate: choose the highest abstention threshold that keeps held-out accuracy at least this (e.g. 0.95).",
        ),
    ] = None,
    abstain_confidence: Annotated[
        float,
        typer.Option(
            "--abstain-confidence",
            min=0.5,
            max=0.9999,
            help="With --abstain-accuracy: the held-out accuracy must clear it with this one-sided confidence "
            "(Wilson bound), so that the promise holds on new data too; 0.5 = point estimate.",
        ),
    ] = 0.95,
    param: Annotated[list[str], typer.Option("--param", help="Engine parameter NAME=VALUE (JSON values), repeatable.")] = [],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the calibration hold-out split.")] = 0,
) -> None:
    """Fit ENGINE on a labelled file and save it to --out (no pickle: weights + manifest)."""
    from ..engines import create_engine
    from ..engines.calibration import calibrate as fit_calibration
    from ..taxonomy import load_taxonomy

    tax = load_taxonomy(taxonomy) if taxonomy else None
    records = _read(data, text_col, label_col, id_col, tax, need_labels=True)
    params = _params(param)
    model = create_engine(engine, **params)
    if tax is not None and "taxonomy" in model.get_params():
        model.set_params(taxonomy=str(taxonomy))
    fit_records, held = _split(records, calibrate, seed) if calibrate > 0 else (records, [])
    err_console.print(f"fitting {engine} on {len(fit_records)} records, {len({r.label for r in fit_records})} categories")
    with progress(transient=True) as bar:
        bar.add_task(f"training {engine}", total=None)
        model.fit([r.text for r in fit_records], [r.label for r in fit_records])
    if tax is not None and not getattr(model, "taxonomy_version_", ""):
        model.taxonomy_version_ = tax.version_id
    summary = {"engine": engine, "records": len(fit_records), "classes": len(model.classes_), "train_seconds": round(model.train_seconds_, 2)}
    if held:
        threshold = "auto" if abstain_accuracy is not None else None
        cal = fit_calibration(model, [r.text for r in held], [r.label for r in held], threshold=threshold,
                              min_accuracy=abstain_accuracy or 0.95,
                              confidence_level=abstain_confidence)
        summary.update(
            held_out=len(held), temperature=round(cal.temperature, 4), ece_before=round(cal.ece_before, 4),
            ece_after=round(cal.ece_after, 4), threshold=cal.threshold,
        )
    model.save(out)
    summary["model_id"] = model.model_id
    summary["out"] = str(out)
    console.print_json(json.dumps(summary))


def _done_ids(output: Path) -> set[str]:
    if not output.exists() or output.stat().st_size == 0:
        return set()
    if output.suffix in (".jsonl", ".ndjson"):
        ids = set()
        with output.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        ids.add(str(json.loads(line)["id"]))
                    except (json.JSONDecodeError, KeyError):
                        continue  # a line cut by an interruption: that record is redone
        return ids
    with output.open(encoding="utf-8", newline="") as f:
        return {row["id"] for row in csv.DictReader(f) if row.get("id") and row.get("category")}


OUT_COLUMNS = ["id", "category", "confidence", "alternatives", "model_id"]


def classify(
    model: Annotated[Path, typer.Option("--model", help="Directory of a saved model (from `taxonomist train`).", show_default=False)],
    input: Annotated[Path, typer.Option("--input", help="Records to classify (.csv, .jsonl, .parquet).", show_default=False)],
    output: Annotated[
        Path,
        typer.Option("--output", help="Predictions: .csv or .jsonl. If it exists, records already in it are skipped (resume).", show_default=False),
    ],
    text_col: TextCol = "text",
    id_col: IdCol = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Records per engine call; each batch is written before the next.")] = 256,
    top_k: Annotated[int, typer.Option("--top-k", help="Alternatives written per record.")] = 3,
) -> None:
    """Classify every record of --input into --output, in batches, resumably."""
    from ..engines import load_engine

    engine = load_engine(model)
    records = _read(input, text_col, None, id_col, need_labels=False)
    done = _done_ids(output)
    todo = [r for r in records if r.id not in done]
    if done:
        err_console.print(f"resuming: {len(records) - len(todo)} of {len(records)} records already in {output}")
    jsonl = output.suffix in (".jsonl", ".ndjson")
    new_file = not output.exists() or output.stat().st_size == 0
    output.parent.mkdir(parents=True, exist_ok=True)
    model_id = engine.model_id
    import numpy as np

    with output.open("a", encoding="utf-8", newline="") as f, progress() as bar:
        writer = None if jsonl else csv.DictWriter(f, fieldnames=OUT_COLUMNS)
        if writer is not None and new_file:
            writer.writeheader()
        task = bar.add_task("classifying", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            proba = engine.predict_proba([r.text for r in batch])
            threshold = engine._abstain_threshold() or 0.0
            for rec, row in zip(batch, proba):
                order = np.argsort(-row)[:top_k]
                best = int(order[0])
                category = str(engine.classes_[best]) if row[best] >= threshold else "NONE"
                alts = [(str(engine.classes_[i]), round(float(row[i]), 4)) for i in order]
                out = {"id": rec.id, "category": category, "confidence": round(float(row[best]), 4), "model_id": model_id}
                if jsonl:
                    f.write(json.dumps({**out, "alternatives": [{"category": c, "score": s} for c, s in alts]}) + "\n")
                else:
                    writer.writerow({**out, "alternatives": ";".join(f"{c}:{s}" for c, s in alts)})
            f.flush()
            bar.advance(task, len(batch))
    err_console.print(f"wrote {len(todo)} prediction(s) to {output}")


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Directory of a saved model.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Labelled test file (.csv, .jsonl, .parquet).", show_default=False)],
    text_col: TextCol = "text",
    label_col: LabelCol = None,
    id_col: IdCol = None,
    oos_label: Annotated[
        Optional[str], typer.Option("--oos-label", help="Label of out-of-scope rows (e.g. 'oos'): reports in-scope accuracy and oos recall.")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON here.")] = None,
) -> None:
    """Accuracy, macro-F1, calibration error (ECE), abstain rate and top confusions of a saved model."""
    import numpy as np

    from .. import metrics
    from ..engines import load_engine

    engine = load_engine(model)
    records = _read(data, text_col, label_col, id_col, need_labels=True)
    texts, truth = [r.text for r in records], [r.label for r in records]
    proba = engine.predict_proba(texts)
    pred = engine.predict(texts)
    conf = proba.max(axis=1)
    top = engine.classes_[proba.argmax(axis=1)]
    known = np.array([t != oos_label for t in truth])
    report = {
        "model_id": engine.model_id,
        "records": len(records),
        "accuracy": metrics.accuracy(truth, pred),
        "macro_f1": metrics.macro_f1(truth, pred),
        "ece": metrics.ece(conf[known], (top == np.asarray(truth, dtype=object))[known]),
        "abstain_rate": metrics.abstain_rate(pred),
        "top_confusions": [{"true": a, "predicted": b, "count": c} for a, b, c in metrics.top_confusions(truth, pred, 10)],
    }
    if oos_label:
        report.update(metrics.oos_metrics(truth, pred, oos_label=oos_label))
    table = Table(title=f"{engine.name} on {data.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("records", "accuracy", "macro_f1", "ece", "abstain_rate", "in_scope_accuracy", "oos_recall"):
        if key in report:
            v = report[key]
            table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    if report["top_confusions"]:
        conf_table = Table(title="top confusions")
        for col in ("true", "predicted", "count"):
            conf_table.add_column(col)
        for row in report["top_confusions"]:
            conf_table.add_row(row["true"], row["predicted"], str(row["count"]))
        console.print(conf_table)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("classify")(classify)
    app.command("evaluate")(evaluate)
