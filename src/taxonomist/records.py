"""Records and their import from CSV, JSONL, Parquet (and any registered format) with row-level rejects.

A file is read row by row. Each row is mapped onto a `Record` through a
`ColumnMapping`; a row that cannot become a valid record (missing text, unknown
category, bad date, bytes that are not UTF-8, an id seen earlier in the file,
a malformed line) becomes a `Reject` carrying its physical line number and the
reason. Every valid row is kept: one bad row never loses the file.

Formats are looked up in a registry (`FORMATS`) mapping a name to a reader
``reader(path) -> Iterator[(position, dict | error)]``, where an error is an
exception or a message string for a row that could not be parsed at all. New
formats (the X12 835 reader) plug in with `register_format`.

Record text is protected health information: no message built here contains it.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from .errors import ColumnMappingError, RecordError

if TYPE_CHECKING:
    from .taxonomy import Taxonomy

__all__ = [
    "Record",
    "ColumnMapping",
    "Reject",
    "ImportResult",
    "FORMATS",
    "RowReader",
    "register_format",
    "detect_format",
    "read_records",
    "iter_records",
    "row_to_record",
    "write_rejects",
    "RejectsFile",
    "derive_id",
    "text_hash",
    "count_rows",
    "write_records",
]


@dataclass(frozen=True)
class Record:
    """One free-text business record, optionally labelled with a category code.

    `fields` holds the structured columns (payer, CARC, CPT, network, ...), JSON-able.
    """

    id: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    source: str | None = None
    date: dt.date | None = None
    label: str | None = None

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


#: The columns looked for when a role is not named, in order of preference.
_USUAL_COLUMNS = {"id": ("id",), "label": ("label", "category"), "date": ("date",), "source": ("source",)}


@dataclass(frozen=True)
class ColumnMapping:
    """Which input column feeds which part of a `Record`.

    A column left as None is looked for under its usual name (`id`, `label` or
    `category`, `date`, `source`) and skipped when the file has none. A column
    named explicitly must exist, or the whole file is refused. `fields` is a
    list of columns to keep as structured fields, or "rest" for every column
    not used otherwise.
    """

    text: str = "text"
    id: str | None = None
    label: str | None = None
    date: str | None = None
    source: str | None = None
    fields: Sequence[str] | Literal["rest"] = "rest"

    def resolve(self, columns: Iterable[str], *, where: str) -> dict[str, str | None]:
        """Map each role to a column present in `columns`; raise when an explicit one is absent."""
        present = list(dict.fromkeys(columns))
        have = set(present)
        out: dict[str, str | None] = {}
        if self.text not in have:
            raise ColumnMappingError(
                f"{where}: text column '{self.text}' not found (columns: {_list(present)}); "
                "name the right one with --text-col"
            )
        out["text"] = self.text
        for role, names in _USUAL_COLUMNS.items():
            chosen = getattr(self, role)
            if chosen is not None:
                if chosen not in have:
                    raise ColumnMappingError(
                        f"{where}: {role} column '{chosen}' not found (columns: {_list(present)}); "
                        f"fix --{role}-col or leave it out"
                    )
                out[role] = chosen
            else:
                out[role] = next((n for n in names if n in have), None)
        if self.fields != "rest":
            missing = [c for c in self.fields if c not in have]
            if missing:
                raise ColumnMappingError(f"{where}: field column(s) {_list(missing)} not found (columns: {_list(present)})")
        return out

    def field_columns(self, columns: Iterable[str]) -> list[str]:
        """The columns kept as structured fields."""
        present = list(dict.fromkeys(columns))
        roles = {self.text, self.id, self.label, self.date, self.source}
        for role, names in _USUAL_COLUMNS.items():
            if getattr(self, role) is None:
                roles.add(next((n for n in names if n in present), None))
        if self.fields == "rest":
            return [c for c in present if c not in roles]
        return [c for c in self.fields if c in present]


def _list(items: Iterable[str], limit: int = 12) -> str:
    items = [_column_name(c) for c in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "") if items else "none"


def _column_name(name: str, limit: int = 40) -> str:
    """A column name fit for a message: a long one (a header-less file's first row is data) is not quoted."""
    name = str(name)
    if len(name) > limit or _CONTROL.search(name):
        return f"<a {len(name)}-character name>"
    return name


_CONTROL = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")
# What a message may quote from a row: short values that look like codes or dates, never
# values of the text column (a wrong --label-col/--date-col/--id-col must not copy text out).
_CODE_LIKE = re.compile(r"^[A-Za-z0-9_.:/#+\-]{1,40}$")
_DATE_LIKE = re.compile(r"^[0-9/.\-: T+Z]{1,30}$")


def _quotable(value: str, column: str | None, text_column: str | None, pattern: re.Pattern[str] = _CODE_LIKE) -> bool:
    return column != text_column and bool(pattern.match(value))


@dataclass(frozen=True)
class Reject:
    """A row that was not imported: where it is in the file and why.

    `raw` keeps the parsed row in memory for callers; it is never written out,
    because it holds record text.
    """

    line: int
    id: str
    reason: str
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class ImportResult:
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def read(self) -> int:
        """Rows seen: kept plus rejected."""
        return len(self.records) + len(self.rejects)


# ----- format registry --------------------------------------------------------------------
RowError = Union[Exception, str]
RowReader = Callable[[Path], Iterator[tuple[int, Union[Mapping[str, Any], RowError]]]]


@dataclass(frozen=True)
class _Format:
    reader: RowReader
    suffixes: tuple[str, ...]
    fixed_columns: bool  # every row has the same columns (a header): check the mapping once, up front


FORMATS: dict[str, _Format] = {}


def register_format(
    name: str, reader: RowReader, *, suffixes: Iterable[str] = (), fixed_columns: bool = False
) -> None:
    """Register a reader yielding ``(position, row_dict)`` or ``(position, error)`` for each row.

    `position` is what a user needs to find the row in their file (a physical
    line number, a row number, a segment number); it is reported on rejects.
    With `fixed_columns`, a mapped column missing from the first row refuses the
    whole file; otherwise each row is checked on its own (a row without text is
    rejected, an optional column it lacks is read as empty).
    """
    FORMATS[name] = _Format(reader=reader, suffixes=tuple(s.lower() for s in suffixes), fixed_columns=fixed_columns)


def detect_format(path: str | Path) -> str:
    """The format name registered for the file's suffix."""
    suffix = Path(path).suffix.lower()
    for name, fmt in FORMATS.items():
        if suffix in fmt.suffixes:
            return name
    known = ", ".join(f"{n} ({' '.join(f.suffixes) or 'explicit only'})" for n, f in FORMATS.items())
    raise RecordError(f"cannot tell the format of '{path}' from its suffix '{suffix}'; pass --format, one of: {known}")


_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")


def _read_csv(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so a bad byte
    # rejects only the row holding it; the header is needed to read anything.
    # Appeal letters can exceed csv's default 128 KiB field limit.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, _CSV_FIELD_LIMIT))
    try:
        yield from _read_csv_rows(path)
    finally:
        csv.field_size_limit(limit)


_CSV_FIELD_LIMIT = 64 * 1024 * 1024


def _read_csv_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise RecordError(f"'{path}' is empty; expected a header line with column names") from None
        except csv.Error as exc:
            raise RecordError(f"'{path}' line 1: the header is not valid CSV ({exc})") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        header = [h.strip() for h in header]
        bad = [h for h in header if _NOT_UTF8.search(h)]
        if bad:
            raise RecordError(f"'{path}' line 1: the header has bytes that are not UTF-8; save the file as UTF-8")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise RecordError(f"'{path}' line 1: column(s) {_list(dupes)} appear twice in the header; rename them")
        last = reader.line_num
        while True:
            start = last + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last = reader.line_num
                yield start, f"the row is not valid CSV ({exc}); check the quoting on this line"
                continue
            last = reader.line_num
            if not row or row == [""] and len(header) > 1:
                continue  # blank line
            if len(row) != len(header):
                yield start, (
                    f"the row has {len(row)} fields but the header has {len(header)}; "
                    "check for an unquoted comma or a missing field"
                )
                continue
            yield start, dict(zip(header, row))


def _read_jsonl(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, f"the line has bytes that are not UTF-8 (byte 0x{raw[exc.start]:02X} at column {exc.start + 1}); save the file as UTF-8"
                continue
            if line_no == 1 and line.startswith("\ufeff"):
                line = line[1:]
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, f"the line is not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object"
                continue
            if not isinstance(obj, dict):
                yield line_no, f"the line is a JSON {type(obj).__name__}; each line must be one JSON object"
                continue
            yield line_no, obj


def _read_parquet(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    from ._extras import require

    pq = require("pyarrow.parquet", "all", "reading Parquet files")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise RecordError(f"'{path}' is not a readable Parquet file ({type(exc).__name__}); check the file") from None
    row_no = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _read_835(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | RowError]]:
    # The X12 835 reader lives in its own module; import it only when asked for.
    try:
        from . import x12
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("x12"):
            raise RecordError("format 835 is not available in this version of taxonomist (no taxonomist.x12)") from None
        raise
    yield from x12.read_835(path)


register_format("csv", _read_csv, suffixes=(".csv",), fixed_columns=True)
register_format("jsonl", _read_jsonl, suffixes=(".jsonl", ".ndjson"))
register_format("parquet", _read_parquet, suffixes=(".parquet", ".pq"), fixed_columns=True)
register_format("835", _read_835, suffixes=(".835", ".era"))


def count_rows(path: str | Path, format: str | None = None) -> int | None:
    """A quick estimate of the rows in a file, for progress bars (None when unknown)."""
    p = Path(path)
    fmt = format or detect_format(p)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(p).metadata.num_rows)
        except Exception:
            return None
    if fmt in ("csv", "jsonl"):
        n = 0
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                n += chunk.count(b"\n")
        return max(n - (1 if fmt == "csv" else 0), 0)
    return None


# ----- row -> record ----------------------------------------------------------------------
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ][0-9:.+\-Z]*)?$")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def derive_id(text: str, fields: Mapping[str, Any], source: str | None, occurrence: int = 0) -> str:
    """A stable id for a row that has none: the same row in the same source gets the same id.

    `occurrence` tells apart rows identical in every column within one file.
    """
    key = json.dumps([source or "", text, fields, occurrence], sort_keys=True, ensure_ascii=False, default=str)
    return "r" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _parse_date(value: Any) -> dt.date | None:
    """None for empty, a date for ISO text or date objects; raises ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return value.to_pydatetime().date()
    text = str(value).strip()
    if not text:
        return None
    if not _ISO_DATE.match(text):
        raise ValueError(text)
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ValueError(text) from None  # e.g. 2024-02-30: name the value, not Python's wording


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def _has_bad_bytes(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_NOT_UTF8.search(value))
    if isinstance(value, Mapping):
        return any(_has_bad_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_bad_bytes(v) for v in value)
    return False


def _category_problem(code: str, taxonomy: Taxonomy, line: int, *, column: str, quotable: bool) -> str | None:
    if code in taxonomy and taxonomy[code].active:
        return None
    where = f"taxonomy '{taxonomy.name}' {taxonomy.version_id}"  # version_id hashes the document: only on a problem
    if code not in taxonomy and not quotable:
        return (
            f"column '{_column_name(column)}' holds a value that is not a category code of {where} "
            f"(not shown: it is long or looks like text); is --label-col the column with the codes?"
        )
    if code not in taxonomy:
        return (
            f"category '{code}' is not in {where} (known: {taxonomy._known_codes()}); "
            f"add it with `taxonomist taxonomy add` or fix the category on line {line}"
        )
    cat = taxonomy[code]
    if not cat.active:
        succ = f"; its successor is {', '.join(cat.successors)}" if cat.successors else ""
        return (
            f"category '{code}' is retired in {where}{succ}; import the row under an active category "
            "or import the history first and let `taxonomy merge/retire` relabel it"
        )
    return None


def read_records(
    path: str | Path,
    *,
    format: str | None = None,
    mapping: ColumnMapping | None = None,
    taxonomy: Taxonomy | None = None,
    default_source: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Read a file into records; bad rows become rejects with their line number and reason.

    `format` defaults from the suffix (.csv, .jsonl/.ndjson, .parquet). With a
    `taxonomy`, a label must be one of its active codes. The source of a record
    is its `source` column, else `default_source`, else the file name.
    `on_progress(position)` is called every few hundred rows.
    Raises `RecordError` when the file as a whole cannot be read (missing,
    no header, a mapped column absent). Holds the whole file in memory:
    `iter_records` reads the same rows one at a time.
    """
    result = ImportResult()
    for item in iter_records(path, format=format, mapping=mapping, taxonomy=taxonomy, default_source=default_source,
                             on_progress=on_progress):
        (result.rejects if isinstance(item, Reject) else result.records).append(item)
    return result


def iter_records(
    path: str | Path,
    *,
    format: str | None = None,
    mapping: ColumnMapping | None = None,
    taxonomy: Taxonomy | None = None,
    default_source: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    keep_raw: bool = True,
) -> Iterator[Record | Reject]:
    """`read_records` one row at a time, in file order: each row becomes a `Record` or a `Reject`.

    Memory stays flat whatever the file's size, apart from the ids seen so far
    (a later duplicate is rejected). `keep_raw=False` drops the parsed row from
    rejects (what a long-running import keeps of them is then a line and a reason).
    The file is checked (exists, format known) on the first `next()`.
    """
    p = Path(path)
    if not p.exists():
        raise RecordError(f"input file '{p}' does not exist")
    if not p.is_file():
        raise RecordError(f"input '{p}' is not a file")
    fmt_name = format or detect_format(p)
    if fmt_name not in FORMATS:
        raise RecordError(f"unknown format '{fmt_name}'; expected one of {', '.join(FORMATS)}")
    mapping = mapping or ColumnMapping()
    source_default = default_source or p.name
    first_seen: dict[str, int] = {}
    occurrences: dict[str, int] = {}
    roles: dict[str, str | None] | None = None
    field_cols: list[str] = []
    columns_seen: tuple[str, ...] | None = None
    where = f"'{p}'"

    fmt = FORMATS[fmt_name]
    for n, (line, row) in enumerate(fmt.reader(p), 1):
        if on_progress is not None and n % 500 == 0:
            on_progress(line)
        if not isinstance(row, Mapping):
            yield Reject(line=line, id="", reason=str(row))
            continue
        cols = tuple(row.keys())
        if cols != columns_seen:
            if fmt.fixed_columns:
                if roles is None:
                    roles = mapping.resolve(cols, where=where)
            else:
                roles = _resolve_row(mapping, cols, where, line)
            field_cols = mapping.field_columns(cols)
            columns_seen = cols
        raw = row if keep_raw else None
        if roles is None:
            yield Reject(line=line, id="", reason=f"the row has no '{mapping.text}' field; every record needs its text", raw=raw)
            continue
        rec_or_reason = _to_record(row, roles, field_cols, line, taxonomy, source_default, occurrences)
        if isinstance(rec_or_reason, Reject):
            yield rec_or_reason if keep_raw else Reject(line=line, id=rec_or_reason.id, reason=rec_or_reason.reason)
            continue
        rec = rec_or_reason
        if rec.id in first_seen:
            quoted = roles.get("id") is None or _quotable(rec.id, roles.get("id"), roles["text"])
            yield Reject(
                line=line,
                id=rec.id if quoted else "",
                reason=(f"id '{rec.id}'" if quoted else f"the id in column '{_column_name(str(roles['id']))}'")
                + f" already appears on line {first_seen[rec.id]}; ids must be unique in a file, the later row is rejected",
                raw=raw,
            )
            continue
        first_seen[rec.id] = line
        yield rec
    if on_progress is not None:
        on_progress(-1)


def _resolve_row(mapping: ColumnMapping, cols: tuple[str, ...], where: str, line: int) -> dict[str, str | None] | None:
    if mapping.text not in cols:
        return None
    try:
        return mapping.resolve(cols, where=f"{where} line {line}")
    except ColumnMappingError:
        # An explicit optional column missing from one JSON object: treat it as empty.
        out: dict[str, str | None] = {"text": mapping.text}
        for role, names in _USUAL_COLUMNS.items():
            chosen = getattr(mapping, role)
            out[role] = chosen if chosen is not None else next((n for n in names if n in cols), None)
        return out


def _to_record(
    row: Mapping[str, Any],
    roles: Mapping[str, str | None],
    field_cols: list[str],
    line: int,
    taxonomy: Taxonomy | None,
    source_default: str,
    occurrences: dict[str, int],
) -> Record | Reject:
    def get(role: str) -> Any:
        col = roles.get(role)
        return row.get(col) if col else None

    raw_id = get("id")
    given_id = "" if raw_id is None else str(raw_id).strip()
    # The id goes into the rejects file: only when it is a short code, never from the text column.
    shown_id = given_id if _quotable(given_id, roles.get("id"), roles["text"]) else ""

    def reject(reason: str, rid: str = shown_id) -> Reject:
        return Reject(line=line, id=rid, reason=reason, raw=row)

    bad_cols = [c for c, v in row.items() if _has_bad_bytes(v)]
    if bad_cols:
        return reject(
            f"column(s) {_list(bad_cols)} hold bytes that are not UTF-8; save the file as UTF-8 "
            "(e.g. from Excel choose 'CSV UTF-8') and import again",
            _NOT_UTF8.sub("?", given_id) if _quotable(_NOT_UTF8.sub("", given_id), roles.get("id"), roles["text"]) else "",
        )
    nul_cols = [c for c, v in row.items() if _has_nul(v) or "\x00" in str(c)]
    if nul_cols:
        return reject(
            f"column(s) {_list(nul_cols)} hold a NUL character (\\0), which the store cannot keep "
            "(PostgreSQL refuses it in text); remove it from the file and import again",
            "" if "\x00" in shown_id else shown_id,
        )
    text_value = get("text")
    if isinstance(text_value, (dict, list)):
        return reject(f"column '{roles['text']}' holds a JSON {type(text_value).__name__}; expected text")
    text = "" if text_value is None else str(text_value).strip()
    if not text:
        return reject(f"text column '{roles['text']}' is empty; every record needs its text")
    label_value = get("label")
    label = None if label_value is None else (str(label_value).strip() or None)
    if label is not None and taxonomy is not None:
        problem = _category_problem(
            label, taxonomy, line, column=str(roles["label"]), quotable=_quotable(label, roles["label"], roles["text"])
        )
        if problem:
            return reject(problem)
    try:
        date = _parse_date(get("date"))
    except ValueError as exc:
        value = str(exc)
        shown = f"date '{value}'" if _quotable(value, roles["date"], roles["text"], _DATE_LIKE) else "the date (not shown)"
        return reject(
            f"{shown} in column '{_column_name(str(roles['date']))}' is not an ISO date; expected YYYY-MM-DD (e.g. 2024-03-05)"
        )
    source_value = get("source")
    source = (str(source_value).strip() if source_value is not None else "") or source_default
    fields = {c: _jsonable(row.get(c)) for c in field_cols if c in row}
    if given_id:
        rid = given_id
    else:
        base = derive_id(text, fields, source)
        k = occurrences.get(base, 0)
        occurrences[base] = k + 1
        rid = base if k == 0 else derive_id(text, fields, source, k)
    return Record(id=rid, text=text, fields=fields, source=source, date=date, label=label)


def row_to_record(row: Mapping[str, Any], roles: Mapping[str, str | None], *, line: int = 0) -> Record | Reject:
    """One row as the file readers make it a `Record` (or a `Reject` with the reason), for readers that split a file.

    `roles` maps text, id, label, date and source to a column (or None); no
    structured fields are kept, and an id is never derived (that needs the
    whole file: a row without one gets an empty id).
    """
    return _to_record(row, roles, [], line, None, "", {}) if roles.get("id") and str(row.get(roles["id"]) or "").strip() \
        else Reject(line=line, id="", reason=f"column '{roles.get('id')}' is empty; every record needs its id")


def write_rejects(rejects: Iterable[Reject], path: str | Path) -> Path:
    """Write rejects as CSV `line,id,reason`. Record text is never written (it is PHI)."""
    with RejectsFile(path) as out:
        out.open()
        for r in rejects:
            out.add(r)
    return Path(path)


class RejectsFile:
    """The rejects CSV (`line,id,reason`) written as rejects come, for a reader that streams.

    The file is created on the first `add` (or `open`), so a file without bad rows
    leaves none. `count` and `first` (the first few) are kept for the summary.
    Record text is never written (it is PHI).
    """

    def __init__(self, path: str | Path, *, keep: int = 5) -> None:
        self.path = Path(path)
        self.count = 0
        self.first: list[Reject] = []
        self._keep = keep
        self._fh: Any = None
        self._writer: Any = None

    def open(self) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "id", "reason"])

    def add(self, reject: Reject) -> None:
        self.open()
        self._writer.writerow([reject.line, reject.id, reject.reason])
        self.count += 1
        if len(self.first) < self._keep:
            self.first.append(Reject(line=reject.line, id=reject.id, reason=reject.reason))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_records(records: Iterable[Record], path: str | Path) -> int:
    """Write records (id, text, label, date, source, then their fields) as CSV, JSONL or Parquet, by suffix.

    What `read_records` reads back into the same records; returns the count.
    The output holds record text: it is PHI, like the store.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt not in ("csv", "jsonl", "parquet"):
        raise RecordError(f"cannot export to '{p.name}': use a .csv, .jsonl or .parquet file")
    p.parent.mkdir(parents=True, exist_ok=True)

    def row(r: Record) -> dict[str, Any]:
        base = {"id": r.id, "text": r.text, "label": r.label or "", "date": r.date.isoformat() if r.date else "",
                "source": r.source or ""}
        for k, v in (r.fields or {}).items():
            if k not in base:
                base[k] = v
        return base

    n = 0
    if fmt == "jsonl":
        with p.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(row(r), ensure_ascii=False, default=str) + "\n")
                n += 1
        return n
    rows = [row(r) for r in records]
    n = len(rows)
    columns: list[str] = []
    for d in rows:
        for k in d:
            if k not in columns:
                columns.append(k)
    if fmt == "csv":
        with p.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns or ["id", "text", "label", "date", "source"])
            w.writeheader()
            for d in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v) for k, v in d.items()})
        return n
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [None if d.get(c) is None else (json.dumps(d[c]) if isinstance(d.get(c), (dict, list)) else str(d[c]))
                          for d in rows] for c in columns})
    pq.write_table(table, p)
    return n
