"""Offline installs of sana-stream's extras into fresh virtual environments, the way pip installs them from an
index: the distributions this environment has installed are packed back into wheels (their RECORD lists every
file) in a local directory that pip searches with ``--no-index --find-links``. Only the requirement closure asked
for is packed, so a package pip wants beyond it is missing and the install fails, which is what the light-bridge
test relies on (tests/test_light_bridge.py; benchmarks/bridge_install.py measures the sizes)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SKIPPED_METADATA = ("INSTALLER", "REQUESTED", "direct_url.json")  # written by the installer, not in a wheel


def closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``requirements`` (PEP 508 lines) need here, extras followed, by
    canonical name. Raises PackageNotFoundError for one that is not installed."""
    found: dict[str, importlib.metadata.Distribution] = {}
    wanted = [Requirement(line) for line in requirements]
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate({**default_environment(), "extra": ""}):
            continue
        dist = found.get(name) or importlib.metadata.distribution(name)
        if name not in found:
            found[name] = dist
        for line in dist.requires or []:
            nested = Requirement(line)
            extras = requirement.extras or {""}
            if nested.marker is None or any(nested.marker.evaluate({**default_environment(), "extra": e})
                                            for e in extras):
                wanted.append(Requirement(str(nested).split(";")[0]))
    return found


def wheel_tag(dist: importlib.metadata.Distribution) -> str:
    """The compressed tag set of the wheel it was installed from (its WHEEL file's Tag lines)."""
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    return "-".join(".".join(p) for p in parts)


def repack(dist: importlib.metadata.Distribution, directory: Path) -> Path:
    """``dist`` as a wheel in ``directory`` (stored, not compressed: it is unpacked once, right away)."""
    name = dist.metadata["Name"].replace("-", "_")
    path = directory / f"{name}-{dist.version}-{wheel_tag(dist)}.whl"
    root = Path(dist.locate_file(""))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for file in dist.files or []:
            parts = Path(file).parts
            if ".." in parts or "__pycache__" in parts or parts[-1] in SKIPPED_METADATA:
                continue  # scripts outside site-packages are written anew from entry_points.txt
            source = root / file
            if source.is_file():
                wheel.write(source, Path(file).as_posix())
    return path


def wheelhouse(requirements: list[str], directory: Path) -> list[str]:
    """Packs the closure of ``requirements`` into ``directory``; returns the canonical names packed."""
    directory.mkdir(parents=True, exist_ok=True)
    dists = closure(requirements)
    for dist in dists.values():
        repack(dist, directory)
    return sorted(dists)


def fresh_venv(root: Path) -> Path:
    """A new virtual environment without pip; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    return root / "bin" / "python"


def clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at this checkout or environment."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SANA_STREAM_", "VIRTUAL_ENV"))}


def install_offline(python: Path, target: str, find_links: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """``pip install --no-index --find-links DIR TARGET`` into ``python``'s environment (this pip drives it)."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                           "--disable-pip-version-check", "--no-compile", "--find-links", str(find_links), target],
                          capture_output=True, text=True, env=clean_env(), timeout=timeout, check=False)


def size_bytes(path: Path) -> int:
    """What ``du -sb`` says: every file's size under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
