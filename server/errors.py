"""Errors the HTTP API answers with, and the one handler that turns them into JSON responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stream.exceptions import UnknownStreamError


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


def _json(status: int, reason: str, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every client error leaves as ``{"error": reason, "detail": ...}`` with a 4xx status."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.reason, exc.detail, exc.headers)

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
