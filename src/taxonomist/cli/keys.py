"""`taxonomist keys ...`: API keys of the review service (shown once, stored as a hash)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ._console import console, err_console
from .records import Db, Who, _who, open_store

__all__ = ["register"]

app = typer.Typer(help="API keys of the review service: create (shown once), list, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help="classifier (classify only), reviewer (+ review, decisions, stats, taxonomy read) or admin (+ taxonomy operations).")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key, e.g. billing-system or ana.")],
    db: Db = None,
    who: Who = None,
) -> None:
    """Create a key and print it once: only its SHA-256 is stored, so copy it now."""
    from ..api.keys import check_role, new_key

    check_role(role)
    key, digest, prefix = new_key()
    with open_store(db) as store:
        row = store.add_api_key(name=name, role=role, key_hash=digest, prefix=prefix, who=_who(who))
    err_console.print(f"created key {row['id']} ({role}) for '{row['name']}'; it is shown once, store it safely:")
    typer.echo(key)


@app.command("list")
def list_keys(db: Db = None, as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Every key: id, name, role, prefix, created, revoked (never the key)."""
    with open_store(db) as store:
        rows = store.api_keys()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("no keys; create one with `taxonomist keys create --role reviewer --name NAME`")
        return
    table = Table(title="API keys")
    for col in ("id", "name", "role", "prefix", "created", "by", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["name"], r["role"], r["prefix"] + "…", r["created"].strftime("%Y-%m-%d %H:%M"),
                      r["created_by"], r["revoked_at"].strftime("%Y-%m-%d %H:%M") if r["revoked_at"] else "-")
    console.print(table)


@app.command("revoke")
def revoke(
    ref: Annotated[str, typer.Argument(help="The key's id, prefix or name (when unique).")],
    db: Db = None,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    with open_store(db) as store:
        row = store.revoke_api_key(ref)
    console.print(f"revoked key {row['id']} ({row['role']}) of '{row['name']}'")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="keys")
