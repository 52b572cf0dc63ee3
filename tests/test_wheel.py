"""What a pip user gets. The wheel is built from a copy of this checkout (offline, with this environment's
setuptools), its file list checked, and it is installed with --no-deps into a fresh virtual environment that
sees this environment's dependencies through a .pth file but not the checkout (nor its editable install).
From there `sana-stream serve` runs the demo model and serves the pages, and `sana-stream camera` streams a
clip through it with the server's own dependencies (torch, diffusers, fastapi, ...) blocked."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.test_without_torch import bridge_install, run_reported

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CODE_PACKAGES = ("sana_stream", "stream", "engines", "rtc", "server", "bridge", "cluster")
NOT_IN_WHEEL = ("tests/", "benchmarks/", "docs/", "docker/", "scripts/")
# left in a checkout by setuptools and the tests; with the hidden folders (.git, .venv, caches), never copied
LEFTOVERS = ("build", "dist", "artifacts")


def repository_files(package: str) -> set[str]:
    """Every file under ``package`` in this checkout (bytecode caches aside): all of them are runtime files, so
    a data file added without a package-data pattern in pyproject.toml fails the file-list test."""
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*") if p.is_file()}
    return {f for f in files if "__pycache__" not in f.split("/")}


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout (its caches included, to prove they stay out of the wheel): built in place,
    setuptools would write build/ and *.egg-info into the checkout."""
    copy = tmp_path_factory.mktemp("wheel") / "source"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=lambda _, names: {
        n for n in names if n.startswith(".") or n in LEFTOVERS or n.endswith(".egg-info")})
    return copy


@pytest.fixture(scope="session")
def wheel(source: Path) -> Path:
    """The wheel, built once per session, offline, with this environment's setuptools."""
    dist = source.parent / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--wheel-dir", str(dist), str(source)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = dist.glob("*.whl")
    assert built.name == f"sana_stream-{PROJECT['version']}-py3-none-any.whl"
    return built


def test_the_documented_pip_lines_resolve_here_without_an_index(source, tmp_path):
    """README.md's and docs/install.md's `pip install '.[EXTRAS]'` lines, as a dry run against this environment:
    every requirement is met by what is installed, so the only thing to install is sana-stream itself."""
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "install.md").read_text()
    extras = {e for found in re.findall(r"pip install '\.\[([a-z,]+)\]'", text) for e in found.split(",")}
    assert {"onnx", "bridge"} <= extras
    if importlib.util.find_spec("tensorrt") is None:  # an NVIDIA GPU machine's extra
        extras.discard("tensorrt")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", "--report", str(report), f"{source}[{','.join(extras)}]"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    to_install = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    assert to_install == [("sana-stream", PROJECT["version"])]


def test_the_wheel_holds_every_module_and_page_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f"sana_stream-{PROJECT['version']}.dist-info/"
    content = {n for n in names if not n.startswith(dist_info)}
    expected = set().union(*(repository_files(p) for p in (*CODE_PACKAGES, "web")))
    assert content - expected == set(), "files in the wheel that the checkout's packages do not hold"
    assert expected - content == set(), "files of the packages (pages included) missing from the wheel"
    assert {"web/index.html", "web/view.html", "web/style.css", "web/js/filter.js"} <= content
    assert not [n for n in names if n.startswith(NOT_IN_WHEEL) or "__pycache__" in n or n.endswith(".pyc")]

    metadata = zipfile.ZipFile(wheel).read(dist_info + "METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {PROJECT['version']}" in metadata
    assert all(f"Classifier: {c}" in metadata for c in PROJECT["classifiers"])
    assert dist_info + "licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(dist_info + "entry_points.txt").decode()
    assert "sana-stream = sana_stream.cli:main" in entry_points


@dataclass(frozen=True)
class Installed:
    root: Path
    python: Path
    script: Path
    site_packages: Path
    env: dict[str, str]  # for its processes: no PYTHONPATH, nothing that points at the checkout


def install_fresh(wheel: Path, root: Path) -> Installed:
    """A fresh virtual environment at ``root`` with ``wheel`` installed (--no-deps), then given this
    environment's dependencies through a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SANA_STREAM_", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root.parent / "hf"), PYTHONNOUSERSITE="1")
    # this pip installs into the fresh environment's interpreter, before that environment sees any dependency
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (site_packages,) = (root / "lib").glob("python3*/site-packages")
    # a plain path line: the editable install's own .pth files there are not run, so the checkout stays unseen
    (site_packages / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return Installed(root, python, root / "bin" / "sana-stream", site_packages, env)


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_fresh(wheel, tmp_path_factory.mktemp("installed") / "venv")


def test_an_editable_install_serves_the_pages_of_its_checkout(source, tmp_path):
    """`pip install -e` (make's setup) maps the web package to the checkout's web/ folder. The editable wheel is
    built the way pip builds it, by setuptools' PEP 660 hook, here without an index."""
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_editable(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", hook, str(tmp_path / "dist")], capture_output=True, text=True,
                          cwd=source, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    editable = install_fresh(tmp_path / "dist" / done.stdout.strip().splitlines()[-1], tmp_path / "venv")
    command = """
def COMMAND():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from server.pages import find_pages, mount_pages
    app = FastAPI()
    mount_pages(app, find_pages())
    print("pages", find_pages(), TestClient(app).get("/view").status_code)
"""
    report = run_reported(editable.python, command, allowed=None, env=editable.env, cwd=tmp_path)
    assert f"pages {source / 'web'} 200" in report["output"]
    assert report["files"]["server.pages"] == str(source / "server" / "pages.py")


def test_the_installed_package_is_the_one_imported(installed, tmp_path):
    modules = sorted(f.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                     for p in CODE_PACKAGES for f in repository_files(p) if f.endswith(".py"))
    # where every module of the wheel resolves, found without running the heavy ones (torch, diffusers)
    command = f"""
import importlib.metadata, importlib.util
def COMMAND():
    import sana_stream.cli, server.pages, web
    for name in {modules!r}:
        print("module", name, importlib.util.find_spec(name).origin)
    print("version", importlib.metadata.version("sana-stream"))
    print("dist", importlib.metadata.distribution("sana-stream")._path)
"""
    report = run_reported(installed.python, command, allowed=None, env=installed.env, cwd=tmp_path)
    assert f"version {PROJECT['version']}" in report["output"]
    assert f"dist {installed.site_packages}" in report["output"]
    origins = dict(line.split()[1:] for line in report["output"].splitlines() if line.startswith("module "))
    assert sorted(origins) == modules and {"server.app", "stream.engine", "bridge.bridge"} <= set(origins)
    outside = {m: f for m, f in {**origins, **report["files"]}.items()
               if not str(f).startswith(str(installed.site_packages))}
    assert outside == {}, "modules found somewhere other than the installed wheel"

    done = subprocess.run([str(installed.script), "--version"], capture_output=True, text=True,
                          env=installed.env, cwd=tmp_path, timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"sana-stream {PROJECT['version']}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def wheel_server(installed, demo_model_dir, tmp_path_factory) -> Iterator[str]:
    """`sana-stream serve` of the installed wheel, without --model: the demo model, placed where serve writes
    it (writing it again would only cost time)."""
    cache = tmp_path_factory.mktemp("serve-cache")
    shutil.copytree(demo_model_dir, cache / "demo-model")
    port = free_port()
    process = subprocess.Popen([str(installed.script), "serve", "--port", str(port), "--backend", "torch",
                                "--width", "64", "--height", "64"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**installed.env, "SANA_STREAM_CACHE": str(cache)}, cwd=cache)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"serve exited with {process.returncode}:\n{process.stdout.read()}"
            assert time.monotonic() < deadline, "serve did not answer /health within 120 s"
            try:
                httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_the_installed_server_serves_the_pages_and_the_api(wheel_server):
    expected = {"/": "text/html", "/view": "text/html", "/docs": "text/html", "/health": "application/json",
                "/style.css": "text/css", "/js/filter.js": "text/javascript"}
    for path, kind in expected.items():
        response = httpx.get(wheel_server + path, timeout=10)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == kind, path
    assert httpx.get(wheel_server + "/").text == (ROOT / "web" / "index.html").read_text()
    assert httpx.get(wheel_server + "/view").text == (ROOT / "web" / "view.html").read_text()
    health = httpx.get(wheel_server + "/health").json()
    assert health["status"] == "ok" and health["demo_model"] is True
    assert httpx.get(wheel_server + "/__init__.py").status_code == 404


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    y, x = np.mgrid[0:64, 0:64]
    picture = np.stack([x * 4, y * 4, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(15):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_the_installed_camera_bridge_streams_without_the_servers_dependencies(installed, wheel_server, clip,
                                                                               tmp_path):
    out = tmp_path / "frames"
    argv = ["sana-stream", "camera", "--server", wheel_server, "--source", f"file:{clip}", "--loop",
            "--record", str(out), "--max-frames", "3", "--no-stdin"]
    command = f"""
import runpy, sys
def COMMAND():
    sys.argv = {argv!r}
    runpy.run_path({str(installed.script)!r}, run_name="__main__")  # the console script pip wrote
"""
    report = run_reported(installed.python, command, allowed=bridge_install(), env=installed.env, cwd=tmp_path)
    assert report["status"] == 0, report["output"]
    assert report["server_only"] == []
    assert len(sorted(out.glob("frame_*.png"))) == 3
    assert all(str(f).startswith(str(installed.site_packages)) for f in report["files"].values())
