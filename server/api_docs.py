"""``/docs``: Swagger UI for the API, served from the installed ``fastapi-offline`` package's copy of its files, so
the pages' origin (where the web pages keep the token) never runs a script from a CDN. The page has no inline
script, so the Content-Security-Policy (``server.security_headers``) holds on it too."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css
# the pages' policy, but Swagger UI styles its elements inline
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{docs}/init.js"></script>
</body>
</html>
"""
_INIT = """SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset], layout: "BaseLayout"});
"""


def swagger_assets() -> Path:
    """The directory of Swagger UI's files in the installed fastapi-offline package."""
    root = importlib.resources.files("fastapi_offline") / "static"
    if not isinstance(root, Path) or not (root / "swagger-ui-bundle.js").is_file():
        raise FileNotFoundError(f"fastapi-offline's Swagger UI files are missing under {root}: pip install "
                                "fastapi-offline")
    return root


def install_api_docs(app: FastAPI) -> None:
    """``/docs`` and its files; the app must be created with ``docs_url=None, redoc_url=None``."""
    headers = {"Content-Security-Policy": DOCS_CSP}
    page = _PAGE.format(title=app.title, assets=ASSETS_URL, docs=DOCS_URL)

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get(f"{DOCS_URL}/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers=headers)

    app.mount(ASSETS_URL, StaticFiles(directory=swagger_assets()), name="docs-assets")
