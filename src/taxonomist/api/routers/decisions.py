"""GET /v1/decisions/{record_id}: a record's audit trail (every decision, every label) from the store."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import Reviewer, State
from ..errors import NotFound
from ..schemas import AuditTrail

router = APIRouter(prefix="/v1", tags=["decisions"])


@router.get("/decisions/{record_id}", response_model=AuditTrail)
def decisions(record_id: str, state: State, caller: Reviewer) -> AuditTrail:
    """Every decision a model made about the record (oldest first) and every label it has had."""
    store = state.store
    rows = store.predictions(record_id=record_id)
    labels = store.label_history(record_id)
    stored = any(True for _ in store.records([record_id]))
    if not rows and not labels and not stored:
        raise NotFound(f"record '{record_id}' has no decisions, labels or stored record")
    current = next((lab["category"] for lab in labels if lab["is_current"]), None)
    return AuditTrail(record_id=record_id, stored=stored, current_label=current, decisions=rows, labels=labels)
