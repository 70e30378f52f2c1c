"""GET /v1/stats: volume, coverage, abstain reasons, category mix by month and a drift signal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ... import service
from ..deps import Reviewer, State

router = APIRouter(prefix="/v1", tags=["stats"])


@router.get("/stats")
def stats(
    state: State,
    caller: Reviewer,
    all_models: Annotated[bool, Query(description="Count every model's decisions, not only the served one's.")] = False,
    months: Annotated[int, Query(ge=1, le=120)] = 12,
) -> dict[str, Any]:
    """From the decision log (see `taxonomist.service.decision_stats` for the drift signal's definition)."""
    model_id = None if all_models or state.model is None else state.model.model_id
    return service.decision_stats(state.store, model_id=model_id, months=months)
