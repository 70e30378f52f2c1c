"""The review queue and review decisions: confirm, correct or skip, through the label journal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ..deps import Reviewer, State
from ..schemas import ReviewItemOut, ReviewQueue, ReviewRequest, ReviewResult, UndoRequest

router = APIRouter(prefix="/v1/review", tags=["review"])


def queue_items(state, *, reason=None, category=None, source=None, payer=None, month=None) -> list[dict]:
    """Open review items, most useful first, filtered (payer is a structured field of the record)."""
    items = state.store.review_queue(reason=reason, category=category, source=source, month=month)
    if payer is not None:
        items = [i for i in items if str((i.get("fields") or {}).get("payer", "")) == payer]
    return items


@router.get("/queue", response_model=ReviewQueue)
def queue(
    state: State,
    caller: Reviewer,
    reason: Annotated[str | None, Query(description="below_threshold, split, ambiguous_crosswalk, ...")] = None,
    category: Annotated[str | None, Query(description="The suggestion or current label.")] = None,
    source: str | None = None,
    payer: str | None = None,
    month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM of the record's date.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ReviewQueue:
    """Records waiting for a person, most useful first: by reason, then lowest confidence (never their text)."""
    items = queue_items(state, reason=reason, category=category, source=source, payer=payer, month=month)
    return ReviewQueue(total=len(items), items=[
        ReviewItemOut(record_id=i["record_id"], reason=i["reason"], suggested=i["suggested"], score=i["score"],
                      model_id=i["model_id"], current_label=i["current_label"], source=i["source"],
                      payer=(i.get("fields") or {}).get("payer"), date=i["date"], details=i["details"] or {})
        for i in items[:limit]
    ])


@router.post("/undo", response_model=ReviewResult)
async def undo(body: UndoRequest, state: State, caller: Reviewer) -> ReviewResult:
    """Undo a review made through this server: the label is reverted in the journal and the item reopened."""
    done = await run_in_threadpool(state.undo, body.review_id, who=caller.name)
    return ReviewResult(record_id=done.record_id, action="undo", category=None, label_id=None, closed=0,
                        index_updated=done.added_example, review_id=done.review_id)


@router.post("/{record_id}", response_model=ReviewResult)
async def review(record_id: str, body: ReviewRequest, state: State, caller: Reviewer) -> ReviewResult:
    """Confirm, correct (with `category`) or skip a record, with a note.

    The label is written through the journal (who, when, which suggestion), and
    the served model's retrieval index (knn, llm) learns it at once.
    """
    result, done = await run_in_threadpool(state.review, record_id, who=caller.name, action=body.action,
                                           category=body.category, note=body.note)
    return ReviewResult(record_id=record_id, action=body.action, category=result.get("category"),
                        label_id=result.get("label_id"), closed=result.get("closed", 0),
                        index_updated=done.added_example, review_id=done.review_id)
