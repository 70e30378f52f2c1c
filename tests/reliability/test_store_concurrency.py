"""The store under concurrent writers: races are idempotent, a held lock ends in one clear line, files are private."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import taxonomist.store as store_module
from taxonomist.errors import StoreError
from taxonomist.store import Store

pytestmark = pytest.mark.reliability


def test_save_taxonomy_survives_another_process_saving_it_between_read_and_insert(db_url, small_taxonomy):
    """The race the issue saw in 2 of 11 runs, made deterministic: the other writer commits mid-flush."""
    with Store.open(db_url) as ours, Store.open(db_url) as theirs:
        raced = []

        def other_process_wins(session: Session, *_: object) -> None:
            if not raced and session.get_bind() is ours.engine:
                raced.append(theirs.save_taxonomy(small_taxonomy))

        sa.event.listen(Session, "before_flush", other_process_wins)
        try:
            assert ours.save_taxonomy(small_taxonomy) == small_taxonomy.version_id  # IntegrityError before the fix
        finally:
            sa.event.remove(Session, "before_flush", other_process_wins)
        assert raced == [small_taxonomy.version_id]
        assert [v["version_id"] for v in ours.taxonomy_versions()] == [small_taxonomy.version_id]


def test_a_held_write_lock_ends_in_one_store_error(tmp_path, small_taxonomy, monkeypatch):
    monkeypatch.setattr(store_module, "_BUSY_TIMEOUT_S", 1)
    path = tmp_path / "locked.db"
    Store.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing for a long time
    try:
        with Store.open(path) as store, pytest.raises(StoreError) as err:
            store.save_taxonomy(small_taxonomy)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(err.value) == f"the store sqlite:///{path} is locked by another process (waited 1 s); retry when it finishes"


def test_import_while_the_store_is_locked_prints_one_line(tmp_path, monkeypatch, capsys):
    from taxonomist.cli import main

    monkeypatch.setattr(store_module, "_BUSY_TIMEOUT_S", 1)
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("id,text\n1,first\n2,second\n")
    db = tmp_path / "s.db"
    Store.open(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SystemExit) as exc:
            main(["import", str(csv_path), "--db", str(db), "--who", "t"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the store sqlite:///{db} is locked by another process (waited 1 s); retry when it finishes"]


def test_a_new_sqlite_store_is_private(tmp_path):
    folder = tmp_path / "new" / "place"
    with Store.open(folder / "s.db") as store:
        store.save_taxonomy(__import__("taxonomist").Taxonomy.from_labels(["a", "b"]))
    for f in folder.iterdir():  # s.db and its -wal/-shm
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
