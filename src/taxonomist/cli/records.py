"""`taxonomist import` and `taxonomist records ...`: bring records into the store and look at what is there."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from ..errors import RecordError
from ._console import console, err_console, progress, resumable

if TYPE_CHECKING:
    from ..records import Record

__all__ = ["register", "Db", "Who", "Create", "open_store", "parse_day"]

app = typer.Typer(help="Look at and correct the records in the store.", no_args_is_help=True)

Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="TAXONOMIST_DB",
        help="Record store: a file path or a SQLAlchemy URL (sqlite:///path.db, postgresql+psycopg://user@host/db). "
        "Default: $TAXONOMIST_HOME/taxonomist.db, else taxonomist.db in your user data directory.",
        show_default=False,
    ),
]
Create = Annotated[
    bool, typer.Option("--create", help="Create the store if --db names a file that does not exist (else refused: a typo must not make a new store).")
]
Who = Annotated[
    Optional[str],
    typer.Option("--who", help="Who is labelling (recorded on every label). Default: $TAXONOMIST_AUTHOR or your user name."),
]


def _who(who: str | None) -> str:
    return who or os.environ.get("TAXONOMIST_AUTHOR") or getpass.getuser()


def open_store(db: str | None, *, create: bool = False):
    """The store named by --db through the service layer (refuses a missing file unless `create`)."""
    from ..service import Settings, open_store as _open

    return _open(Settings.from_env(db=db, create=create))


def import_records(
    file: Annotated[Path, typer.Argument(help="Input file: .csv, .jsonl/.ndjson or .parquet (or --format).", show_default=False)],
    format: Annotated[
        Optional[str], typer.Option("--format", help="csv, jsonl, parquet or 835. Default: from the file suffix.")
    ] = None,
    text_col: Annotated[str, typer.Option("--text-col", help="Column holding the record text.")] = "text",
    label_col: Annotated[
        Optional[str], typer.Option("--label-col", help="Column holding the category. Default: 'label' or 'category' if present.")
    ] = None,
    id_col: Annotated[
        Optional[str],
        typer.Option("--id-col", help="Column holding a unique record id. Default: 'id' if present, else an id derived from the row."),
    ] = None,
    date_col: Annotated[
        Optional[str], typer.Option("--date-col", help="Column holding the service or denial date (YYYY-MM-DD). Default: 'date'.")
    ] = None,
    source_col: Annotated[
        Optional[str], typer.Option("--source-col", help="Column naming each record's source. Default: 'source' if present.")
    ] = None,
    source: Annotated[
        Optional[str], typer.Option("--source", help="Source name for rows without a source column. Default: the file name.")
    ] = None,
    taxonomy: Annotated[
        Optional[Path],
        typer.Option("--taxonomy", help="Taxonomy YAML the labels must belong to; saved in the store. Default: the store's latest."),
    ] = None,
    crosswalk: Annotated[
        Optional[Path],
        typer.Option("--crosswalk", help="The labels are another organisation's codes: translate them through this crosswalk (YAML or CSV)."),
    ] = None,
    rejects: Annotated[
        Optional[Path], typer.Option("--rejects", help="Where to write rejected rows (line,id,reason). Default: FILE.rejects.csv.")
    ] = None,
    db: Db = None,
    who: Who = None,
) -> None:
    """Import labelled or unlabelled records. Bad rows go to a rejects file with their line and reason; every valid row is kept.

    Importing the same file again changes nothing. Exits 0 when some rows were
    rejected but others kept, 1 when nothing could be read, 130 on Ctrl-C (the
    records are written in one transaction: all of them or none, so rerunning
    the same command resumes).
    """
    from itertools import chain

    from ..records import ColumnMapping, RejectsFile, Reject, count_rows, iter_records
    from ..store import Store
    from ..taxonomy import load_crosswalk, load_taxonomy

    who = _who(who)
    mapping = ColumnMapping(text=text_col, id=id_col, label=label_col, date=date_col, source=source_col)
    cw = load_crosswalk(crosswalk) if crosswalk is not None else None
    tax = load_taxonomy(taxonomy) if taxonomy is not None else None
    if not file.is_file():
        raise RecordError(f"input file '{file}' does not exist" if not file.exists() else f"input '{file}' is not a file")

    # What an interrupt leaves: nothing until the one transaction that writes the records commits.
    stored: list[int] = []

    def kept() -> str:
        if stored:
            return f"all {stored[0]:,} records from {file.name} were stored before the interrupt; nothing to redo"
        return f"no records from {file.name} were stored (they are written in one transaction); rerun the same command to import it"

    with resumable(kept), Store.open(db) as store:
        if tax is not None:
            store.save_taxonomy(tax)
        else:
            tax = store.get_taxonomy()
        with progress(transient=True) as bar:
            task = bar.add_task(f"reading {file.name}", total=count_rows(file, format))

            def advance(position: int) -> None:
                total = bar.tasks[0].total
                if position >= 0:
                    bar.update(task, completed=position)
                elif total is not None:
                    bar.update(task, completed=total)

            # Their codes are checked against the crosswalk, not our taxonomy. Rows are read as the store
            # takes them (one transaction), so memory stays flat; rejects go to their file as they come.
            rows = iter_records(
                file, format=format, mapping=mapping, taxonomy=None if cw else tax, default_source=source,
                on_progress=advance, keep_raw=False,
            )
            rejects_path = rejects or file.with_name(file.name + ".rejects.csv")
            kept_rows = [0]
            with RejectsFile(rejects_path, keep=3) as bad:

                def records() -> Iterator[Record]:
                    for item in rows:
                        if isinstance(item, Reject):
                            bad.add(item)
                        else:
                            kept_rows[0] += 1
                            yield item

                stream = records()
                first = next(stream, None)
                if first is not None:
                    if cw is not None:  # checks every code against the crosswalk first: needs them all
                        added = store.import_crosswalk_history([first, *stream], cw, who=who, taxonomy=tax)
                    else:
                        added = store.add_records(chain([first], stream), who=who,
                                                  taxonomy_version=tax.version_id if tax else None)
        if not bad.count and rejects is None and rejects_path.is_file():
            rejects_path.unlink()  # a stale rejects file from an earlier import would mislead
        if first is None:
            _summary(file, bad.count, 0, 0, 0, bad.count)
            if bad.count:
                raise RecordError(
                    f"nothing could be imported from '{file}': all {bad.count} rows were rejected; "
                    f"reasons per line in {rejects_path}"
                )
            raise RecordError(f"nothing could be imported from '{file}': it has no data rows")
        stored.append(added.inserted + added.unchanged)
    read = kept_rows[0] + bad.count
    _summary(file, read, added.inserted, added.unchanged, len(added.conflicts), bad.count)
    if added.labels_added:
        how = f" (their codes translated through the {cw.source} crosswalk)" if cw else ""
        console.print(f"{added.labels_added} label(s) stored{how}; operation id {added.run_id}")
    if bad.count:
        console.print(
            f"[yellow]{bad.count} row(s) rejected[/yellow], the other {kept_rows[0]} kept; "
            f"line and reason of each in {rejects_path} (fix those lines of your file and import it again)"
        )
        for r in bad.first:
            console.print(f"  line {r.line}: {r.reason}", highlight=False, markup=False)
    if added.conflicts:
        console.print(
            f"[yellow]{len(added.conflicts)} record(s) not written[/yellow]: the store holds something different under their id"
        )
        for c in added.conflicts[:3]:
            console.print(f"  id {c.record_id}: {c.reason}", highlight=False, markup=False)


def _summary(file: Path, read: int, inserted: int, unchanged: int, conflicts: int, rejected: int) -> None:
    table = Table(title=f"import {file.name}", show_header=True)
    for col in ("read", "inserted", "unchanged", "conflicts", "rejected"):
        table.add_column(col, justify="right")
    table.add_row(*(str(x) for x in (read, inserted, unchanged, conflicts, rejected)))
    console.print(table)


@app.command()
def stats(
    db: Db = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Counts of records: labelled, by category, by source and by month."""

    with open_store(db) as store:
        s = store.stats()
    if as_json:
        typer.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    console.print(f"{s['records']} records, {s['labelled']} labelled")
    for key, title in (("by_category", "category"), ("by_source", "source"), ("by_month", "month")):
        table = Table(title=f"by {title}")
        table.add_column(title)
        table.add_column("records", justify="right")
        for name, n in s[key].items():
            table.add_row(name or "(none)", str(n))
        console.print(table)


@app.command()
def review(
    db: Db = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many records.")] = 50,
    reason: Annotated[Optional[str], typer.Option("--reason", help="Only this reason (split, below_threshold, ambiguous_crosswalk, suspected_mislabel, ...).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Suggest with this model (directory, id or 'active') where no decision exists yet.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON (one object per record).")] = False,
    excerpt: Annotated[int, typer.Option("--excerpt", min=0, help="Characters of text to show (0: none).")] = 80,
) -> None:
    """The review queue, most useful first: text excerpt, current label, suggestion and why each record is here.

    Decide many at once with `taxonomist records assign --file decisions.csv` (columns id,category).
    """
    from .. import service

    with open_store(db) as store:
        loaded = None
        if model is not None:
            loaded = service.load_model(model, store)
        elif any(m["status"] == "active" for m in store.models(status="active")):
            loaded = service.load_model("active", store)
        rows = service.review_rows(store, limit=limit, reason=reason, excerpt=excerpt, model=loaded)
        tax = store.get_taxonomy() if any(r["reason"] == "suspected_mislabel" for r in rows) else None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    if not rows:
        console.print("nothing to review: no open review items and every current label is an active category")
        return
    table = Table(title=f"review queue ({len(rows)} shown)")
    for col in ("id", "reason", "label", "suggestion", "score", "text"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["record_id"], r["reason"], r["current_label"] or "-", r["suggested"] or "-",
                      f"{r['score']:.2f}" if isinstance(r["score"], float) else "-", r["excerpt"])
    console.print(table)
    _print_audit_evidence(rows, tax)
    err_console.print("decide with `taxonomist records assign ID CATEGORY`, or many at once with "
                      "`taxonomist records assign --file decisions.csv` (columns id,category)")


def _print_audit_evidence(rows: list[dict], tax) -> None:
    """Suspected mislabels: both categories' definitions, the audit's probabilities and the nearest labelled records."""
    from rich.markup import escape

    from ..audit import review_evidence

    for r in (r for r in rows if r["reason"] == "suspected_mislabel"):
        ev = review_evidence(r, r["current_label"], tax)
        g, s = ev["given"], ev["suggested"]
        p = (f" (p = {ev['p_given']:.2f} vs {ev['p_suggested']:.2f})" if ev["p_given"] is not None and ev["p_suggested"] is not None else "")
        console.print(f"[bold]{escape(r['record_id'])}[/bold] labelled {escape(g['code'])} looks like {escape(s['code'])}{p}")
        console.print(f"  {g['code']}: {g['definition'] or '(no definition)'}", markup=False)
        console.print(f"  {s['code']}: {s['definition'] or '(no definition)'}", markup=False)
        if ev["neighbours"]:
            console.print("  nearest labelled: " + " ".join(f"{n['id']}:{n['label']}" for n in ev["neighbours"]), markup=False)


@app.command()
def assign(
    record_id: Annotated[Optional[str], typer.Argument(help="Record id.", show_default=False)] = None,
    category: Annotated[Optional[str], typer.Argument(help="Active category code.", show_default=False)] = None,
    file: Annotated[
        Optional[Path], typer.Option("--file", help="A CSV of decisions (columns id,category): all applied in one transaction.")
    ] = None,
    relabel_id: Annotated[
        Optional[str], typer.Option("--relabel-id", help="Attach to this operation (e.g. the split) so reverting it undoes this too.")
    ] = None,
    db: Db = None,
    who: Who = None,
) -> None:
    """Give records new labels through the journal (old labels are kept in their history)."""
    from .. import service

    if file is None and (record_id is None or category is None):
        raise RecordError("give ID CATEGORY, or --file decisions.csv (columns id,category)")
    with open_store(db) as store:
        if file is not None:
            n = service.assign_file(store, file, who=_who(who))
            console.print(f"{n} label(s) written from {file}")
            return
        store.assign(record_id, category, who=_who(who), reason="review", relabel_id=relabel_id)
        store.close_review_items([record_id], who=_who(who))
    console.print(f"{record_id}: {category}")


@app.command()
def revert(
    operation_id: Annotated[str, typer.Argument(help="Id printed by a relabel (taxonomy merge/rename/retire/split) or an import.")],
    db: Db = None,
    who: Who = None,
) -> None:
    """Undo the labels an operation wrote, restoring exactly the labels before it (and the taxonomy version, for taxonomy operations)."""
    with open_store(db) as store:
        result = store.revert_relabel(operation_id, who=_who(who))
        restored_tax = store.get_taxonomy(result.taxonomy_version) if result.taxonomy_version else None
    console.print(f"reverted {operation_id}: {result.restored} label(s) restored, {result.cleared} removed")
    if restored_tax is not None:
        console.print(f"taxonomy: version {restored_tax.version_id} is the store's current one again")
        target = Path(result.taxonomy_file) if result.taxonomy_file else None
        if target is not None and target.is_file():
            from ..taxonomy import load_taxonomy

            on_disk = load_taxonomy(target)
            if on_disk.version_id != restored_tax.version_id:
                restored_tax.save(target)
                console.print(f"wrote version {restored_tax.version_id} back to {target}")


@app.command("export")
def export_records(
    out: Annotated[Path, typer.Option("--out", help="Where to write: .csv, .jsonl or .parquet.", show_default=False)],
    db: Db = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Records dated on or after (YYYY-MM-DD).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Records dated on or before (YYYY-MM-DD).")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="Only this source.")] = None,
    labelled: Annotated[Optional[bool], typer.Option("--labelled/--unlabelled", help="Only labelled (or unlabelled) records.")] = None,
) -> None:
    """Write the store's records with their current labels (after every relabel): id, text, label, date, source, fields."""
    from ..records import write_records

    with open_store(db) as store:
        n = write_records(
            store.records(labelled=labelled, since=parse_day(since, "--since"), until=parse_day(until, "--until"), source=source),
            out,
        )
    console.print(f"wrote {n} record(s) to {out}")


def parse_day(value: str | None, option: str):
    """A --since/--until option as a date (None stays None); one clear line when it is not YYYY-MM-DD."""
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RecordError(f"{option} '{value}' is not a date; use YYYY-MM-DD") from None


@app.command()
def purge(
    record_ids: Annotated[list[str], typer.Argument(help="Record id(s) to delete everywhere.", show_default=False)],
    db: Db = None,
    who: Who = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete records everywhere in the store (text, labels, decisions, review items); models trained on them are marked.

    Files outside the store that may hold their text (saved knn/llm models, exports) are listed in docs/SECURITY.md.
    """
    if not yes and not typer.confirm(f"delete {len(record_ids)} record(s) and everything about them?"):
        raise typer.Exit(1)
    with open_store(db) as store:
        counts = store.purge_records(record_ids, who=_who(who))
    console.print("purged: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


def register(root: typer.Typer) -> None:
    root.command("import")(import_records)
    root.add_typer(app, name="records")
