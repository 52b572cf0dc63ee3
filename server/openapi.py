"""What ``/openapi.json`` (and ``/docs``) says about the API, made true to what the server answers: the bearer
schemes on exactly the endpoints that need a token (the full one, or the view token where it is enough), the ``{"error", "detail"}`` body on every error status
(FastAPI's own 422 schema describes a body this server never sends), and WHIP's ``application/sdp`` bodies.
``tests/test_openapi.py`` holds the schema against the server's answers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from server.auth import Authorizer, Scope

BEARER = "bearer"  # the full --token
VIEW_BEARER = "viewToken"  # the view token, enough for the VIEW scope's endpoints
SECURITY = {Scope.FULL: [{BEARER: []}], Scope.VIEW: [{BEARER: []}, {VIEW_BEARER: []}]}
SCHEMES = {BEARER: {"type": "http", "scheme": "bearer", "description": "the server's --token"},
           VIEW_BEARER: {"type": "http", "scheme": "bearer",
                         "description": "the view token (--view-token, or GET /view-token): plays streams only"}}
# answers without a token, with details only for the full one (a wrong token: 401)
OPTIONAL_BEARER = {("get", "/health")}
# the token checked in the handler, not by a dependency: a CORS preflight carries none (server.wish_routes)
HANDLER_CHECKED = {("options", "/whip"): Scope.FULL, ("options", "/whep"): Scope.VIEW}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_422_SCHEMAS = ("HTTPValidationError", "ValidationError")

# every endpoint: a Host it does not serve (400), a body too slow (408) or over 64 KiB (413)
EVERY_ENDPOINT = (400, 408, 413)
STATUS_TEXT = {
    400: "invalid_host, invalid_sdp, invalid_stream, invalid_value, bad_request",
    401: "unauthorized: a missing or wrong bearer token",
    404: "unknown_stream or unknown_session",
    408: "request_timeout: the body did not arrive within --request-timeout",
    409: "stream_in_use",
    413: "body_too_large: over 64 KiB",
    415: "unsupported_media_type: a WHIP or WHEP offer not sent as application/sdp",
    422: "invalid_request (detail: a list of {field, message}) or unsupported_codec",
    503: "server_full or server_busy, with Retry-After",
}
# the statuses each endpoint answers besides EVERY_ENDPOINT, 401 (with a token) and 422 (with a body or query)
ENDPOINT_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/offer"): (409, 503),
    ("post", "/whip"): (409, 415, 503),
    ("delete", "/whip/{peer_id}"): (404,),
    ("post", "/whep"): (404, 415, 503),
    ("delete", "/whep/{stream}/{viewer_id}"): (404,),
    ("post", "/view/offer"): (404, 503),
    ("post", "/prompt"): (404,),
    ("get", "/prompt"): (404,),
}
SDP_BODIES = {("post", "/whip"), ("post", "/whep")}  # request and 201 answer are application/sdp


class FieldError(BaseModel):
    field: str = Field(description="where in the body or query, dotted (e.g. stream, control_scales.0)")
    message: str


class ErrorBody(BaseModel):
    """Every error the server answers."""

    error: str = Field(description="a machine-readable reason (docs/server.md#errors), e.g. invalid_sdp")
    detail: str | list[FieldError] = Field(description="a sentence; for 422 invalid_request, one entry per field")


def operations(schema: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def bearer_routes(app: FastAPI) -> dict[tuple[str, str], Scope]:
    """(method, path) -> the scope its Authorizer dependency needs, for every route that has one."""
    found: dict[tuple[str, str], Scope] = {}
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        for dependency in route.dependant.dependencies:
            if isinstance(dependency.call, Authorizer):
                found |= {(m.lower(), route.path_format): dependency.call.needed for m in route.methods}
    return found


def error_responses(statuses: Iterable[int]) -> dict[str, Any]:
    return {str(s): {"description": STATUS_TEXT[s], "content": {"application/json": {"schema": ERROR_REF}}}
            for s in sorted(statuses)}


def document_operation(method: str, path: str, operation: dict[str, Any], scope: Scope | None) -> None:
    responses = operation["responses"]
    statuses = {*EVERY_ENDPOINT, *ENDPOINT_ERRORS.get((method, path), ())}
    if "422" in responses:
        statuses.add(422)
    if scope is not None:
        statuses.add(401)
        operation["security"] = SECURITY[scope]
    responses.update(error_responses(statuses))
    if (method, path) in SDP_BODIES:
        operation["requestBody"] = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
        responses["201"] = {"description": "the SDP answer; Location: the session to DELETE",
                            "content": {"application/sdp": {"schema": {"type": "string"}}},
                            "headers": {"Location": {"schema": {"type": "string"}}}}


def document_api(app: FastAPI, token_required: bool) -> None:
    """Replaces ``app.openapi`` with the schema above; with ``token_required``, each route's Authorizer dependency
    is declared as the bearer scheme(s) its scope accepts."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            protected = bearer_routes(app) | HANDLER_CHECKED if token_required else {}
            for method, path, operation in operations(schema):
                document_operation(method, path, operation, protected.get((method, path)))
                if token_required and (method, path) in OPTIONAL_BEARER:
                    operation["security"] = [{}, {BEARER: []}]
                    operation["responses"].update(error_responses([401]))
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for name in FASTAPI_422_SCHEMAS:
                schemas.pop(name, None)
            schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schemas["ErrorBody"].pop("$defs", {}))
            if protected:
                components["securitySchemes"] = SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
