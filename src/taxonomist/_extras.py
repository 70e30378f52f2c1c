"""Import optional dependencies, or say which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise `MissingExtraError` naming `taxonomist[extra]`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only translate the error when it is the requested module itself (or a
        # parent package) that is missing, not a bug inside it.
        missing = exc.name or ""
        if module == missing or module.startswith(missing + "."):
            raise MissingExtraError(module, extra, purpose) from exc
        raise
