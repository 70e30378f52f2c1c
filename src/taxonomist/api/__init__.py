"""The review service: a REST API and a web review page over the store (`create_app(settings)`; `taxonomist serve`).

Needs the `api` extra (FastAPI, uvicorn, Jinja2). `taxonomist.api.keys` (key
making and hashing) imports none of it, so `taxonomist keys` works without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for .keys) must not need FastAPI.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ApiSettings":
        from .settings import ApiSettings

        return ApiSettings
    raise AttributeError(name)
