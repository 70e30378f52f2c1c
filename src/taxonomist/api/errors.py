"""Error responses that never echo what was sent: record text must not reach an error page or a log."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import TaxonomistError

__all__ = ["NotFound", "install_error_handlers"]


class NotFound(Exception):
    """A record, review or version the request names does not exist (404)."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 repeats each bad value ("input"), which may be a denial's text: keep
        # only where the problem is and what it is.
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(TaxonomistError)
    async def taxonomist_error(request: Request, exc: TaxonomistError) -> JSONResponse:
        # The project's messages name ids, codes and fields, never record text.
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0]) if exc.args else "not found"}, status_code=404)
