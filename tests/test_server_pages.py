"""The web pages come from the ``web`` package through importlib.resources; missing pages stop ``serve``
before the model loads, and ``--no-pages`` serves the API alone with one warning."""

from __future__ import annotations

import importlib.util
import logging
import py_compile
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sana_stream.cli import main
from server import pages
from server.app import ModelInfo, create_app
from server.pages import PagesMissingError, find_pages, mount_pages
from server.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent


def test_pages_are_the_web_package_and_only_its_page_files_are_served():
    directory = find_pages()
    assert directory == ROOT / "web"  # the checkout's own folder, as the package
    app = FastAPI()
    mount_pages(app, directory)
    client = TestClient(app)
    for path, name, kind in (("/", "index.html", "text/html"), ("/view", "view.html", "text/html"),
                             ("/style.css", "style.css", "text/css"), ("/js/api.js", "js/api.js", "text/javascript")):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), path
        assert response.content == (directory / name).read_bytes(), path
    # what importing the package leaves beside the pages (written here in case bytecode writing is off)
    bytecode = Path(py_compile.compile(str(directory / "__init__.py"),
                                       cfile=importlib.util.cache_from_source(str(directory / "__init__.py"))))
    for path in ("/__init__.py", f"/__pycache__/{bytecode.name}", "/__pycache__/", "/js/../__init__.py"):
        assert client.get(path).status_code == 404, path


def fake_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, str]) -> None:
    package = tmp_path / name
    package.mkdir()
    for file, text in files.items():
        (package / file).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pages, "PAGES_PACKAGE", name)


def test_missing_pages_are_named(tmp_path, monkeypatch):
    fake_pages(tmp_path, monkeypatch, "fake_pages", {"__init__.py": "", "index.html": "<!doctype html>"})
    with pytest.raises(PagesMissingError) as error:
        find_pages()
    assert error.value.missing == ["view.html"] and error.value.where == str(tmp_path / "fake_pages")
    assert "--no-pages" in str(error.value)

    monkeypatch.setattr(pages, "PAGES_PACKAGE", "no_such_pages_package")
    with pytest.raises(PagesMissingError, match="no package 'no_such_pages_package' is installed"):
        find_pages()

    fake_pages(tmp_path, monkeypatch, "fake_namespace_pages", {"index.html": "", "view.html": ""})  # no __init__
    with pytest.raises(PagesMissingError):
        find_pages()


def test_serve_refuses_to_start_without_pages_before_loading_a_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pages, "PAGES_PACKAGE", "no_such_pages_package")
    missing_model = str(tmp_path / "no-model-here")  # were it loaded, the error would be about the model
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--model", missing_model, "--backend", "torch"]) == 2
    assert "the web pages are missing" in caplog.text and "--no-pages" in caplog.text
    assert "no-model-here" not in caplog.text


def test_no_pages_serves_the_api_alone_with_a_warning(make_engine, monkeypatch, caplog):
    monkeypatch.setattr(pages, "PAGES_PACKAGE", "no_such_pages_package")  # not even looked up
    engine = make_engine()
    with caplog.at_level(logging.WARNING):
        # TestClient sends Host: testserver, which a server answers only when told to (docs/server.md)
        settings = ServerSettings(stream=engine.config, pages=False, allowed_hosts=("testserver",))
        app = create_app(settings, engine, ModelInfo("tiny", True, "torch"))
    assert "--no-pages: serving the API only" in caplog.text
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/").status_code == 404 and client.get("/view").status_code == 404


def test_pages_and_api_docs_carry_a_content_security_policy_and_load_nothing_from_elsewhere(make_engine):
    """The pages keep the token in localStorage: every answer forbids scripts from other origins, and /docs serves
    Swagger UI from the installed fastapi-offline package, not from a CDN."""
    engine = make_engine()
    settings = ServerSettings(stream=engine.config, allowed_hosts=("testserver",))
    with TestClient(create_app(settings, engine, ModelInfo("tiny", True, "torch"))) as client:
        answers = {path: client.get(path) for path in ("/", "/view", "/js/api.js", "/config", "/nope", "/docs",
                                                       "/docs/init.js", "/docs/assets/swagger-ui-bundle.js",
                                                       "/docs/assets/swagger-ui.css")}
        redoc = client.get("/redoc")
    for path, answer in answers.items():
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy, path
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0], path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.status_code == (404 if path == "/nope" else 200), path
    page = answers["/docs"].text
    assert "<script>" not in page and "http" not in page  # no inline script, no other origin
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in page
    assert "SwaggerUIBundle" in answers["/docs/assets/swagger-ui-bundle.js"].text
    assert redoc.status_code == 404  # ReDoc (a CDN page in FastAPI) is not served
