"""The store's taxonomy: versions, diffs, and operations (admin) whose impact a dry run shows first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ... import service
from ...errors import TaxonomyError
from ..deps import Admin, Reviewer, State
from ..errors import NotFound
from ..schemas import OperationRequest, OperationResult, TaxonomyDiff, TaxonomyVersionOut

router = APIRouter(prefix="/v1/taxonomy", tags=["taxonomy"])


def _taxonomy(state, version: str | None):
    tax = state.store.get_taxonomy(version) if version else state.taxonomy()
    if tax is None:
        raise NotFound("the store has no taxonomy yet; import one (`taxonomist import --taxonomy T.yaml`)")
    return tax


@router.get("")
def taxonomy(state: State, caller: Reviewer, version: str | None = None) -> dict[str, Any]:
    """The latest taxonomy (or `version`): groups, categories with definitions and rules, changelog."""
    tax = _taxonomy(state, version)
    return {"version_id": tax.version_id, **tax.to_dict()}


@router.get("/versions", response_model=list[TaxonomyVersionOut])
def versions(state: State, caller: Reviewer) -> list[dict[str, Any]]:
    """Every stored version, oldest first, with the changelog entry that made it."""
    return state.store.taxonomy_versions()


@router.get("/diff", response_model=TaxonomyDiff)
def diff(
    state: State,
    caller: Reviewer,
    from_version: Annotated[str | None, Query(alias="from", description="Default: the version before `to`.")] = None,
    to_version: Annotated[str | None, Query(alias="to", description="Default: the latest.")] = None,
) -> TaxonomyDiff:
    """What changed between two stored versions (+ added, - removed, ~ field changed)."""
    known = [v["version_id"] for v in state.store.taxonomy_versions()]
    if not known:
        raise NotFound("the store has no taxonomy yet")
    to_id = to_version or known[-1]
    if from_version is None:
        if to_id not in known or known.index(to_id) == 0:
            raise NotFound(f"version {to_id} has no earlier version to compare with; pass ?from=")
        from_version = known[known.index(to_id) - 1]
    a, b = _taxonomy(state, from_version), _taxonomy(state, to_id)
    return TaxonomyDiff(from_version=a.version_id, to_version=b.version_id, changes=a.diff(b))


def _change(tax, op: OperationRequest, author: str):
    """The `Change` an operation request describes, from the Taxonomy's own operations."""
    def need(field: str) -> Any:
        value = getattr(op, field)
        if value in (None, "", []):
            raise TaxonomyError(f"{op.op}: '{field}' is required")
        return value

    if op.op == "add":
        return tax.add(need("code"), need("name"), group=need("group"), author=author, definition=op.definition,
                       examples=op.examples)
    if op.op == "rename":
        return tax.rename(need("code"), author=author, new_code=op.new_code, new_name=op.new_name)
    if op.op == "merge":
        return tax.merge(need("codes"), need("into"), author=author, name=op.name, group=op.group,
                         definition=op.definition)
    if op.op == "split":
        return tax.split(need("code"), need("parts"), author=author, keep=op.keep)
    return tax.retire(need("code"), author=author, successor=op.successor)


@router.post("/operations", response_model=OperationResult)
async def operation(body: OperationRequest, state: State, caller: Admin) -> OperationResult:
    """Add, rename, merge, split or retire a category. With `dry_run` (the default) nothing changes: the
    answer shows the labels that would be relabelled or sent to review, the decisions naming those codes,
    and whether the served model would map or abstain for each changed code. `dry_run: false` applies it
    through the journal (reversible with `taxonomist records revert RELABEL_ID`)."""

    def run() -> OperationResult:
        tax = _taxonomy(state, None)
        change = _change(tax, body, caller.name)
        engine = state.model.engine if state.model is not None else None
        impact = service.taxonomy_impact(state.store, change, engine=engine)
        if body.dry_run:
            return OperationResult(applied=False, impact=impact)
        result = state.store.relabel(change, who=caller.name)
        state.taxonomy(refresh=True)
        return OperationResult(applied=True, impact=impact, relabel_id=result.relabel_id, changed=result.changed,
                               review_count=result.review_count)

    return await run_in_threadpool(run)
