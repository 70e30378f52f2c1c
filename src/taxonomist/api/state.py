"""The running service: the store, the served model, the batcher, the current taxonomy, sessions and undo.

One `ServiceState` per app, made by the app's lifespan (never at import time)
and reached by routes through the `State` dependency.
"""

from __future__ import annotations

import inspect
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import service
from ..records import Record
from .batcher import MicroBatcher
from .errors import NotFound
from .settings import ApiSettings

if TYPE_CHECKING:
    from ..prediction import Prediction
    from ..store import Store
    from ..taxonomy import Taxonomy

__all__ = ["ServiceState", "Session", "ReviewDone"]

_UNDO_KEPT = 10_000


@dataclass
class ReviewDone:
    """What one review changed, so that it can be undone: the journal run, the reopened items, the index edit."""

    review_id: str
    record_id: str
    action: str
    category: str | None
    items: list[dict[str, Any]]  # the review items it closed (to reopen on undo)
    added_example: bool = False
    had_example: bool = False  # the record was already in the index (a training example), under `replaced_label`
    replaced_label: str | None = None
    undone: bool = False


@dataclass
class Session:
    """A signed-in web reviewer: which key, the CSRF token of their forms, their last decisions (for U)."""

    key_id: str
    name: str
    role: str
    csrf: str
    expires: float
    key_hash: str
    undo: list[str] = field(default_factory=list)


class ServiceState:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.model: service.LoadedModel | None = None
        self.model_error: str = ""
        self.batcher: MicroBatcher | None = None
        self._taxonomy: Taxonomy | None = None
        self._taxonomy_checked = 0.0
        self._taxonomy_lock = threading.Lock()
        self.sessions: dict[str, Session] = {}
        self.reviews: dict[str, ReviewDone] = {}

    # ----- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        self.store = service.open_store(self.settings.service)
        if self.settings.model:
            try:
                self.model = service.load_model(self.settings.model, self.store)
            except Exception as exc:  # serve the rest (review, taxonomy); /readyz says why not ready
                self.model_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        s = self.settings
        self.batcher = MicroBatcher(self._classify_batch, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
                                    enabled=s.micro_batching)
        self.batcher.start()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        if self.store is not None:
            self.store.close()

    # ----- the taxonomy the service decides in --------------------------------------------
    def taxonomy(self, *, refresh: bool = False) -> Taxonomy | None:
        """The store's latest taxonomy; its version is re-checked every `taxonomy_refresh_s` (another process may change it)."""
        assert self.store is not None
        now = time.monotonic()
        with self._taxonomy_lock:
            if refresh or self._taxonomy is None or now - self._taxonomy_checked > self.settings.taxonomy_refresh_s:
                versions = self.store.taxonomy_versions()
                latest = versions[-1]["version_id"] if versions else None
                if latest is None:
                    self._taxonomy = None
                elif self._taxonomy is None or self._taxonomy.version_id != latest:
                    self._taxonomy = self.store.get_taxonomy()
                self._taxonomy_checked = now
            return self._taxonomy

    # ----- classify -------------------------------------------------------------------------
    def _classify_batch(self, records: list[Record]) -> list[Prediction]:
        """One `service.classify` call (one `predict_batch`) for records gathered from many requests."""
        assert self.model is not None and self.store is not None
        out: list[Prediction] = []
        service.classify(self.model.engine, records, store=self.store, taxonomy=self.taxonomy(),
                         batch_size=max(1, len(records)), top_k=self.settings.top_k, who="api",
                         on_batch=lambda _recs, preds: out.extend(preds))
        return out

    def suggest(self, record: Record) -> Prediction:
        """A fresh suggestion with evidence for the review page (not logged), made in the model's thread."""
        assert self.model is not None and self.batcher is not None
        engine, tax = self.model.engine, self.taxonomy()
        return self.batcher.call(
            lambda: engine.predict_batch([record.text], ids=[record.id], top_k=9, evidence=True, taxonomy=tax)[0]
        ).result()

    # ----- review -------------------------------------------------------------------------
    def review(self, record_id: str, *, who: str, action: str, category: str | None, note: str | None) -> tuple[dict[str, Any], ReviewDone]:
        """Resolve a record's review through the label journal, then teach the retrieval index the label at once."""
        assert self.store is not None
        records = list(self.store.records([record_id]))
        if not records:
            raise NotFound(f"record '{record_id}' is not in the store")
        record = records[0]
        items = [i for i in self.store.review_queue() if i["record_id"] == record_id]
        review_id = self.store.start_run("review", {"record_id": record_id, "action": action, "who": who})
        try:
            result = self.store.resolve_review(record_id, who=who, action=action, category=category, note=note,
                                               relabel_id=review_id)
        except BaseException:
            self.store.finish_run(review_id, "failed")
            raise
        self.store.finish_run(review_id, "ok", {"label_id": result["label_id"], "closed": result["closed"]})
        done = ReviewDone(review_id, record_id, action, result.get("category"),
                          [{k: i[k] for k in ("reason", "suggested", "score", "model_id", "details")} for i in items])
        if action != "skip" and result.get("category") and result["label_id"] is not None:
            done.replaced_label = record.label
            done.added_example, done.had_example = self._learn(record, str(result["category"]))
        self.reviews[review_id] = done
        while len(self.reviews) > _UNDO_KEPT:  # undo reaches back this far; the journal keeps everything
            self.reviews.pop(next(iter(self.reviews)))
        return result, done

    def _learn(self, record: Record, label: str) -> tuple[bool, bool]:
        """Put a reviewed record into the served model's retrieval index (knn, llm).

        Returns (added, had): whether it was added (False when the engine has no
        index), and whether the record was in the index before (its old example is replaced).
        """
        if self.model is None or self.batcher is None or not hasattr(self.model.engine, "add_examples"):
            return False, False
        engine = self.model.engine

        def learn() -> tuple[bool, bool]:
            had = hasattr(engine, "remove_examples") and record.id in set(getattr(engine, "refs_", ()))
            if had:
                engine.remove_examples(refs=[record.id])  # its old label must not vote any more
            if "refs" in inspect.signature(engine.add_examples).parameters:
                engine.add_examples([record.text], [label], refs=[record.id])
            else:
                engine.add_examples([record.text], [label])
            return True, had

        return self.batcher.call(learn).result()

    def undo(self, review_id: str, *, who: str) -> ReviewDone:
        """Undo a review: its label is reverted through the journal, its items reopened, the index restored."""
        assert self.store is not None
        done = self.reviews.get(review_id)
        if done is None or done.undone:
            raise NotFound(f"review '{review_id}' is unknown to this server or already undone")
        if done.action != "skip":
            self.store.revert_relabel(review_id, who=who)
        if done.items:
            self.store.add_review_items([{**i, "record_id": done.record_id} for i in done.items], who=who)
        if done.added_example and self.model is not None and self.batcher is not None:
            engine, record_id, old = self.model.engine, done.record_id, done.replaced_label
            record = next(iter(self.store.records([record_id])), None)

            def unlearn() -> None:
                if hasattr(engine, "remove_examples"):  # an llm index cannot forget; knn can
                    engine.remove_examples(refs=[record_id])
                    if done.had_example and old and record is not None:
                        engine.add_examples([record.text], [old], refs=[record_id])

            self.batcher.call(unlearn).result()
        done.undone = True
        return done

    # ----- web sessions ------------------------------------------------------------------------
    def new_session(self, key: dict[str, Any], key_hash: str) -> str:
        now = time.time()
        for old in [t for t, s in self.sessions.items() if s.expires < now]:  # sessions nobody came back to
            self.sessions.pop(old, None)
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(key["id"], key["name"], key["role"], secrets.token_urlsafe(24),
                                       time.time() + self.settings.session_hours * 3600, key_hash)
        return token

    def session(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self.sessions.get(token)
        # A revoked key ends its sessions at once.
        if s is None or s.expires < time.time() or self.store is None or self.store.api_key_by_hash(s.key_hash) is None:
            self.sessions.pop(token, None)
            return None
        return s
