"""`taxonomist serve`: the review service (REST API + web review page) on uvicorn."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._console import err_console
from .records import Create, Db

__all__ = ["register"]


def serve(
    db: Db = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="Model to serve: a directory, a registry id, or 'active'. 'none' serves review only."),
    ] = "active",
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Keep 127.0.0.1 unless a TLS proxy fronts it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most records one gathered model call takes.")] = 64,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, help="Longest a request waits for others to share its model call.")] = 5.0,
    micro_batching: Annotated[bool, typer.Option("--micro-batching/--no-micro-batching", help="Gather concurrent classify requests into one model call.")] = True,
    secure_cookies: Annotated[bool, typer.Option("--secure-cookies", help="Send the web session cookie over HTTPS only (behind a TLS proxy).")] = False,
    create: Create = False,
) -> None:
    """Serve the API (/v1, OpenAPI at /docs) and the web review page (/ui) until Ctrl-C.

    Every /v1 call needs an X-API-Key from `taxonomist keys create`. The access log shows
    methods, paths and status codes only: record text is never logged.
    """
    try:
        import uvicorn

        from ..api import ApiSettings, create_app
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError(exc.name or "fastapi", "api", "taxonomist serve") from None
    from ..service import Settings, open_store

    service_settings = Settings.from_env(db=db, create=create or None)
    open_store(service_settings).close()  # a missing --db is one clear line now, not a traceback at startup
    settings = ApiSettings(
        service=service_settings, model=None if (model or "").lower() == "none" else model,
        max_batch=max_batch, max_wait_ms=max_wait_ms, micro_batching=micro_batching, secure_cookies=secure_cookies,
    )
    err_console.print(f"serving on http://{host}:{port} (API docs at /docs, review page at /ui)")
    uvicorn.run(create_app(settings), host=host, port=port, access_log=True, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
