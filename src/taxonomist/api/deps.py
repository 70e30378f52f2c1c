"""The dependencies routes declare, once each: the service state and the caller with at least a role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from .keys import hash_key, role_allows
from .state import ServiceState

__all__ = ["Caller", "State", "Classifier", "Reviewer", "Admin", "get_state", "caller_with"]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="A key from `taxonomist keys create`.")


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    role: str


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def caller_with(role: str):
    """A dependency admitting keys whose role allows `role`: 401 without a valid key, 403 with too small a role."""

    def check(state: State, key: Annotated[str | None, Security(_api_key)] = None) -> Caller:
        if not key:
            raise HTTPException(401, "missing X-API-Key header; create a key with `taxonomist keys create`",
                                headers={"WWW-Authenticate": "APIKey"})
        row = state.store.api_key_by_hash(hash_key(key)) if state.store is not None else None
        if row is None:
            raise HTTPException(401, "the X-API-Key is not a valid key (unknown or revoked)",
                                headers={"WWW-Authenticate": "APIKey"})
        if not role_allows(row["role"], role):
            raise HTTPException(403, f"key '{row['name']}' has role {row['role']}; this needs {role} or above")
        return Caller(row["id"], row["name"], row["role"])

    return check


Classifier = Annotated[Caller, Depends(caller_with("classifier"))]
Reviewer = Annotated[Caller, Depends(caller_with("reviewer"))]
Admin = Annotated[Caller, Depends(caller_with("admin"))]
