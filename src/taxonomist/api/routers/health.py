"""/healthz (the process answers) and /readyz (a model is loaded and the store answers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    checks: dict[str, object] = {}
    try:
        checks["store"] = state.store is not None and state.store.schema_version > 0
    except Exception as exc:  # reachable or not is the answer; the message names no record
        checks["store"] = False
        checks["store_error"] = type(exc).__name__
    checks["model"] = state.model.model_id if state.model is not None else False
    if state.model is None:
        checks["model_error"] = state.model_error or "no model configured"
    if state.batcher is not None:  # how well micro-batching gathers: classified records per model call
        checks["model_calls"], checks["classified"] = state.batcher.batches, state.batcher.items
    ready = bool(checks["store"]) and state.model is not None
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)
