"""API keys: made at random, shown once, kept only as a SHA-256; roles ordered classifier < reviewer < admin.

A key carries 256 random bits, so a plain SHA-256 of it cannot be reversed by
guessing (a slow password hash would only slow every request).
"""

from __future__ import annotations

import hashlib
import secrets

from ..errors import StoreError

__all__ = ["ROLES", "new_key", "hash_key", "role_allows", "check_role"]

#: Each role may do what the roles before it may.
ROLES = ("classifier", "reviewer", "admin")
_PREFIX = "tx_"


def new_key() -> tuple[str, str, str]:
    """(key, its hash, its display prefix) for a new key."""
    key = _PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key), key[:10]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """Whether a key of `role` may do what needs `needed`."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise StoreError(f"role '{role}' is unknown; expected one of {', '.join(ROLES)}")
    return role
