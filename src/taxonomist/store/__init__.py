"""The record store: records, their label history, taxonomy versions, models, predictions, runs and the LLM cache.

SQLite in the user data directory by default; any SQLAlchemy URL (e.g.
``postgresql+psycopg://user@host/db``) works with the same code, because only
portable types and statements are used. The schema is created and upgraded by
the versioned migrations in `migrations.py` each time a store is opened.

Labels form a journal: a row is never edited except to clear `is_current`. A
relabel (merge, rename, retire, crosswalk) writes new rows pointing at the rows
they replace, all tied to one run id, so `revert_relabel` can restore exactly
the labels that were there before.

Where the store lives, first match wins: the argument (path or URL),
``$TAXONOMIST_DB``, ``$TAXONOMIST_HOME/taxonomist.db``, the platform user data
directory (``platformdirs.user_data_dir("taxonomist")/taxonomist.db``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import time
import uuid
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..errors import MissingExtraError, StoreError
from ..records import Record
from .migrations import LATEST_VERSION, applied_migrations, migrate
from .models import (
    LabelRow,
    LlmCacheRow,
    ModelRow,
    PredictionRow,
    RecordRow,
    ReviewItemRow,
    RunRow,
    TaxonomyVersionRow,
)

if TYPE_CHECKING:
    from ..taxonomy import Change, Crosswalk, Taxonomy

__all__ = [
    "Store",
    "AddResult",
    "Conflict",
    "RelabelResult",
    "RevertResult",
    "default_db_url",
    "resolve_db_url",
    "cache_key",
    "DB_FILENAME",
    "LATEST_VERSION",
    "MODEL_STATUSES",
    "REVIEW_REASONS",
]

MODEL_STATUSES = ("candidate", "active", "retired")
#: Why a record is in the review queue, most useful first (the queue's order).
REVIEW_REASONS = (
    "invalid_output", "split", "retired_code", "unknown_code", "below_threshold", "out_of_scope",
    "deferred_to_review", "ambiguous_crosswalk", "suspected_mislabel",
)

T = TypeVar("T")
DB_FILENAME = "taxonomist.db"
_CHUNK = 500
# Bulk writes go through Core tables: the ORM's bulk path costs ~3x more per row here.
_RECORDS: sa.Table = RecordRow.__table__  # type: ignore[assignment]
_LABELS: sa.Table = LabelRow.__table__  # type: ignore[assignment]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_id() -> str:
    return uuid.uuid4().hex


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _batched(items: Iterable[Any], n: int = _CHUNK) -> Iterator[list[Any]]:
    """`_chunks` of any iterable (a generator reading a file), taken as it comes."""
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def default_db_url() -> str:
    """The store used when none is named: $TAXONOMIST_DB, $TAXONOMIST_HOME, else the user data dir."""
    env = os.environ.get("TAXONOMIST_DB")
    if env:
        return resolve_db_url(env)
    home = os.environ.get("TAXONOMIST_HOME")
    if home:
        return resolve_db_url(Path(home) / DB_FILENAME)
    import platformdirs

    return resolve_db_url(Path(platformdirs.user_data_dir("taxonomist")) / DB_FILENAME)


def resolve_db_url(url_or_path: str | Path | None) -> str:
    """A SQLAlchemy URL from a URL, a file path, or None (the default store)."""
    if url_or_path is None or str(url_or_path) == "":
        return default_db_url()
    text = str(url_or_path)
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def cache_key(prompt: str, model: str, params: Mapping[str, Any] | None = None) -> str:
    """The LLM cache key: sha256 of prompt, model and generation parameters."""
    blob = json.dumps([prompt, model, dict(params or {})], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Conflict:
    """A record not written because the store holds something different under its id."""

    record_id: str
    reason: str


@dataclass
class AddResult:
    inserted: int = 0
    unchanged: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    labels_added: int = 0
    run_id: str | None = None


@dataclass(frozen=True)
class RelabelResult:
    changed: int
    review_count: int
    relabel_id: str


@dataclass(frozen=True)
class RevertResult:
    restored: int  # labels put back as they were
    cleared: int  # labels the operation had added to unlabelled records, now removed
    revert_id: str
    taxonomy_version: str | None = None  # the taxonomy version made latest again (taxonomy operations)
    taxonomy_file: str | None = None  # the file the operation was applied to, to write that version back


class Store:
    """Records, labels and everything measured about them, in one SQL database.

    Open with `Store.open(path_or_url)`; use as a context manager or call `close()`.
    """

    def __init__(self, engine: Engine, *, url: str) -> None:
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # ----- lifecycle ------------------------------------------------------------------
    @classmethod
    def open(cls, url_or_path: str | Path | None = None, *, echo: bool = False) -> Store:
        """Open (creating and migrating as needed) the store at a path or SQLAlchemy URL."""
        url = resolve_db_url(url_or_path)
        shown = _safe_url(url)
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise StoreError(
                f"'{shown}' is not a database URL or path; expected a file path or e.g. "
                "sqlite:///path/taxonomist.db, postgresql+psycopg://user@host/dbname"
            ) from None
        # Record text is PHI: a database error (or echo) must not quote the statement's parameters.
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
            # psycopg prepares a statement run 5 times, and PostgreSQL then keeps a generic plan made while
            # the tables were small (a scan per 500-id chunk): a 100k-record import took 150 s instead of 19 s.
            kwargs["connect_args"] = {"prepare_threshold": None}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                from .._private import private_dir, private_file

                try:
                    private_dir(Path(parsed.database).parent)
                    # Record text is PHI: a new store (and its -wal/-shm, which copy its mode) is 0600.
                    private_file(parsed.database)
                except OSError as exc:
                    raise StoreError(f"cannot create the store {shown}: {exc.strerror}") from None
        try:
            engine = sa.create_engine(url, **kwargs)
        except ModuleNotFoundError as exc:
            missing = exc.name or "database driver"
            if missing.split(".")[0] == "psycopg":
                raise MissingExtraError(missing, "postgres", f"the database {shown}") from None
            raise StoreError(f"the database driver '{missing}' for {shown} is not installed; pip install it") from None
        except sa.exc.NoSuchModuleError:
            raise StoreError(f"no database driver for '{shown}'; expected sqlite:/// or postgresql+psycopg://") from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "before_cursor_execute", _sqlite_started)
            sa.event.listen(engine, "handle_error", lambda context: _sqlite_locked(context, shown))
        try:
            # Two processes opening a new store at once both try to create its tables: the loser retries
            # and finds them made.
            _retrying(lambda: migrate(engine, where=shown), (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError))
        except StoreError:
            engine.dispose()
            raise
        except sa.exc.DBAPIError as exc:  # cannot connect, not a database file, no permission
            engine.dispose()
            reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            raise StoreError(
                f"cannot open the store at {shown}: {reason}; check --db (a store file or a database URL)"
            ) from None
        return cls(engine, url=url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({_safe_url(self.url)!r})"

    def schema_versions(self) -> dict[int, str]:
        """Migrations recorded in this database ({version: name})."""
        with self.engine.connect() as conn:
            return applied_migrations(conn)

    @property
    def schema_version(self) -> int:
        return max(self.schema_versions(), default=0)

    def _session(self) -> Session:
        return self._sessions.begin()  # type: ignore[return-value]

    # ----- records --------------------------------------------------------------------
    def add_records(
        self, records: Iterable[Record], *, who: str, taxonomy_version: str | None = None
    ) -> AddResult:
        """Insert new records and their labels; idempotent.

        A record whose id is stored with the same text is `unchanged`; with other
        text it is a `conflict` and is not overwritten. A label is added to a
        record that has none; a label differing from the record's history is a
        conflict (change labels with `assign` or a taxonomy operation instead).
        """
        # Consumed in chunks, in one transaction: a reader that streams a file keeps memory flat.
        return self._add(
            records, who=who, taxonomy_version=taxonomy_version, reason="import", kind="import", crosswalk=None
        )

    def import_crosswalk_history(
        self,
        records: Iterable[Record],
        crosswalk: Crosswalk,
        *,
        who: str,
        taxonomy: Taxonomy | None = None,
    ) -> AddResult:
        """Store another organisation's labelled history translated through `crosswalk`.

        Each record's `label` is their code; the stored label is ours and keeps
        theirs in `original_category`. Every code must be in the crosswalk (the
        import is refused otherwise, naming the missing codes). The labels are
        tied to `result.run_id`, which `revert_relabel` undoes.
        """
        records = list(records)
        missing = sorted({r.label for r in records if r.label is not None and r.label not in crosswalk.mapping})
        if missing:
            raise StoreError(
                f"crosswalk from {crosswalk.source} has no mapping for their code(s) {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''}; add rows for them to the crosswalk"
            )
        taxonomy = taxonomy or self.get_taxonomy()
        if taxonomy is not None:
            crosswalk.check(taxonomy)
        result = self._add(
            records,
            who=who,
            taxonomy_version=taxonomy.version_id if taxonomy is not None else None,
            reason=f"crosswalk:{crosswalk.source}",
            kind="crosswalk",
            crosswalk=crosswalk,
        )
        ambiguous = getattr(crosswalk, "ambiguous", {}) or {}
        if ambiguous:
            # Their code covers several of ours: the mapped label is a guess a person should check.
            self.add_review_items(
                ({"record_id": r.id, "reason": "ambiguous_crosswalk", "suggested": crosswalk.mapping.get(r.label),
                  "details": {"their_code": r.label, "candidates": list(ambiguous[r.label]), "source": crosswalk.source}}
                 for r in records if r.label in ambiguous),
                who=who, run_id=result.run_id,
            )
        return result

    def _add(
        self,
        records: Iterable[Record],
        *,
        who: str,
        taxonomy_version: str | None,
        reason: str,
        kind: str,
        crosswalk: Crosswalk | None,
    ) -> AddResult:
        _require_who(who)
        result = AddResult(run_id=_new_id())
        now = _now()
        with self._session() as s:
            _writers_take_turns(s)
            s.add(RunRow(id=result.run_id, kind=kind, params={"who": who, "reason": reason},
                         started=now, finished=None, status="running", summary=None))
            s.flush()
            seen: dict[str, str] = {}  # ids written earlier in this call -> text hash
            read = 0
            for batch in _batched(records):
                read += len(batch)
                ids = list({r.id for r in batch} - seen.keys())
                # Not a copy of `seen`: copying it per batch made a 1M-record import quadratic (~60 s of copies).
                stored: ChainMap[str, str] = ChainMap({}, seen)
                history: dict[str, list[tuple[str, str | None, bool]]] = {}
                if ids:
                    stored.update(s.execute(select(RecordRow.id, RecordRow.text_hash).where(RecordRow.id.in_(ids))).tuples().all())
                    for rid, cat, orig, cur in s.execute(
                        select(LabelRow.record_id, LabelRow.category, LabelRow.original_category, LabelRow.is_current)
                        .where(LabelRow.record_id.in_(ids))
                    ):
                        history.setdefault(rid, []).append((cat, orig, cur))
                new_records: list[dict[str, Any]] = []
                new_labels: list[dict[str, Any]] = []
                for rec in batch:
                    h = rec.text_hash
                    theirs = rec.label if crosswalk is not None else None
                    ours = crosswalk.translate(rec.label) if crosswalk is not None and rec.label is not None else rec.label
                    label_row = None
                    if ours is not None:
                        label_row = {
                            "record_id": rec.id, "category": ours, "taxonomy_version": taxonomy_version, "who": who,
                            "labelled_at": now, "is_current": True, "replaces_label_id": None, "reason": reason,
                            "original_category": theirs, "run_id": result.run_id,
                        }
                    if rec.id not in stored:
                        new_records.append({
                            "id": rec.id, "text": rec.text, "fields": dict(rec.fields), "source": rec.source,
                            "date": rec.date, "imported_at": now, "text_hash": h,
                        })
                        stored[rec.id] = seen[rec.id] = h
                        result.inserted += 1
                        if label_row:
                            new_labels.append(label_row)
                            history[rec.id] = [(ours, theirs, True)]  # type: ignore[list-item]
                        continue
                    if stored[rec.id] != h:
                        result.conflicts.append(Conflict(rec.id, "the store holds different text under this id; not overwritten"))
                        continue
                    hist = history.get(rec.id, [])
                    if label_row is None or any(
                        (theirs is not None and orig == theirs) or (theirs is None and cat == ours) for cat, orig, _ in hist
                    ):
                        result.unchanged += 1
                        continue
                    current = next((cat for cat, _, cur in hist if cur), None)
                    if current is not None:
                        result.conflicts.append(Conflict(
                            rec.id,
                            f"label '{ours}' differs from the stored label '{current}'; not changed "
                            "(change labels with a taxonomy operation or `assign`)",
                        ))
                        continue
                    new_labels.append(label_row)
                    history.setdefault(rec.id, []).append((ours, theirs, True))  # type: ignore[arg-type]
                    result.unchanged += 1
                if new_records:
                    s.execute(_RECORDS.insert(), new_records)
                if new_labels:
                    s.execute(_LABELS.insert(), new_labels)
                    result.labels_added += len(new_labels)
            run = s.get(RunRow, result.run_id)
            assert run is not None
            run.finished, run.status = _now(), "ok"
            run.params = {**run.params, "records": read}
            run.summary = {"inserted": result.inserted, "unchanged": result.unchanged,
                           "conflicts": len(result.conflicts), "labels_added": result.labels_added}
        return result

    def records(
        self,
        ids: Iterable[str] | None = None,
        *,
        source: str | None = None,
        labelled: bool | None = None,
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> Iterator[Record]:
        """Stored records with their current label, in id order; filter by ids, source, labelled or not, date range.

        `since`/`until` are inclusive and keep only dated records.
        """
        q = (
            select(RecordRow, LabelRow.category)
            .outerjoin(LabelRow, sa.and_(LabelRow.record_id == RecordRow.id, LabelRow.is_current == sa.true()))
            .order_by(RecordRow.id)
        )
        if source is not None:
            q = q.where(RecordRow.source == source)
        if since is not None:
            q = q.where(RecordRow.date >= since)
        if until is not None:
            q = q.where(RecordRow.date <= until)
        if labelled is True:
            q = q.where(LabelRow.id.is_not(None))
        elif labelled is False:
            q = q.where(LabelRow.id.is_(None))
        id_list = list(ids) if ids is not None else None
        with self._sessions() as s:
            batches = [q.where(RecordRow.id.in_(c)) for c in _chunks(id_list)] if id_list is not None else [q]
            for stmt in batches:
                for row, category in s.execute(stmt.execution_options(yield_per=1000)):
                    yield _to_record(row, category)

    def labelled(self, *, current: bool = True) -> list[tuple[str, str, str, dt.date | None]]:
        """(record_id, text, category, date) for each current label, or every label ever with current=False."""
        q = (
            select(RecordRow.id, RecordRow.text, LabelRow.category, RecordRow.date)
            .join(LabelRow, LabelRow.record_id == RecordRow.id)
            .order_by(RecordRow.id, LabelRow.id)
        )
        if current:
            q = q.where(LabelRow.is_current == sa.true())
        with self._sessions() as s:
            return [tuple(r) for r in s.execute(q)]  # type: ignore[misc]

    def label_history(self, record_id: str) -> list[dict[str, Any]]:
        """Every label a record has had, oldest first."""
        with self._sessions() as s:
            rows = s.scalars(select(LabelRow).where(LabelRow.record_id == record_id).order_by(LabelRow.id)).all()
            return [_label_dict(r) for r in rows]

    def current_labels(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """{record_id: category} of current labels."""
        q = select(LabelRow.record_id, LabelRow.category).where(LabelRow.is_current == sa.true())
        with self._sessions() as s:
            if ids is None:
                return dict(s.execute(q).tuples().all())
            out: dict[str, str] = {}
            for c in _chunks(list(ids)):
                out.update(s.execute(q.where(LabelRow.record_id.in_(c))).tuples().all())
            return out

    # ----- taxonomy versions and relabelling ----------------------------------------------
    def save_taxonomy(self, taxonomy: Taxonomy) -> str:
        """Store this version (if new) and make it the latest; returns its version id.

        Safe to race: when another process stores the same version between our
        read and our insert, the unique violation is caught and the row re-read.
        """
        vid = taxonomy.version_id

        def save() -> None:
            with self._session() as s:
                top = s.execute(
                    select(TaxonomyVersionRow.version_id, TaxonomyVersionRow.position)
                    .order_by(TaxonomyVersionRow.position.desc()).limit(1)
                ).first()
                if top is not None and top[0] == vid:
                    return
                position = (top[1] if top is not None else 0) + 1
                row = s.get(TaxonomyVersionRow, vid)
                if row is not None:
                    row.position = position
                else:
                    s.add(TaxonomyVersionRow(
                        version_id=vid, name=taxonomy.name, document=taxonomy.to_yaml(),
                        changelog_entry=taxonomy.changelog[-1].to_dict() if taxonomy.changelog else None,
                        created=_now(), position=position,
                    ))

        _retrying(save, (sa.exc.IntegrityError,))
        return vid

    def get_taxonomy(self, version_id: str | None = None) -> Taxonomy | None:
        """A stored version, or the latest saved (None when the store has none)."""
        from ..taxonomy import Taxonomy

        with self._sessions() as s:
            if version_id is None:
                row = s.scalars(select(TaxonomyVersionRow).order_by(TaxonomyVersionRow.position.desc()).limit(1)).first()
                if row is None:
                    return None
            else:
                row = s.get(TaxonomyVersionRow, version_id)
                if row is None:
                    known = s.scalars(select(TaxonomyVersionRow.version_id).order_by(TaxonomyVersionRow.position)).all()
                    raise StoreError(
                        f"taxonomy version '{version_id}' is not in the store (stored: {', '.join(known) or 'none'}); "
                        "import the taxonomy first"
                    )
            return Taxonomy.from_yaml(row.document, source=f"store taxonomy {row.version_id}")

    def taxonomy_versions(self) -> list[dict[str, Any]]:
        with self._sessions() as s:
            rows = s.scalars(select(TaxonomyVersionRow).order_by(TaxonomyVersionRow.position)).all()
            return [{"version_id": r.version_id, "name": r.name, "created": r.created, "changelog_entry": r.changelog_entry}
                    for r in rows]

    def relabel(self, change: Change, *, who: str, taxonomy_file: str | None = None) -> RelabelResult:
        """Apply a taxonomy change to stored history; reversible with `revert_relabel(result.relabel_id)`.

        Current labels in `change.relabel` move to their new code (new rows, the
        old ones kept with is_current False). Labels in `change.review` stay and
        are counted for per-record review (`needs_review`, `assign`).
        The change's taxonomy is saved as the latest version.
        """
        _require_who(who)
        previous = self.get_taxonomy()
        version = self.save_taxonomy(change.taxonomy)
        mapping = {str(k): str(v) for k, v in change.relabel.items()}
        review = list(change.review)
        run_id = _new_id()
        now = _now()
        reason = f"relabel:{change.entry.op}:{version}"
        with self._session() as s:
            _writers_take_turns(s)
            s.add(RunRow(id=run_id, kind="relabel", started=now, finished=None, status="running", summary=None,
                         params={"who": who, "op": change.entry.op, "summary": change.entry.summary,
                                 "mapping": mapping, "review": review, "taxonomy_version": version,
                                 "previous_version": previous.version_id if previous is not None else None,
                                 "taxonomy_file": taxonomy_file}))
            s.flush()
            changed = 0
            if mapping:
                olds = s.execute(
                    select(LabelRow.id, LabelRow.record_id, LabelRow.category, LabelRow.original_category)
                    .where(LabelRow.is_current == sa.true(), LabelRow.category.in_(list(mapping)))
                ).all()
                for c in _chunks(olds):
                    s.execute(update(LabelRow).where(LabelRow.id.in_([o.id for o in c])).values(is_current=False))
                    s.execute(_LABELS.insert(), [
                        {"record_id": o.record_id, "category": mapping[o.category], "taxonomy_version": version,
                         "who": who, "labelled_at": now, "is_current": True, "replaces_label_id": o.id,
                         "reason": reason, "original_category": o.original_category, "run_id": run_id}
                        for o in c
                    ])
                changed = len(olds)
            review_count = 0
            if review:
                flagged = s.execute(
                    select(LabelRow.record_id, LabelRow.category)
                    .where(LabelRow.is_current == sa.true(), LabelRow.category.in_(review))
                ).all()
                review_count = len(flagged)
                parts = {c: [str(x) for x in change.taxonomy[c].successors] for c in review if c in change.taxonomy}
                for c in _chunks(flagged):
                    s.execute(ReviewItemRow.__table__.insert(), [
                        {"record_id": r.record_id, "reason": "split" if parts.get(r.category) else "retired_code",
                         "suggested": None, "score": None, "model_id": None,
                         "details": {"from": r.category, "candidates": parts.get(r.category, []), "operation": run_id},
                         "status": "open", "created": now, "who": who, "run_id": run_id}
                        for r in c
                    ])
            run = s.get(RunRow, run_id)
            assert run is not None
            run.finished, run.status = _now(), "ok"
            run.summary = {"changed": changed, "review_count": review_count}
        return RelabelResult(changed=changed, review_count=review_count, relabel_id=run_id)

    def needs_review(self, taxonomy: Taxonomy | None = None) -> list[tuple[str, str]]:
        """(record_id, category) of current labels that are not active codes of the taxonomy (default: latest)."""
        taxonomy = taxonomy or self.get_taxonomy()
        if taxonomy is None:
            return []
        active = set(taxonomy.codes)
        q = (select(LabelRow.record_id, LabelRow.category)
             .where(LabelRow.is_current == sa.true()).order_by(LabelRow.record_id))
        with self._sessions() as s:
            return [(r, c) for r, c in s.execute(q) if c not in active]

    def assign(
        self,
        record_id: str,
        category: str,
        *,
        who: str,
        reason: str = "review",
        relabel_id: str | None = None,
    ) -> int:
        """Give one record a new current label (e.g. after a split); returns the new label id.

        With `relabel_id` (the split's), the assignment becomes part of that
        operation and `revert_relabel` undoes it too.
        """
        _require_who(who)
        taxonomy = self.get_taxonomy()
        if taxonomy is not None:
            if category not in taxonomy or not taxonomy[category].active:
                raise StoreError(
                    f"category '{category}' is not an active category of taxonomy {taxonomy.version_id}; "
                    "assign an active code (see `taxonomist taxonomy show`)"
                )
        with self._session() as s:
            _writers_take_turns(s)
            if s.get(RecordRow, record_id) is None:
                raise StoreError(f"record '{record_id}' is not in the store; check the id")
            if relabel_id is not None and s.get(RunRow, relabel_id) is None:
                raise StoreError(f"operation '{relabel_id}' is not in the store; pass the id `relabel` returned")
            old = s.execute(
                select(LabelRow.id, LabelRow.original_category)
                .where(LabelRow.record_id == record_id, LabelRow.is_current == sa.true())
            ).first()
            if old is not None:
                s.execute(update(LabelRow).where(LabelRow.id == old.id).values(is_current=False))
            row = LabelRow(
                record_id=record_id, category=category,
                taxonomy_version=taxonomy.version_id if taxonomy is not None else None,
                who=who, labelled_at=_now(), is_current=True,
                replaces_label_id=old.id if old is not None else None, reason=reason,
                original_category=old.original_category if old is not None else None, run_id=relabel_id,
            )
            s.add(row)
            s.flush()
            return row.id

    def assign_many(
        self, pairs: Iterable[tuple[str, str]], *, who: str, reason: str = "review", relabel_id: str | None = None
    ) -> int:
        """`assign` for many (record_id, category) pairs in one transaction: all are written, or none.

        Every category must be active and every record stored; the first
        problem is reported with its position. Returns the number of labels written
        (a pair whose category already is the record's label writes nothing).
        """
        _require_who(who)
        pairs = list({str(r): str(c) for r, c in pairs}.items())  # a record named twice: the last pair wins
        taxonomy = self.get_taxonomy()
        if taxonomy is not None:
            active = set(taxonomy.codes)
            for i, (rid, cat) in enumerate(pairs, 1):
                if cat not in active:
                    raise StoreError(
                        f"row {i} (record '{rid}'): category '{cat}' is not an active category of taxonomy "
                        f"{taxonomy.version_id}; nothing was assigned"
                    )
        written = 0
        now = _now()
        with self._session() as s:
            if relabel_id is not None and s.get(RunRow, relabel_id) is None:
                raise StoreError(f"operation '{relabel_id}' is not in the store; pass the id `relabel` returned")
            for c in _chunks(pairs):
                ids = [r for r, _ in c]
                known = set(s.scalars(select(RecordRow.id).where(RecordRow.id.in_(ids))).all())
                missing = [r for r in ids if r not in known]
                if missing:
                    pos = next(i for i, (r, _) in enumerate(pairs, 1) if r == missing[0])
                    raise StoreError(f"row {pos}: record '{missing[0]}' is not in the store; nothing was assigned")
                current = {r.record_id: r for r in s.execute(
                    select(LabelRow.id, LabelRow.record_id, LabelRow.category, LabelRow.original_category)
                    .where(LabelRow.record_id.in_(ids), LabelRow.is_current == sa.true())
                )}
                rows = []
                for rid, cat in c:
                    old = current.get(rid)
                    if old is not None and old.category == cat:
                        continue
                    if old is not None:
                        s.execute(update(LabelRow).where(LabelRow.id == old.id).values(is_current=False))
                    rows.append({
                        "record_id": rid, "category": cat, "taxonomy_version": taxonomy.version_id if taxonomy else None,
                        "who": who, "labelled_at": now, "is_current": True,
                        "replaces_label_id": old.id if old is not None else None, "reason": reason,
                        "original_category": old.original_category if old is not None else None, "run_id": relabel_id,
                    })
                if rows:
                    s.flush()
                    s.execute(_LABELS.insert(), rows)
                    written += len(rows)
        return written

    def revert_relabel(self, relabel_id: str, *, who: str) -> RevertResult:
        """Undo an operation's labels (relabel, crosswalk import, import), restoring exactly the labels before it.

        The operation's rows are kept with is_current False and the rows they
        replaced become current again; the revert itself is recorded as a run.
        Refused when a later operation changed some of those labels: revert that one first.
        """
        _require_who(who)
        revert_id = _new_id()
        with self._session() as s:
            _writers_take_turns(s)
            run = s.get(RunRow, relabel_id)
            if run is None:
                raise StoreError(f"operation '{relabel_id}' is not in the store; pass the id that relabel/import returned")
            if run.status == "reverted":
                raise StoreError(f"operation '{relabel_id}' was already reverted")
            if run.kind == "revert":
                raise StoreError(f"'{relabel_id}' is itself a revert; to redo the operation, apply it again")
            rows = s.execute(
                select(LabelRow.id, LabelRow.is_current, LabelRow.replaces_label_id).where(LabelRow.run_id == relabel_id)
            ).all()
            superseded = [r.id for r in rows if not r.is_current]
            if superseded:
                later = set()
                for c in _chunks(superseded):
                    later.update(s.scalars(
                        select(LabelRow.run_id).where(LabelRow.replaces_label_id.in_(c)).distinct()
                    ).all())
                later_ids = ", ".join(sorted(str(x) for x in later)) or "by hand (assign)"
                raise StoreError(
                    f"operation '{relabel_id}' cannot be reverted: {len(superseded)} of its labels were changed later "
                    f"({later_ids}); revert those first"
                )
            restore_version = None
            if run.kind == "relabel" and (run.params or {}).get("taxonomy_version"):
                made = run.params["taxonomy_version"]
                latest = s.scalars(select(TaxonomyVersionRow.version_id).order_by(TaxonomyVersionRow.position.desc()).limit(1)).first()
                if latest != made:
                    later = [r.id for r in s.scalars(select(RunRow).where(RunRow.kind == "relabel", RunRow.status == "ok"))
                             if (r.params or {}).get("taxonomy_version") == latest]
                    raise StoreError(
                        f"operation '{relabel_id}' cannot be reverted yet: the store's taxonomy moved on to {latest} "
                        f"({'operation ' + later[-1] if later else 'saved later'}); revert that first"
                    )
                restore_version = run.params.get("previous_version")
            now = _now()
            s.add(RunRow(id=revert_id, kind="revert", params={"who": who, "reverts": relabel_id},
                         started=now, finished=None, status="running", summary=None))
            s.flush()
            # Deactivate the operation's labels, then reactivate the rows they replaced:
            # the very rows that were current before, so a chain of operations can be
            # reverted newest first.
            restored = cleared = 0
            for c in _chunks(rows):
                s.execute(update(LabelRow).where(LabelRow.id.in_([r.id for r in c])).values(is_current=False))
                old_ids = [r.replaces_label_id for r in c if r.replaces_label_id is not None]
                if old_ids:
                    s.execute(update(LabelRow).where(LabelRow.id.in_(old_ids)).values(is_current=True))
                restored += len(old_ids)
                cleared += len(c) - len(old_ids)
            run.status = "reverted"
            # A split's (or retirement's) review items are withdrawn with it.
            s.execute(update(ReviewItemRow).where(ReviewItemRow.run_id == relabel_id, ReviewItemRow.status == "open")
                      .values(status="skipped", resolution="reverted", resolved_at=now, resolved_by=who))
            revert = s.get(RunRow, revert_id)
            assert revert is not None
            revert.finished, revert.status = _now(), "ok"
            revert.summary = {"restored": restored, "cleared": cleared, "taxonomy_version": restore_version}
        if restore_version is not None:
            self.save_taxonomy(self.get_taxonomy(restore_version))  # type: ignore[arg-type]
        return RevertResult(restored=restored, cleared=cleared, revert_id=revert_id, taxonomy_version=restore_version,
                            taxonomy_file=(run.params or {}).get("taxonomy_file") if restore_version else None)

    # ----- models, predictions, runs --------------------------------------------------------
    def save_model(
        self,
        manifest: Any,
        path: str | Path | None = None,
        *,
        parent: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        status: str | None = None,
    ) -> str:
        """Register a saved model (an `engines.base.Manifest` or a dict with `engine`); returns its model id.

        A new model is a `candidate` unless `status` says otherwise; registering
        it again updates its path and metrics and keeps its status.
        """
        if status is not None and status not in MODEL_STATUSES:
            raise StoreError(f"model status '{status}' is unknown; expected one of {', '.join(MODEL_STATUSES)}")
        if is_dataclass(manifest):
            data = asdict(manifest)  # type: ignore[arg-type]
            model_id = getattr(manifest, "model_id", None) or data.get("model_id")
        elif isinstance(manifest, Mapping):
            data = dict(manifest)
            model_id = data.get("model_id")
        else:
            raise StoreError(f"save_model: expected a Manifest or a dict, found {type(manifest).__name__}")
        engine = data.get("engine")
        if not engine:
            raise StoreError("save_model: the manifest has no 'engine'")
        if not model_id:
            blob = json.dumps(data, sort_keys=True, default=str)
            model_id = f"{engine}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
        data = json.loads(json.dumps(data, default=str))
        parent = parent or data.get("parent") or (data.get("extra") or {}).get("parent")
        metrics = json.loads(json.dumps(dict(metrics), default=str)) if metrics is not None else None
        with self._session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                s.add(ModelRow(id=model_id, engine=str(engine), manifest=data,
                               path=str(path) if path is not None else None, parent=parent, created=_now(),
                               status=status or "candidate", taxonomy_version=data.get("taxonomy_version") or None,
                               metrics=metrics))
            else:
                row.manifest = data
                if path is not None:
                    row.path = str(path)
                if parent is not None:
                    row.parent = parent
                if metrics is not None:
                    row.metrics = metrics
                if status is not None:
                    row.status = status
        if status == "active":
            self.activate_model(str(model_id))
        return str(model_id)

    def models(self, engine: str | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
        """Registered models, oldest first (each: id, engine, status, taxonomy_version, metrics, path, manifest, ...)."""
        q = select(ModelRow).order_by(ModelRow.created, ModelRow.id)
        if engine is not None:
            q = q.where(ModelRow.engine == engine)
        if status is not None:
            q = q.where(ModelRow.status == status)
        with self._sessions() as s:
            return [_model_dict(m) for m in s.scalars(q)]

    def model(self, ref: str) -> dict[str, Any]:
        """A registered model by id, by a unique id prefix, or `active` (the active one)."""
        with self._sessions() as s:
            if ref == "active":
                row = s.scalars(select(ModelRow).where(ModelRow.status == "active")).first()
                if row is None:
                    raise StoreError(
                        f"no model is active in {self}; activate one with `taxonomist models activate ID` "
                        "(see `taxonomist models list`)"
                    )
                return _model_dict(row)
            row = s.get(ModelRow, ref)
            if row is None:
                rows = s.scalars(select(ModelRow).where(ModelRow.id.like(f"{ref}%")).limit(3)).all()
                if len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    raise StoreError(f"model id '{ref}' is ambiguous ({', '.join(r.id for r in rows)}, ...); give more of it")
            if row is None:
                raise StoreError(f"model '{ref}' is not registered in {self}; see `taxonomist models list`")
            return _model_dict(row)

    def activate_model(self, model_id: str) -> str | None:
        """Make a model the active one (the previous active model becomes `retired`); returns the previous id."""
        with self._session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise StoreError(f"model '{model_id}' is not registered in {self}; see `taxonomist models list`")
            previous = s.scalars(select(ModelRow.id).where(ModelRow.status == "active", ModelRow.id != model_id)).all()
            if previous:
                s.execute(update(ModelRow).where(ModelRow.id.in_(previous)).values(status="retired"))
            row.status = "active"
        return previous[0] if previous else None

    def set_model_status(self, model_id: str, status: str) -> None:
        if status not in MODEL_STATUSES:
            raise StoreError(f"model status '{status}' is unknown; expected one of {', '.join(MODEL_STATUSES)}")
        if status == "active":
            self.activate_model(model_id)
            return
        with self._session() as s:
            row = s.get(ModelRow, model_id)
            if row is None:
                raise StoreError(f"model '{model_id}' is not registered in {self}; see `taxonomist models list`")
            row.status = status

    def add_predictions(self, rows: Iterable[Any], run_id: str | None = None) -> int:
        """Store predictions: `(record_id, Prediction)` pairs or dicts with the table's columns. Returns the count."""
        now = _now()
        out = []
        for item in rows:
            if isinstance(item, Mapping):
                d = dict(item)
            else:
                record_id, pred = item
                extra = dict(getattr(pred, "extra", {}) or {})
                d = {
                    "record_id": record_id, "model_id": pred.model_id, "category": pred.category,
                    "confidence": pred.confidence,
                    "alternatives": [asdict(a) for a in pred.alternatives],
                    "evidence": [_evidence_ref(e) for e in pred.evidence],
                    "cost_usd": pred.cost_usd, "latency_ms": pred.latency_ms,
                    **{k: extra.get(k) for k in ("prompt_tokens", "completion_tokens", "cached_tokens")},
                    "reason": getattr(pred, "reason", "") or None,
                    "taxonomy_version": getattr(pred, "taxonomy_version", "") or None,
                    "route": getattr(pred, "route", "") or None,
                    "extra": _decision_extra(extra) or None,
                }
            missing = [k for k in ("record_id", "model_id", "category", "confidence") if d.get(k) is None]
            if missing:
                raise StoreError(f"add_predictions: a prediction lacks {', '.join(missing)}")
            d.setdefault("alternatives", [])
            d.setdefault("evidence", [])
            d.setdefault("cost_usd", 0.0)
            d.setdefault("latency_ms", 0.0)
            for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "reason", "taxonomy_version", "route", "extra"):
                d.setdefault(k, None)
            d["run_id"] = run_id if run_id is not None else d.get("run_id")
            d["created"] = now
            d.pop("id", None)
            out.append(d)
        if out:
            with self._session() as s:
                for c in _chunks(out):
                    s.execute(PredictionRow.__table__.insert(), list(c))
        return len(out)

    def predictions(
        self,
        model_id: str | None = None,
        run_id: str | None = None,
        *,
        record_id: str | None = None,
        reason: str | None = None,
        since: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of the decision log, oldest first; filter by model, run, record, reason or time."""
        return list(self.iter_predictions(model_id, run_id, record_id=record_id, reason=reason, since=since))

    def iter_predictions(
        self,
        model_id: str | None = None,
        run_id: str | None = None,
        *,
        record_id: str | None = None,
        reason: str | None = None,
        since: dt.datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        q = select(PredictionRow).order_by(PredictionRow.id)
        if model_id is not None:
            q = q.where(PredictionRow.model_id == model_id)
        if run_id is not None:
            q = q.where(PredictionRow.run_id == run_id)
        if record_id is not None:
            q = q.where(PredictionRow.record_id == record_id)
        if reason is not None:
            q = q.where(PredictionRow.reason == reason)
        if since is not None:
            q = q.where(PredictionRow.created >= since)
        cols = [c.key for c in PredictionRow.__table__.columns]
        with self._sessions() as s:
            for p in s.scalars(q.execution_options(yield_per=1000)):
                yield {k: getattr(p, k) for k in cols}

    def latest_decisions(self, record_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest decision-log row of each record id that has one."""
        out: dict[str, dict[str, Any]] = {}
        cols = [c.key for c in PredictionRow.__table__.columns]
        with self._sessions() as s:
            for c in _chunks(list(record_ids)):
                for p in s.scalars(select(PredictionRow).where(PredictionRow.record_id.in_(c)).order_by(PredictionRow.id)):
                    out[p.record_id] = {k: getattr(p, k) for k in cols}
        return out

    # ----- the review queue -------------------------------------------------------------------
    def add_review_items(self, items: Iterable[Mapping[str, Any]], *, who: str, run_id: str | None = None) -> int:
        """Put records in the review queue; returns how many were added.

        Each item: `record_id`, `reason` (see REVIEW_REASONS), optional
        `suggested` (a category), `score`, `model_id`, `details` (JSON; never
        record text). A record already open for the same reason is not added twice.
        """
        _require_who(who)
        rows = []
        for item in items:
            rid, reason = item.get("record_id"), item.get("reason")
            if not rid or not reason:
                raise StoreError("add_review_items: every item needs a record_id and a reason")
            rows.append({
                "record_id": str(rid), "reason": str(reason), "suggested": item.get("suggested") or None,
                "score": float(item["score"]) if item.get("score") is not None else None,
                "model_id": item.get("model_id") or None,
                "details": json.loads(json.dumps(dict(item.get("details") or {}), default=str)),
                "status": "open", "who": who, "run_id": run_id,
            })
        if not rows:
            return 0
        added = 0
        now = _now()
        with self._session() as s:
            for c in _chunks(rows):
                open_now = set(s.execute(
                    select(ReviewItemRow.record_id, ReviewItemRow.reason)
                    .where(ReviewItemRow.record_id.in_({r["record_id"] for r in c}), ReviewItemRow.status == "open")
                ).tuples().all())
                fresh = []
                for r in c:
                    key = (r["record_id"], r["reason"])
                    if key in open_now:
                        continue
                    open_now.add(key)
                    fresh.append({**r, "created": now})
                if fresh:
                    s.execute(ReviewItemRow.__table__.insert(), fresh)
                    added += len(fresh)
        return added

    def review_queue(
        self,
        *,
        reason: str | None = None,
        category: str | None = None,
        source: str | None = None,
        month: str | None = None,
        status: str = "open",
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Open review items, most useful first: by reason (REVIEW_REASONS order), then lowest score.

        Filters: `reason`; `category` (the suggestion or the current label);
        `source`; `month` (YYYY-MM of the record's date). Each item carries the
        record's current label, source, date and fields (never its text).
        """
        q = (
            select(ReviewItemRow, RecordRow.source, RecordRow.date, RecordRow.fields, LabelRow.category)
            .outerjoin(RecordRow, RecordRow.id == ReviewItemRow.record_id)
            .outerjoin(LabelRow, sa.and_(LabelRow.record_id == ReviewItemRow.record_id, LabelRow.is_current == sa.true()))
            .where(ReviewItemRow.status == status)
        )
        if reason is not None:
            q = q.where(ReviewItemRow.reason == reason)
        if category is not None:
            q = q.where(sa.or_(ReviewItemRow.suggested == category, LabelRow.category == category))
        if source is not None:
            q = q.where(RecordRow.source == source)
        if month is not None:
            try:
                first = dt.date.fromisoformat(f"{month}-01")
            except ValueError:
                raise StoreError(f"month '{month}' is not YYYY-MM") from None
            nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
            q = q.where(RecordRow.date >= first, RecordRow.date < nxt)
        rank = {r: i for i, r in enumerate(REVIEW_REASONS)}
        with self._sessions() as s:
            rows = s.execute(q).all()
        items = []
        for item, src, date, fields, current in rows:
            items.append({
                "id": item.id, "record_id": item.record_id, "reason": item.reason, "suggested": item.suggested,
                "score": item.score, "model_id": item.model_id, "details": item.details, "created": item.created,
                "who": item.who, "status": item.status, "current_label": current, "source": src, "date": date,
                "fields": fields or {}, "resolution": item.resolution, "resolved_by": item.resolved_by,
                "resolved_at": item.resolved_at,
            })
        items.sort(key=lambda it: (rank.get(it["reason"], len(rank)), it["score"] if it["score"] is not None else -1.0,
                                   it["record_id"]))
        return items[:limit] if limit is not None else items

    def resolve_review(
        self,
        record_id: str,
        *,
        who: str,
        action: str,
        category: str | None = None,
        note: str | None = None,
        relabel_id: str | None = None,
    ) -> dict[str, Any]:
        """Close a record's open review items: `confirm` (its label, or the suggestion), `correct` (to `category`), `skip`.

        Confirm and correct write the label through the journal (`assign`:
        who, when, which suggestion) unless it already is the current label.
        Returns {"label_id", "category", "closed"}.
        """
        if action not in ("confirm", "correct", "skip"):
            raise StoreError(f"review action '{action}' is unknown; expected confirm, correct or skip")
        with self._sessions() as s:
            open_items = s.scalars(
                select(ReviewItemRow).where(ReviewItemRow.record_id == record_id, ReviewItemRow.status == "open")
            ).all()
            current = s.scalar(select(LabelRow.category).where(LabelRow.record_id == record_id, LabelRow.is_current == sa.true()))
        suggestion = next((i.suggested for i in open_items if i.suggested), None)
        label_id = None
        chosen = None
        if action == "correct":
            if not category:
                raise StoreError("review: a correction needs the category (e.g. correct C2)")
            chosen = category
        elif action == "confirm":
            chosen = category or suggestion or current
            if chosen is None:
                raise StoreError(f"review: record '{record_id}' has no label or suggestion to confirm; correct it instead")
        if chosen is not None and chosen != current:
            reason = f"review:{action}" + (f":suggested={suggestion}" if suggestion else "")
            label_id = self.assign(record_id, chosen, who=who, reason=reason[:200], relabel_id=relabel_id)
        now = _now()
        status = "skipped" if action == "skip" else "done"
        resolution = {"confirm": "confirmed", "correct": "corrected", "skip": "skipped"}[action]
        with self._session() as s:
            ids = [i.id for i in open_items]
            if ids:
                s.execute(update(ReviewItemRow).where(ReviewItemRow.id.in_(ids)).values(
                    status=status, resolved_at=now, resolved_by=who, resolution=resolution, label_id=label_id,
                ))
                if note:
                    for item in s.scalars(select(ReviewItemRow).where(ReviewItemRow.id.in_(ids))):
                        item.details = {**(item.details or {}), "note": note[:2000]}
        return {"label_id": label_id, "category": chosen if chosen is not None else current, "closed": len(open_items)}

    def close_review_items(self, record_ids: Iterable[str], *, who: str, resolution: str = "corrected") -> int:
        """Mark the open review items of these records done (they were decided elsewhere, e.g. a decisions file)."""
        ids = sorted(set(map(str, record_ids)))
        closed = 0
        with self._session() as s:
            for c in _chunks(ids):
                closed += s.execute(
                    update(ReviewItemRow).where(ReviewItemRow.record_id.in_(c), ReviewItemRow.status == "open")
                    .values(status="done", resolution=resolution, resolved_by=who, resolved_at=_now())
                ).rowcount or 0
        return closed

    def purge_records(self, ids: Iterable[str], *, who: str) -> dict[str, int]:
        """Delete records everywhere in the store: text, labels, decisions, review items, LLM cache rows naming them.

        Models trained on them are marked (`manifest` untouched; `metrics.purged_records` counts them) so
        they can be retrained; the purge itself is recorded as a run (ids only).
        """
        _require_who(who)
        id_list = sorted(set(map(str, ids)))
        counts = {"records": 0, "labels": 0, "decisions": 0, "review_items": 0}
        with self._session() as s:
            for c in _chunks(id_list):
                counts["labels"] += s.execute(sa.delete(LabelRow).where(LabelRow.record_id.in_(c))).rowcount or 0
                counts["decisions"] += s.execute(sa.delete(PredictionRow).where(PredictionRow.record_id.in_(c))).rowcount or 0
                counts["review_items"] += s.execute(sa.delete(ReviewItemRow).where(ReviewItemRow.record_id.in_(c))).rowcount or 0
                counts["records"] += s.execute(sa.delete(RecordRow).where(RecordRow.id.in_(c))).rowcount or 0
            s.add(RunRow(id=_new_id(), kind="purge", params={"who": who, "records": len(id_list)}, started=_now(),
                         finished=_now(), status="ok", summary=dict(counts)))
            if counts["records"]:
                for m in s.scalars(select(ModelRow)):
                    m.metrics = {**(m.metrics or {}), "purged_records_since_training": (m.metrics or {}).get(
                        "purged_records_since_training", 0) + counts["records"]}
        return counts

    def start_run(self, kind: str, params: Mapping[str, Any] | None = None) -> str:
        run_id = _new_id()
        with self._session() as s:
            s.add(RunRow(id=run_id, kind=kind, params=json.loads(json.dumps(dict(params or {}), default=str)),
                         started=_now(), finished=None, status="running", summary=None))
        return run_id

    def finish_run(self, run_id: str, status: str = "ok", summary: Mapping[str, Any] | None = None) -> None:
        with self._session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise StoreError(f"run '{run_id}' is not in the store; pass the id start_run returned")
            run.finished, run.status = _now(), status
            run.summary = json.loads(json.dumps(dict(summary or {}), default=str))

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(RunRow).order_by(RunRow.started)
        if kind is not None:
            q = q.where(RunRow.kind == kind)
        with self._sessions() as s:
            return [{"id": r.id, "kind": r.kind, "params": r.params, "started": r.started, "finished": r.finished,
                     "status": r.status, "summary": r.summary} for r in s.scalars(q)]

    # ----- LLM cache ------------------------------------------------------------------------
    def cache_get(self, key: str) -> Any | None:
        with self._sessions() as s:
            row = s.get(LlmCacheRow, key)
            return None if row is None else row.response

    def cache_put(self, key: str, model: str, response: Any) -> None:
        """Store a response; an existing entry for the key is replaced."""
        with self._session() as s:
            row = s.get(LlmCacheRow, key)
            if row is None:
                s.add(LlmCacheRow(key=key, model=model, response=response, created=_now()))
            else:
                row.model, row.response, row.created = model, response, _now()

    # ----- statistics -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts: records, labelled, by current category, by source, by month of the record date."""
        with self._sessions() as s:
            n_records = s.scalar(select(func.count()).select_from(RecordRow)) or 0
            by_category = dict(s.execute(
                select(LabelRow.category, func.count()).where(LabelRow.is_current == sa.true())
                .group_by(LabelRow.category).order_by(LabelRow.category)
            ).tuples().all())
            by_source: Counter[str] = Counter()
            for source, n in s.execute(select(RecordRow.source, func.count()).group_by(RecordRow.source)):
                by_source[source or ""] += n
            by_month: Counter[str] = Counter()
            for date, n in s.execute(select(RecordRow.date, func.count()).group_by(RecordRow.date)):
                by_month[date.strftime("%Y-%m") if date is not None else "undated"] += n
        return {
            "records": n_records,
            "labelled": sum(by_category.values()),
            "by_category": by_category,
            "by_source": dict(sorted(by_source.items())),
            "by_month": dict(sorted(by_month.items())),
        }


    # ----- API keys of the review service -------------------------------------------------
    def add_api_key(self, *, name: str, role: str, key_hash: str, prefix: str, who: str) -> dict[str, Any]:
        """Record a new key by its hash (the key itself is never stored); returns its row."""
        from .models import ApiKeyRow

        _require_who(who)
        if not name or not name.strip():
            raise StoreError("a key needs a name (who or what uses it), e.g. --name billing-system")
        row = ApiKeyRow(id=_new_id()[:16], name=name.strip()[:200], role=role, key_hash=key_hash, prefix=prefix,
                        created=_now(), created_by=who, revoked_at=None)
        with self._session() as s:
            s.add(row)
        return _api_key_dict(row)

    def api_keys(self) -> list[dict[str, Any]]:
        """Every key ever created, oldest first (hashes left out)."""
        from .models import ApiKeyRow

        with self._sessions() as s:
            return [_api_key_dict(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created))]

    def api_key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        """The key with this hash, unless revoked; None when there is none."""
        from .models import ApiKeyRow

        with self._sessions() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))).first()
            return _api_key_dict(row) if row is not None else None

    def revoke_api_key(self, ref: str) -> dict[str, Any]:
        """Revoke a key named by its id, its prefix or its name (when unique); returns its row."""
        from .models import ApiKeyRow

        with self._session() as s:
            rows = s.scalars(select(ApiKeyRow).where(
                sa.or_(ApiKeyRow.id == ref, ApiKeyRow.prefix == ref, ApiKeyRow.name == ref),
                ApiKeyRow.revoked_at.is_(None))).all()
            if not rows:
                raise StoreError(f"no active key '{ref}' in the store; see `taxonomist keys list` for ids")
            if len(rows) > 1:
                raise StoreError(f"'{ref}' names {len(rows)} active keys ({', '.join(r.id for r in rows)}); revoke by id")
            rows[0].revoked_at = _now()
            return _api_key_dict(rows[0])

# Any fixed 64-bit key: the PostgreSQL advisory lock that writers of records and labels take.
_WRITERS_LOCK = 7_261_786_768_756_213


def _writers_take_turns(s: Session) -> None:
    """On PostgreSQL, wait for other writers of records and labels to commit (SQLite's write lock does this).

    Two imports of the same ids would otherwise both see them missing and both insert
    them (a unique violation), and two label writes could both make a label current.
    """
    if s.get_bind().dialect.name == "postgresql":
        s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITERS_LOCK})


def _model_dict(m: ModelRow) -> dict[str, Any]:
    return {"id": m.id, "engine": m.engine, "status": m.status or "candidate",
            "taxonomy_version": m.taxonomy_version or (m.manifest or {}).get("taxonomy_version"),
            "metrics": m.metrics or {}, "manifest": m.manifest, "path": m.path, "parent": m.parent, "created": m.created}


def _evidence_ref(e: Any) -> dict[str, Any]:
    """Evidence as the decision log keeps it: kind, category, score and the record id or code; never text."""
    d = asdict(e) if is_dataclass(e) else dict(e)
    d.pop("text", None)
    return d


#: Prediction.extra keys worth keeping in the decision log (small, never text).
_EXTRA_KEYS = ("mapped_from", "model_category", "note", "threshold", "stage", "stages", "prompt_id", "model",
               "from_cache", "repaired", "invalid_output", "confidence_source", "shortlist")


def _decision_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    return {k: extra[k] for k in _EXTRA_KEYS if k in extra}


def _api_key_dict(r: Any) -> dict[str, Any]:
    return {k: getattr(r, k) for k in ("id", "name", "role", "prefix", "created", "created_by", "revoked_at")}


def _require_who(who: str) -> None:
    if not who or not str(who).strip():
        raise StoreError("who is required: every label records who made it (pass --who)")


def _to_record(row: RecordRow, category: str | None) -> Record:
    return Record(id=row.id, text=row.text, fields=dict(row.fields or {}), source=row.source, date=row.date, label=category)


def _label_dict(r: LabelRow) -> dict[str, Any]:
    return {k: getattr(r, k) for k in (
        "id", "record_id", "category", "taxonomy_version", "who", "labelled_at", "is_current",
        "replaces_label_id", "reason", "original_category", "run_id",
    )}


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


_BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Foreign keys on, so SQLite enforces what PostgreSQL does. WAL with
    # synchronous=NORMAL makes a commit ~10x cheaper and never corrupts the file;
    # a power cut can lose only the last commits. A writer waits up to
    # _BUSY_TIMEOUT_S for another process's write lock, then `_sqlite_locked` says so.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_S * 1000}")
    # Switching a new file to WAL needs it to itself for a moment; processes opening a new store together
    # can be refused at once (no busy wait), so try again until the timeout.
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:  # sqlite3.OperationalError: database is locked
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02 + random.random() * 0.08)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_started(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any, _many: bool) -> None:
    conn.info["taxonomist_started"] = time.monotonic()


class _StoreLocked(StoreError):
    """Another process held the SQLite write lock longer than the busy timeout."""

    def __init__(self, message: str, waited: float) -> None:
        super().__init__(message)
        self.waited = waited


def _sqlite_locked(context: Any, shown: str) -> None:
    """handle_error hook: SQLite's 'database is locked' becomes one StoreError line instead of a traceback."""
    orig = context.original_exception
    if not (isinstance(orig, Exception) and type(orig).__name__ == "OperationalError" and "locked" in str(orig)):
        return
    started = context.connection.info.get("taxonomist_started") if context.connection is not None else None
    # No statement start recorded (refused while connecting): it was refused at once, so `_retrying` may retry.
    waited = time.monotonic() - started if started is not None else 0.0
    raise _StoreLocked(
        f"the store {shown} is locked by another process (waited {waited:.0f} s); retry when it finishes",
        waited,
    ) from None


def _retrying(action: Callable[[], T], retry_on: tuple[type[BaseException], ...], attempts: int = 3) -> T:
    """Run a transaction again when it lost a race: a unique violation (re-read finds the winner's row),
    or SQLite refusing a lock at once (a read snapshot that cannot be upgraded) rather than after its timeout.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except _StoreLocked as exc:
            if exc.waited >= 1.0 or attempt == attempts:
                raise
        except retry_on:
            if attempt == attempts:
                raise
        time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
