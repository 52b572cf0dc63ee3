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


def test_the_bearer_scheme_is_declared_on_exactly_the_endpoints_that_need_the_token(schema_and_client):
    schema, client = schema_and_client
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    declared, refused = set(), set()
    for method, path, op in operations(schema):
        if "security" in op:
            declared.add((method, path))
            assert "401" in op["responses"]
        answer = call(client, method, path)
        if answer.status_code == 401:
            refused.add((method, path))
            assert answer.json()["error"] == "unauthorized"
    assert declared == refused
    assert {("post", "/offer"), ("post", "/whip"), ("post", "/prompt")} <= declared


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
