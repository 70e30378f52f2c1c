"""The labelled history a comparison runs on: texts, labels, optional months, as aligned arrays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExperimentError

__all__ = ["Dataset", "load_dataset", "compose_text"]

@dataclass
class Dataset:
    """Aligned arrays: `ids`, `texts` (engine input), `labels`, and `months` (1-based) when dated."""

    name: str
    ids: np.ndarray
    texts: np.ndarray
    labels: np.ndarray
    months: np.ndarray | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.texts) != n or len(self.labels) != n or (self.months is not None and len(self.months) != n):
            raise ExperimentError(f"dataset '{self.name}': ids, texts, labels and months must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dated(self) -> bool:
        return self.months is not None

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def truth(self) -> dict[str, str]:
        return dict(zip(self.ids.tolist(), self.labels.tolist()))


def compose_text(row: dict[str, Any], text_fields: Sequence[str]) -> str:
    """Engine input: the listed structured fields as `name=value` tokens, then the free text."""
    parts = []
    for name in text_fields:
        value = row.get(name)
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, (list, tuple, np.ndarray)):
            value = " ".join(str(v) for v in value)
        parts.append(f"{name}={value}")
    text = str(row.get("text") or "")
    return (" ".join(parts) + " | " + text) if parts else text


def _months_from_dates(dates: list[Any], where: str) -> np.ndarray:
    parsed = []
    for i, d in enumerate(dates):
        if isinstance(d, dt.datetime):
            d = d.date()
        if isinstance(d, str):
            try:
                d = dt.date.fromisoformat(d[:10])
            except ValueError:
                raise ExperimentError(f"{where}: row {i + 1} has date {d!r}; expected YYYY-MM-DD") from None
        if not isinstance(d, dt.date):
            raise ExperimentError(f"{where}: row {i + 1} has no usable date; give every row a date or drop the date column")
        parsed.append(d)
    first = min(parsed)
    return np.array([(d.year - first.year) * 12 + d.month - first.month + 1 for d in parsed], dtype=int)


def load_dataset(
    path: str | Path,
    *,
    text_fields: Sequence[str] | None = None,
    label_column: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Read a labelled CSV, JSONL or Parquet file with at least `text` and `label` (or `category`) columns.

    Months come from a `month` column (1-based) or, failing that, a `date`
    column (months since the earliest date); a file with neither is undated and
    the time-based experiments are skipped. `text_fields` lists structured
    columns to prepend to the text (default none: the `text` column is the
    engine input, as the denial generator writes it with its codes).
    """
    from ..errors import RecordError
    from ..records import ColumnMapping, read_records

    p = Path(path)
    if not p.is_file():
        raise ExperimentError(f"data file '{p}' does not exist")
    try:
        result = read_records(p, mapping=ColumnMapping(label=label_column))
    except RecordError as exc:
        raise ExperimentError(str(exc)) from None
    if not result.records:
        reasons = f" ({len(result.rejects)} rejected, first: line {result.rejects[0].line}: {result.rejects[0].reason})" if result.rejects else ""
        raise ExperimentError(f"data file '{p}' has no usable rows{reasons}; a comparison needs labelled records")
    unlabelled = [r for r in result.records if not r.label]
    if len(unlabelled) == len(result.records):
        found = ["text", *result.records[0].fields]
        raise ExperimentError(
            f"data file '{p}' has no '{label_column or 'label'}' column (found: {', '.join(found)}); "
            f"a comparison needs columns text,{label_column or 'label'}"
        )
    if unlabelled:
        raise ExperimentError(
            f"'{p}': {len(unlabelled)} record(s) have no label (first: id '{unlabelled[0].id}'); every record in a "
            "comparison needs one (name the column with --label-col)"
        )
    text_fields = list(text_fields or ())
    rows = [{**r.fields, "text": r.text, "date": r.date} for r in result.records]
    columns = set(rows[0]) | {"date"} if any(r.date for r in result.records) else set(rows[0]) - {"date"}
    ids = [r.id for r in result.records]
    texts = [compose_text(row, text_fields) for row in rows]
    labels = [str(r.label).strip() for r in result.records]
    months = None
    if all("month" in r for r in rows):
        try:
            months = np.array([int(r["month"]) for r in rows], dtype=int)
        except (TypeError, ValueError):
            raise ExperimentError(f"'{p}': column 'month' must hold whole numbers (1 = first month)") from None
    elif "date" in columns:
        months = _months_from_dates([r.get("date") for r in rows], str(p))
    extra_cols: dict[str, Any] = {}
    if rows and all("text_determines" in r for r in rows):
        # Generated data records whether a record's text determines its category: the report's accuracy ceiling.
        extra_cols["text_determines"] = np.array([str(r["text_determines"]).strip().lower() in ("true", "1") for r in rows], dtype=bool)
        extra_cols["pattern"] = np.array(["|".join(str(r.get(c, "")) for c in ("group_code", "carc", "rarcs", "payer")) for r in rows],
                                         dtype=object)
    return Dataset(
        name=name or p.stem,
        ids=np.array(ids, dtype=object),
        texts=np.array(texts, dtype=object),
        labels=np.array(labels, dtype=object),
        months=months,
        source=str(p),
        extra={"text_fields": list(text_fields), "rejected": len(result.rejects),
               "rejects": [{"line": r.line, "reason": r.reason} for r in result.rejects[:20]], **extra_cols},
    )
