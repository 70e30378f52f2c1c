"""API keys over the API (admin): create (the key is in the answer once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import Admin, State
from ..keys import new_key
from ..schemas import KeyCreated, KeyOut, KeyRequest

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("", response_model=list[KeyOut])
def list_keys(state: State, caller: Admin) -> list[dict]:
    """Every key: id, name, role, prefix, created, revoked (never the key or its hash)."""
    return state.store.api_keys()


@router.post("", response_model=KeyCreated, status_code=201)
def create_key(body: KeyRequest, state: State, caller: Admin) -> KeyCreated:
    """A new key; this answer is the only place it appears (the store keeps its SHA-256)."""
    key, digest, prefix = new_key()
    row = state.store.add_api_key(name=body.name, role=body.role, key_hash=digest, prefix=prefix, who=caller.name)
    return KeyCreated(key=key, **row)


@router.post("/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: str, state: State, caller: Admin) -> dict:
    """Revoke a key by id: its calls get 401 and its web sessions end."""
    return state.store.revoke_api_key(key_id)
