"""`create_app(settings)`: the review service's FastAPI app, built from settings; nothing is made at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .errors import install_error_handlers
from .routers import classify, decisions, health, keys, review, stats, taxonomy, web
from .settings import ApiSettings
from .state import ServiceState

__all__ = ["create_app"]


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The app: opens the store and loads the model when it starts (lifespan), closes them when it stops."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(settings)
        await run_in_threadpool(state.open)
        app.state.service = state
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="taxonomist review service",
        description="Classify records into your taxonomy, review uncertain decisions, change the taxonomy with its "
        "impact shown first. Every /v1 call needs an X-API-Key (`taxonomist keys create`).",
        version="1",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (classify, decisions, review, taxonomy, stats, keys, health, web):
        app.include_router(module.router)
    web.mount_static(app)
    return app
