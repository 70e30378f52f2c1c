"""POST /v1/classify: decisions for up to `max_records` records, logged in the decision log, micro-batched."""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from ...records import Record
from ..deps import Classifier, State
from ..schemas import ClassifyRequest, ClassifyResponse, DecisionOut

router = APIRouter(prefix="/v1", tags=["classify"])


@router.post("/classify", response_model=ClassifyResponse)
async def classify(body: ClassifyRequest, state: State, caller: Classifier) -> ClassifyResponse:
    """A decision per record (a category, or NONE with its reason), through the served model's one decision path.

    Every decision goes to the decision log (never the text); NONE decisions join
    the review queue. Concurrent requests share one model call (micro-batching).
    """
    limit = state.settings.max_records
    if len(body.records) > limit:
        raise HTTPException(413, f"{len(body.records)} records in one call; send at most {limit} per call "
                                 "(split the batch)")
    if state.model is None:
        raise HTTPException(503, f"no model is loaded ({state.model_error or 'serve was started without --model'}); "
                                 "train and activate one (`taxonomist models activate ID`) and restart")
    dup = next((i for i, n in Counter(r.id for r in body.records).items() if n > 1), None)
    if dup is not None:
        raise HTTPException(422, f"record id '{dup}' appears twice in this call; ids must be unique per call")
    records = [Record(id=r.id, text=r.text, fields=dict(r.fields), source=r.source, date=r.date) for r in body.records]
    if body.keep_records:
        await run_in_threadpool(state.store.add_records, records, who=caller.name)
    preds = await asyncio.wrap_future(state.batcher.submit(records))
    return ClassifyResponse(decisions=[
        DecisionOut(
            id=r.id, category=p.category, confidence=round(float(p.confidence), 6), reason=p.reason or "",
            alternatives=[{"category": a.category, "score": round(float(a.score), 6)} for a in p.alternatives],
            evidence=[{"kind": e.kind, "category": e.category, "score": round(float(e.score), 6), "ref": e.ref}
                      for e in p.evidence],
            model_id=p.model_id, taxonomy_version=p.taxonomy_version, route=p.route,
        )
        for r, p in zip(records, preds)
    ])
