"""`taxonomist import` and `taxonomist records ...`: bring records into the store and look at what is there."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import RecordError
from ._console import console, err_console, progress, resumable

__all__ = ["register", "Db", "Who"]

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
Who = Annotated[
    Optional[str],
    typer.Option("--who", help="Who is labelling (recorded on every label). Default: $TAXONOMIST_AUTHOR or your user name."),
]


def _who(who: str | None) -> str:
    return who or os.environ.get("TAXONOMIST_AUTHOR") or getpass.getuser()


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
    from ..records import ColumnMapping, count_rows, read_records, write_rejects
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

            # Their codes are checked against the crosswalk, not our taxonomy.
            result = read_records(
                file, format=format, mapping=mapping, taxonomy=None if cw else tax, default_source=source,
                on_progress=advance,
            )
        rejects_path = rejects or file.with_name(file.name + ".rejects.csv")
        if result.rejects:
            write_rejects(result.rejects, rejects_path)
        elif rejects is None and rejects_path.is_file():
            rejects_path.unlink()  # a stale rejects file from an earlier import would mislead
        if not result.records:
            _summary(file, result.read, 0, 0, 0, len(result.rejects))
            if result.rejects:
                raise RecordError(
                    f"nothing could be imported from '{file}': all {len(result.rejects)} rows were rejected; "
                    f"reasons per line in {rejects_path}"
                )
            raise RecordError(f"nothing could be imported from '{file}': it has no data rows")
        if cw is not None:
            added = store.import_crosswalk_history(result.records, cw, who=who, taxonomy=tax)
        else:
            added = store.add_records(result.records, who=who, taxonomy_version=tax.version_id if tax else None)
        stored.append(added.inserted + added.unchanged)
    _summary(file, result.read, added.inserted, added.unchanged, len(added.conflicts), len(result.rejects))
    if added.labels_added:
        how = f" (their codes translated through the {cw.source} crosswalk)" if cw else ""
        console.print(f"{added.labels_added} label(s) stored{how}; operation id {added.run_id}")
    if result.rejects:
        console.print(
            f"[yellow]{len(result.rejects)} row(s) rejected[/yellow], the other {len(result.records)} kept; "
            f"line and reason of each in {rejects_path} (fix those lines of your file and import it again)"
        )
        for r in result.rejects[:3]:
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
    from ..store import Store

    with Store.open(db) as store:
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
def review(db: Db = None) -> None:
    """List records whose label is not an active category of the latest taxonomy (e.g. after a split)."""
    from ..store import Store

    with Store.open(db) as store:
        rows = store.needs_review()
    if not rows:
        console.print("nothing to review: every current label is an active category")
        return
    for record_id, category in rows:
        typer.echo(f"{record_id}\t{category}")
    err_console.print(f"{len(rows)} record(s) to review; assign each with `taxonomist records assign ID CATEGORY`")


@app.command()
def assign(
    record_id: Annotated[str, typer.Argument(help="Record id.")],
    category: Annotated[str, typer.Argument(help="Active category code.")],
    relabel_id: Annotated[
        Optional[str], typer.Option("--relabel-id", help="Attach to this operation (e.g. the split) so reverting it undoes this too.")
    ] = None,
    db: Db = None,
    who: Who = None,
) -> None:
    """Give one record a new label (the old one is kept in its history)."""
    from ..store import Store

    with Store.open(db) as store:
        store.assign(record_id, category, who=_who(who), reason="review", relabel_id=relabel_id)
    console.print(f"{record_id}: {category}")


@app.command()
def revert(
    operation_id: Annotated[str, typer.Argument(help="Id printed by a relabel (taxonomy merge/rename/retire/split) or an import.")],
    db: Db = None,
    who: Who = None,
) -> None:
    """Undo the labels an operation wrote, restoring exactly the labels before it."""
    from ..store import Store

    with Store.open(db) as store:
        result = store.revert_relabel(operation_id, who=_who(who))
    console.print(f"reverted {operation_id}: {result.restored} label(s) restored, {result.cleared} removed")


def register(root: typer.Typer) -> None:
    root.command("import")(import_records)
    root.add_typer(app, name="records")
