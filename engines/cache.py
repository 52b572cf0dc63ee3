"""The part cache: exported ONNX graphs and TensorRT plans on disk, keyed by everything that shapes them.

An entry is a directory ``<root>/<slot>/`` holding the artifact files and ``key.json`` (the full key plus a
SHA-256 of every file). The slot name holds what identifies *which* part it is (model digest, component,
shapes, precision, GPU); the rest of the key (TensorRT, torch and exporter versions, opset, builder level)
must match too. A slot whose key differs is stale (say, TensorRT was upgraded) and one whose files do not
match their hashes is corrupt: either way it is rebuilt over, with a warning, and never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

CACHE_ENV = "SANA_STREAM_CACHE"
KEY_FILE = "key.json"
FORMAT_VERSION = 2  # 2: a dynamic batch (issue 27). Bump when export or build code changes what lands in an entry


def cache_root() -> Path:
    """sana-stream's cache: ``$SANA_STREAM_CACHE`` when set, else ``~/.cache/sana-stream``. It holds the compiled
    parts (``engines/``) and the demo model (``demo-model/``); model weights stay in the Hugging Face cache."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sana-stream"


def default_cache_dir() -> Path:
    """Where compiled parts are cached: ``engines/`` in ``cache_root()``."""
    return cache_root() / "engines"


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's class, parameter and buffer names, dtypes, shapes and bytes."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything an engine file depends on. Empty GPU/TensorRT fields for ONNX graphs."""

    kind: str  # "onnx" or "tensorrt"
    model_digest: str
    component: str
    shapes: str  # PartSpec.describe(): every input and output, name:shape:dtype
    precision: str
    opset: int
    torch_version: str = torch.__version__
    format_version: int = FORMAT_VERSION
    trt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""
    builder_optimization_level: int = 0
    tf32: bool = False  # TensorRT's TF32 builder flag

    SLOT_FIELDS = ("kind", "model_digest", "component", "shapes", "precision", "gpu_name", "compute_capability")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def slot(self) -> str:
        """Directory name: readable, plus a hash of the identifying fields."""
        ident = json.dumps({f: getattr(self, f) for f in self.SLOT_FIELDS}, sort_keys=True)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return f"{self.component}-{self.kind}-{self.precision}-{digest}"


def file_hashes(directory: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != KEY_FILE):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        hashes[path.name] = h.hexdigest()
    return hashes


class PartCache:
    """Looks entries up, verifies them, and builds them atomically (a temporary directory renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: CacheKey) -> Path:
        return self.root / key.slot()

    def problem(self, key: CacheKey) -> str | None:
        """Why the entry for ``key`` cannot be used ("missing", "stale: ...", "corrupt: ..."), or None."""
        entry = self.path(key)
        if not entry.is_dir():
            return "missing"
        try:
            recorded = json.loads((entry / KEY_FILE).read_text())
            stored_key, stored_files = recorded["key"], recorded["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"corrupt: unreadable {KEY_FILE} ({exc})"
        expected = key.to_dict()
        changed = sorted(k for k in expected.keys() | stored_key.keys() if expected.get(k) != stored_key.get(k))
        if changed:
            shown = ", ".join(f"{k} {stored_key.get(k)!r} -> {expected.get(k)!r}" for k in changed[:4])
            return f"stale: {shown}"
        actual = file_hashes(entry)
        if actual != stored_files:
            bad = sorted(n for n in actual.keys() | stored_files.keys() if actual.get(n) != stored_files.get(n))
            return f"corrupt: {', '.join(bad)} changed since it was written"
        return None

    def get_or_build(self, key: CacheKey, build: Callable[[Path], None], *, what: str = "") -> Path:
        """The verified entry for ``key``; builds it with ``build(directory)`` when missing, stale or corrupt."""
        problem = self.problem(key)
        if problem is None:
            logger.info("using cached %s %s from %s", key.component, what or key.kind, self.path(key))
            return self.path(key)
        if problem != "missing":
            logger.warning("cached %s %s at %s is %s; rebuilding it", key.component, what or key.kind,
                           self.path(key), problem)
        return self.build(key, build)

    def build(self, key: CacheKey, build: Callable[[Path], None]) -> Path:
        """Builds the entry in a temporary directory, records its key and file hashes, and moves it in place."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.path(key)
        work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.root))
        try:
            build(work)
            record = {"key": key.to_dict(), "files": file_hashes(work)}
            (work / KEY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
            if entry.exists():
                shutil.rmtree(entry)
            work.rename(entry)
        finally:
            if work.exists():
                shutil.rmtree(work)
        return entry

    def invalidate(self, key: CacheKey, reason: str) -> None:
        """Removes an entry that verified but could not be loaded (say, a plan TensorRT refuses)."""
        entry = self.path(key)
        logger.warning("cached %s %s at %s cannot be used (%s); removing it", key.component, key.kind, entry, reason)
        shutil.rmtree(entry, ignore_errors=True)
