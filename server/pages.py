"""The web pages: package data of the ``web`` package (the repository's top-level web/ folder), found through
importlib.resources so that an installed wheel serves what a checkout serves. Missing pages stop the server
at start instead of turning into 404s."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PAGES_PACKAGE = "web"
REQUIRED_PAGES = ("index.html", "view.html")


class PagesMissingError(FileNotFoundError):
    """The ``web`` package or one of its pages is absent (``where``: the directory looked in, if any)."""

    def __init__(self, missing: list[str], where: str | None) -> None:
        self.missing = missing
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        place = f"in {self.where}" if self.where else f"(no package {PAGES_PACKAGE!r} is installed)"
        return (f"the web pages are missing: no {', '.join(self.missing)} {place}. Install sana-stream from a "
                "wheel or checkout that includes them (pip install '.[server]'), or pass --no-pages to serve the API "
                "only")

    def __repr__(self) -> str:
        return f"PagesMissingError(missing={self.missing!r}, where={self.where!r})"


def find_pages() -> Path:
    """The pages' directory on the file system; PagesMissingError when the package or a required page is absent."""
    try:
        root = importlib.resources.files(PAGES_PACKAGE)
    except ModuleNotFoundError:
        raise PagesMissingError(list(REQUIRED_PAGES), None) from None
    if not isinstance(root, Path):  # a namespace package (no __init__.py) or a zip: no one directory to serve
        raise PagesMissingError(list(REQUIRED_PAGES), f"{root} (not one directory: {PAGES_PACKAGE}/__init__.py?)")
    missing = [name for name in REQUIRED_PAGES if not (root / name).is_file()]
    if missing:
        raise PagesMissingError(missing, str(root))
    return root


class PageFiles(StaticFiles):
    """Static files of the pages' directory, without the package's own Python files and bytecode."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path.endswith((".py", ".pyc")) or "__pycache__" in Path(path).parts:
            return "", None
        return super().lookup_path(path)


def mount_pages(app: FastAPI, directory: Path) -> None:
    """``/view`` and every page file under ``/``; call last, after the API routes (the mount matches any path)."""

    @app.get("/view", include_in_schema=False)
    async def view_page() -> FileResponse:
        """The output-only page: /view?stream=ID (the id is read by the page itself)."""
        return FileResponse(directory / "view.html", headers={"Cache-Control": "no-cache"})

    app.mount("/", PageFiles(directory=directory, html=True), name="web")
