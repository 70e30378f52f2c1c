"""`taxonomist taxonomy ...`: validate, show, diff and change the taxonomy document."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import TaxonomyError
from ..taxonomy import Change, Taxonomy, load_crosswalk, load_taxonomy
from ._console import console

__all__ = ["register"]

app = typer.Typer(help="Validate, show, diff and change a taxonomy document (YAML).", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="Taxonomy YAML file.", show_default=False)]
Author = Annotated[
    Optional[str],
    typer.Option("--author", help="Who made the change (changelog). Default: $TAXONOMIST_AUTHOR or your user name."),
]
Out = Annotated[
    Optional[Path], typer.Option("--out", help="Write the new version here instead of editing the file in place.")
]
Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="TAXONOMIST_DB",
        help="Record store (path or SQLAlchemy URL). When given, the new version is saved there and stored labels follow the change.",
    ),
]
Date = Annotated[Optional[str], typer.Option("--date", help="Date of the change (ISO). Default: today.")]


def _author(author: str | None) -> str:
    return author or os.environ.get("TAXONOMIST_AUTHOR") or getpass.getuser()


def _write(change: Change, path: Path, out: Path | None, db: str | None, *, relabel: bool = True) -> None:
    target = out or path
    version = change.taxonomy.save(target)
    console.print(f"{change.entry.summary}")
    console.print(f"wrote {target} (version {version}, {len(change.taxonomy)} active categories)")
    if db is None:
        if change.relabel or change.review:
            console.print(
                "[dim]stored labels were not changed: pass --db to relabel the history in a record store[/dim]"
            )
        return
    from .records import open_store

    with open_store(db) as store:
        if not relabel:
            store.save_taxonomy(change.taxonomy)
            console.print(f"store: saved version {change.taxonomy.version_id}")
            return
        result = store.relabel(change, who=change.entry.author, taxonomy_file=str(Path(target).resolve()))
    console.print(
        f"store: {result.changed} label(s) relabelled, {result.review_count} awaiting review "
        f"(undo with relabel id {result.relabel_id})"
    )


@app.command()
def validate(path: FileArg) -> None:
    """Check a taxonomy file; exit non-zero naming the category and the problem."""
    tax = load_taxonomy(path)
    _check_changelog(tax, path)
    retired = len(tax.categories) - len(tax)
    extra = f", {retired} retired" if retired else ""
    console.print(
        f"[green]valid[/green]: {path}: {len(tax)} categories in {len(tax.groups)} groups{extra} "
        f"(version {tax.version_id})"
    )


def _check_changelog(tax: Taxonomy, path: Path) -> None:
    """Changelog entries must refer to categories that exist (e.g. a merge into an unknown code)."""
    for entry in tax.changelog:
        d = entry.details
        refs: list[str] = []
        if entry.op == "merge":
            refs = [str(d.get("into", ""))] + [str(s) for s in d.get("sources", [])]
        elif entry.op == "split":
            refs = [str(d.get("code", ""))] + [str(s) for s in d.get("into", [])]
        elif entry.op in ("add", "retire"):
            refs = [str(d.get("code", ""))] + ([str(d["successor"])] if d.get("successor") else [])
        for ref in refs:
            if ref and ref not in tax:
                raise TaxonomyError(
                    f"{path}: changelog entry '{entry.summary or entry.op}' ({entry.date}) refers to "
                    f"unknown category '{ref}'; add the category or fix the entry"
                )


@app.command()
def show(
    path: FileArg,
    group: Annotated[Optional[str], typer.Option(help="Only this group.")] = None,
    code: Annotated[Optional[str], typer.Option(help="Show one category in full.")] = None,
    retired: Annotated[bool, typer.Option("--retired/--active-only", help="Include retired categories.")] = False,
) -> None:
    """Print the taxonomy as a table, or one category in full."""
    tax = load_taxonomy(path)
    if code:
        cat = tax[code]
        g = tax.group_of(code)
        console.print(f"[bold]{cat.code}[/bold] {cat.name}  [dim](group {g.code} {g.name}; {cat.status})[/dim]")
        for label, value in (
            ("definition", cat.definition),
            ("include", "; ".join(cat.include)),
            ("exclude", "; ".join(cat.exclude)),
            ("source codes", ", ".join(cat.source_codes)),
            ("successor", ", ".join(cat.successors)),
        ):
            if value:
                console.print(f"  {label}: {value}")
        for ex in cat.examples:
            console.print(f"  example: {ex}")
        return
    table = Table(title=f"{tax.name} — {len(tax)} categories in {len(tax.groups)} groups ({tax.version_id})")
    for col in ("group", "code", "name", "source codes", "status"):
        table.add_column(col)
    for g in tax.groups:
        if group and g.code != group:
            continue
        for c in tax.categories:
            if c.group == g.code and (retired or c.active):
                status = c.status + (f" → {', '.join(c.successors)}" if c.successors else "")
                table.add_row(f"{g.code} {g.name}", c.code, c.name, ", ".join(c.source_codes), status)
    console.print(table)
    if tax.changelog:
        last = tax.changelog[-1]
        console.print(f"[dim]{len(tax.changelog)} changelog entries; last: {last.date} {last.author}: {last.summary}[/dim]")


@app.command()
def diff(old: FileArg, new: Annotated[Path, typer.Argument(help="The newer taxonomy file.")]) -> None:
    """Show what changed between two taxonomy files (+ added, - removed, ~ changed)."""
    a, b = load_taxonomy(old), load_taxonomy(new)
    lines = a.diff(b)
    if not lines:
        console.print(f"no differences ({a.version_id})")
        return
    console.print(f"{a.version_id} -> {b.version_id}: {len(lines)} difference(s)")
    for line in lines:
        style = {"+": "green", "-": "red"}.get(line[0], "yellow")
        console.print(f"[{style}]{escape(line)}[/{style}]", highlight=False)


@app.command()
def add(
    path: FileArg,
    code: Annotated[str, typer.Option(help="New category code, e.g. G7.")],
    name: Annotated[str, typer.Option(help="Category name.")],
    group: Annotated[str, typer.Option(help="Group code it belongs to, e.g. G.")],
    definition: Annotated[str, typer.Option(help="Definition a reader can apply.")] = "",
    example: Annotated[Optional[list[str]], typer.Option("--example", help="An example text (repeatable).")] = None,
    source_code: Annotated[
        Optional[list[str]], typer.Option("--source-code", help="Typical source code, e.g. CARC:4 (repeatable).")
    ] = None,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Add a category (history unchanged; retrieval/RAG engines use it on the next call)."""
    change = load_taxonomy(path).add(
        code, name, group=group, author=_author(author), definition=definition,
        examples=example or (), source_codes=source_code or (), date=date,
    )
    _write(change, path, out, db)


@app.command()
def rename(
    path: FileArg,
    code: Annotated[str, typer.Argument(help="Category to rename.")],
    new_code: Annotated[Optional[str], typer.Option(help="New code (stored labels follow).")] = None,
    new_name: Annotated[Optional[str], typer.Option(help="New name.")] = None,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Rename a category's code and/or name."""
    change = load_taxonomy(path).rename(code, new_code=new_code, new_name=new_name, author=_author(author), date=date)
    _write(change, path, out, db)


@app.command()
def merge(
    path: FileArg,
    sources: Annotated[list[str], typer.Argument(help="Categories to merge, e.g. B1 B4.")],
    into: Annotated[str, typer.Option(help="Target code: one of the sources, an existing code, or a new one.")],
    name: Annotated[Optional[str], typer.Option(help="Name of the target when it is new.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Group of the target when it is new.")] = None,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Merge categories (A+B→C). Stored history moves to C; the old labels are kept and the change can be reverted."""
    change = load_taxonomy(path).merge(sources, into, name=name, group=group, author=_author(author), date=date)
    _write(change, path, out, db)


@app.command()
def split(
    path: FileArg,
    code: Annotated[str, typer.Argument(help="Category to split.")],
    into: Annotated[list[str], typer.Option("--into", help="New category as CODE=Name (repeatable).")],
    keep: Annotated[bool, typer.Option(help="Keep CODE active and split the new ones out of it.")] = False,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Split a category (A→B,C). Its history is flagged for per-record review."""
    parts = []
    for item in into:
        new_code, sep, new_name = item.partition("=")
        if not sep or not new_code.strip() or not new_name.strip():
            raise TaxonomyError(f"split: --into '{item}' must look like CODE=Name, e.g. --into G7='Audio-only telehealth'")
        parts.append((new_code.strip(), new_name.strip()))
    change = load_taxonomy(path).split(code, parts, keep=keep, author=_author(author), date=date)
    _write(change, path, out, db)


@app.command()
def retire(
    path: FileArg,
    code: Annotated[str, typer.Argument(help="Category to retire.")],
    successor: Annotated[Optional[str], typer.Option(help="Active category its history moves to.")] = None,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Retire a category, optionally naming its successor."""
    change = load_taxonomy(path).retire(code, successor=successor, author=_author(author), date=date)
    _write(change, path, out, db)


@app.command()
def crosswalk(
    path: FileArg,
    mapping: Annotated[Path, typer.Argument(help="Crosswalk file: YAML (source, mapping) or CSV (their_code,our_code).")],
    source: Annotated[Optional[str], typer.Option(help="Name of the other organisation.")] = None,
    author: Author = None,
    date: Date = None,
    out: Out = None,
    db: Db = None,
) -> None:
    """Check another organisation's codes against ours and record the crosswalk in the changelog."""
    cw = load_crosswalk(mapping, source=source)
    change = load_taxonomy(path).with_crosswalk(cw, author=_author(author), date=date)
    merges = cw.merges
    console.print(
        f"crosswalk {cw.source}: {len(cw.mapping)} of their codes onto {len(set(cw.mapping.values()))} of ours"
        + (f"; {len(merges)} of ours receive several of theirs ({', '.join(sorted(merges))})" if merges else "")
    )
    # Their history is brought in by `taxonomist import --crosswalk`; our own labels stay as they are.
    _write(change, path, out, db, relabel=False)
    console.print("[dim]import their labelled history with: taxonomist import FILE --crosswalk " + str(mapping) + "[/dim]")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="taxonomy")
