"""Errors the HTTP API answers with, and the handlers that turn every error into one JSON shape:
``{"error": reason, "detail": ...}``, FastAPI's and Starlette's own (404, 405, bad bodies) included."""

from __future__ import annotations

import http
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stream.exceptions import UnknownStreamError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a machine-readable reason and a human-readable detail."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}
        super().__init__(detail)

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, reason={self.reason!r}, detail={self.detail!r})"


def reason_for(status: int) -> str:
    """A machine-readable reason from an HTTP status: 404 -> ``not_found``, 405 -> ``method_not_allowed``."""
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(status: int, reason: str, detail: object) -> dict[str, object]:
    return {"error": reason, "detail": detail}


def _json(status: int, reason: str, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, reason, detail), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": reason, "detail": ...}``: client errors with their 4xx status, and an
    unexpected exception as a 500 whose traceback goes to the log, not to the client."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.reason, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own: unknown paths (404), wrong methods (405), a body that could not be read
        return _json(exc.status_code, reason_for(exc.status_code), exc.detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
                  for e in exc.errors()]
        return _json(422, "invalid_request", errors)

    @app.exception_handler(UnknownStreamError)
    async def unknown_stream(_: Request, exc: UnknownStreamError) -> JSONResponse:
        return _json(404, "unknown_stream", str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return _json(400, "invalid_value", str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this and then re-raises, so uvicorn logs the traceback
        return _json(500, "internal_error", f"the server failed on {request.method} {request.url.path}; "
                     "the cause is in its log")
