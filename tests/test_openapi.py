"""/openapi.json (what /docs shows) says what the server does: the bearer scheme on exactly the endpoints that
answer 401 without the token, the {"error", "detail"} body on every error status, and WHIP's SDP bodies. The
hostile requests of tests/test_server_hostile.py check each answer against the schema of its endpoint."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from server.openapi import ERROR_REF
from tests.test_server_stream import local_engine, make_app  # noqa: F401 - fixture

TOKEN = "openapi-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def schema_and_client(local_engine):
    with TestClient(make_app(local_engine, token=TOKEN, allowed_hosts=("testserver",))) as client:
        yield client.get("/openapi.json").json(), client


def operations(schema):
    return [(m, p, op) for p, item in schema["paths"].items() for m, op in item.items()]


def test_no_fastapi_validation_schema_is_left(schema_and_client):
    schema, _ = schema_and_client
    text = str(schema)
    assert "HTTPValidationError" not in text and "ValidationError" not in text
    body = schema["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "detail"}


def test_every_error_status_has_the_error_body(schema_and_client):
    schema, _ = schema_and_client
    for method, path, op in operations(schema):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert {"400", "413"} <= set(errors), (method, path)
        for status, response in errors.items():
            assert response["content"]["application/json"]["schema"] == ERROR_REF, (method, path, status)


def call(client, method, path, headers=None):
    path = re.sub(r"\{[^}]+\}", "nope", path)
    return client.request(method.upper(), path, headers=headers or {}, json={} if method == "post" else None)


def test_the_bearer_schemes_are_declared_on_exactly_the_endpoints_that_need_a_token(schema_and_client):
    """Required: the endpoints that answer 401 without a token; the view token: exactly where it is let in."""
    schema, client = schema_and_client
    schemes = schema["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"} and set(schemes) == {"bearer", "viewToken"}
    view = {"Authorization": "Bearer " + client.get("/view-token", headers=AUTH).json()["view_token"]}
    required, refused, view_declared, view_let_in = set(), set(), set(), set()
    for method, path, op in operations(schema):
        if "security" in op:
            assert "401" in op["responses"]
            if {} not in op["security"]:
                required.add((method, path))
            if {"viewToken": []} in op["security"]:
                view_declared.add((method, path))
        if call(client, method, path).status_code == 401:
            refused.add((method, path))
        elif {} not in op.get("security", [{}]):
            raise AssertionError(f"{method} {path} declares a token it does not need")
        if (method, path) in required and call(client, method, path, view).status_code != 401:
            view_let_in.add((method, path))
    assert required == refused
    assert view_declared == view_let_in == {("post", "/view/offer"), ("get", "/ice-servers"), ("post", "/whep"),
                                            ("options", "/whep"), ("delete", "/whep/{stream}/{viewer_id}")}
    assert {("post", "/offer"), ("post", "/whip"), ("post", "/prompt"), ("get", "/metrics")} <= required


def test_without_a_token_nothing_claims_to_need_one(local_engine):
    app = make_app(local_engine, allowed_hosts=("testserver",))
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert not [op for _, _, op in operations(schema) if "security" in op or "401" in op["responses"]]


def test_whip_declares_its_sdp_bodies(schema_and_client):
    schema, _ = schema_and_client
    whip = schema["paths"]["/whip"]["post"]
    assert list(whip["requestBody"]["content"]) == ["application/sdp"]
    assert list(whip["responses"]["201"]["content"]) == ["application/sdp"]
    assert "Location" in whip["responses"]["201"]["headers"]


def test_the_documented_error_statuses_are_declared(schema_and_client):
    """docs/server.md's error table and the schema name the same statuses, but for 405 (a method no operation
    has, so no operation to declare it on) and 500 (a bug, not an answer)."""
    from pathlib import Path

    schema, _ = schema_and_client
    table = (Path(__file__).resolve().parent.parent / "docs" / "server.md").read_text()
    documented = {int(s) for s in re.findall(r"^\| (\d{3}) \|", table, re.MULTILINE)} - {405, 500}
    declared = {int(s) for _, _, op in operations(schema) for s in op["responses"] if s[0] in "45"}
    assert documented == declared
