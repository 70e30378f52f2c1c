"""The web review page: sign in with a key, the queue, one record at a time by keyboard, taxonomy, dashboard.

Server-rendered (Jinja2) with one small script; every asset is served from
/ui/static. Signing in keeps an HttpOnly, SameSite=Strict session cookie; every
form carries the session's CSRF token.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from ... import service
from ...errors import TaxonomistError
from ..charts import bar_chart, line_chart
from ..deps import State
from ..errors import NotFound
from ..keys import hash_key, role_allows
from ..state import ServiceState, Session
from .review import queue_items

__all__ = ["router", "mount_static"]

HERE = Path(__file__).resolve().parent.parent
COOKIE = "tx_session"
LOGIN_COOKIE = "tx_login"
router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))

#: Structured fields shown first on the record page, in this order.
FIELD_ORDER = ("date", "payer", "group_code", "carc", "rarcs", "cpt", "modifiers", "pos", "billed_amount",
               "paid_amount", "adjustment_amount", "claim_id", "line")


def mount_static(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/queue", status_code=303)


def _session(request: Request, state: ServiceState) -> Session | None:
    return state.session(request.cookies.get(COOKIE))


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


def _check_csrf(session: Session, token: str) -> None:
    if not secrets.compare_digest(session.csrf, token or ""):
        raise HTTPException(403, "the form is out of date (CSRF token mismatch); reload the page and try again")


def _page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, **context})


# ----- sign in / out ----------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, error: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", None, csrf=token, error=error)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/ui")
    return response


@router.post("/login")
def login(request: Request, state: State, key: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "") -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf):
        return RedirectResponse("/ui/login?error=expired", status_code=303)
    digest = hash_key(key.strip())
    row = state.store.api_key_by_hash(digest) if key else None
    if row is None:
        return RedirectResponse("/ui/login?error=invalid", status_code=303)
    if not role_allows(row["role"], "reviewer"):
        return RedirectResponse("/ui/login?error=role", status_code=303)
    token = state.new_session(row, digest)
    response = RedirectResponse("/ui/review/next", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=state.settings.secure_cookies,
                        max_age=int(state.settings.session_hours * 3600), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(request: Request, state: State, csrf: Annotated[str, Form()] = "") -> Response:
    session = _session(request, state)
    if session is not None:
        _check_csrf(session, csrf)
        state.sessions.pop(request.cookies.get(COOKIE, ""), None)
    response = _to_login()
    response.delete_cookie(COOKIE, path="/")
    return response


# ----- the queue and one record -------------------------------------------------------------------
@router.get("/queue")
def queue(request: Request, state: State, reason: str | None = None, category: str | None = None,
          payer: str | None = None, month: str | None = None) -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    filters = {k: v or None for k, v in (("reason", reason), ("category", category), ("payer", payer), ("month", month))}
    try:
        items = queue_items(state, **filters)
    except TaxonomistError as exc:
        items, filters["error"] = [], str(exc)
    return _page(request, "queue.html", session, items=items[:200], total=len(items), filters=filters)


@router.get("/review/next")
def review_next(request: Request, state: State) -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    items = state.store.review_queue(limit=1)
    if not items:
        return _page(request, "done.html", session)
    return RedirectResponse(f"/ui/review/{items[0]['record_id']}", status_code=303)


@router.get("/review/{record_id}")
def review_page(request: Request, state: State, record_id: str) -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    return _page(request, "record.html", session, **_record_context(state, record_id))


def _record_context(state: ServiceState, record_id: str) -> dict[str, Any]:
    from ...audit import review_evidence
    from ...demo_data._codes import code_table

    store = state.store
    record = next(iter(store.records([record_id])), None)
    if record is None:
        raise NotFound(f"record '{record_id}' is not in the store (classify it with keep_records to review it)")
    items = [i for i in store.review_queue() if i["record_id"] == record_id]
    tax = state.taxonomy()
    prediction = state.suggest(record) if state.model is not None else None
    codes = code_table()
    fields = dict(record.fields or {})
    if record.date is not None:
        fields.setdefault("date", record.date.isoformat())
    shown = [(k, fields[k]) for k in FIELD_ORDER if fields.get(k) not in (None, "")]
    shown += [(k, v) for k, v in sorted(fields.items()) if k not in FIELD_ORDER and k not in ("text", "label")
              and v not in (None, "")][:12]
    code_notes = []
    for carc in str(fields.get("carc", "") or "").replace(",", " ").split():
        code_notes.append(("CARC " + carc, codes.get(("CARC", carc), "(not in the vendored 2012 table)")))
    for rarc in str(fields.get("rarcs", "") or "").replace(",", " ").split():
        code_notes.append(("RARC " + rarc, codes.get(("RARC", rarc), "(not in the vendored 2012 table)")))
    alternatives = []
    if prediction is not None:
        for a in prediction.alternatives:
            cat = tax[a.category] if tax is not None and a.category in tax else None
            alternatives.append({"code": a.category, "score": a.score, "category": cat})
    suggested = next((i["suggested"] for i in items if i.get("suggested")), None)
    if suggested is None and prediction is not None:
        suggested = prediction.category if not prediction.abstained else None
    evidence = [e for e in (prediction.evidence if prediction is not None else ()) if e.kind == "example"]
    stored = {r.id: r for r in store.records([e.ref for e in evidence])}
    # The index keeps the label it was given; the store's current label is shown beside it when they differ.
    examples = [{"ref": e.ref, "category": e.category, "score": e.score,
                 "text": e.text or (stored[e.ref].text if e.ref in stored else ""),
                 "label": stored[e.ref].label if e.ref in stored else None} for e in evidence]
    categories = [{"code": c.code, "name": c.name, "group": c.group} for c in (tax.active_categories if tax else ())]
    history = store.label_history(record_id)
    suspicion = next((ev for ev in (review_evidence(i, record.label, tax) for i in items) if ev), None)
    if suspicion:  # the audit's nearest labelled records, with their text and current label for the reviewer
        near = {r.id: r for r in store.records([n["id"] for n in suspicion["neighbours"]])}
        for n in suspicion["neighbours"]:
            n.update(text=near[n["id"]].text if n["id"] in near else "", now=near[n["id"]].label if n["id"] in near else None)
    return {
        "record": record, "fields": shown, "code_notes": code_notes, "items": items, "prediction": prediction,
        "alternatives": alternatives, "suggested": suggested, "examples": examples,
        "categories_json": json.dumps(categories), "history": history, "open_total": len(store.review_queue()),
        "suspicion": suspicion,
    }


@router.post("/review/{record_id}")
async def review_submit(request: Request, state: State, record_id: str, csrf: Annotated[str, Form()] = "",
                        action: Annotated[str, Form()] = "", category: Annotated[str, Form()] = "",
                        note: Annotated[str, Form()] = "") -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    _check_csrf(session, csrf)
    if action not in ("confirm", "correct", "skip"):
        raise NotFound(f"unknown action '{action[:20]}'; expected confirm, correct or skip")
    _, done = await run_in_threadpool(state.review, record_id, who=session.name, action=action,
                                      category=category or None, note=note[:2000] or None)
    session.undo.append(done.review_id)
    return RedirectResponse("/ui/review/next", status_code=303)


@router.post("/undo")
async def undo(request: Request, state: State, csrf: Annotated[str, Form()] = "") -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    _check_csrf(session, csrf)
    if not session.undo:
        return RedirectResponse("/ui/review/next", status_code=303)
    done = await run_in_threadpool(state.undo, session.undo.pop(), who=session.name)
    return RedirectResponse(f"/ui/review/{done.record_id}", status_code=303)


# ----- taxonomy and dashboard ---------------------------------------------------------------------
@router.get("/taxonomy")
def taxonomy_page(request: Request, state: State) -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    tax = state.taxonomy()
    counts = state.store.stats()["by_category"]
    return _page(request, "taxonomy.html", session, taxonomy=tax, counts=counts,
                 versions=list(reversed(state.store.taxonomy_versions())))


@router.get("/dashboard")
def dashboard(request: Request, state: State) -> Response:
    session = _session(request, state)
    if session is None:
        return _to_login()
    model_id = state.model.model_id if state.model is not None else None
    stats = service.decision_stats(state.store, model_id=model_id)
    months = [m["month"] for m in stats["by_month"]]
    latest = stats["by_month"][-1]["categories"] if stats["by_month"] else {}
    charts = {
        "volume": bar_chart([(m["month"], m["decisions"]) for m in stats["by_month"]], title="Decisions by month"),
        "coverage": line_chart(months, [m["coverage"] for m in stats["by_month"]], title="Coverage (answered share)"),
        "confidence": line_chart(months, [m["mean_confidence"] for m in stats["by_month"]], title="Mean confidence"),
        "reasons": bar_chart(list(stats["abstain_reasons"].items()), title="Why NONE", color="#d62728"),
        "mix": bar_chart(list(latest.items())[:12], title=f"Category mix, {months[-1] if months else '-'}",
                         color="#9467bd"),
    }
    return _page(request, "dashboard.html", session, stats=stats, charts=charts)
