"""Finds and loads Sana-Sprint weights in diffusers format: a local directory or a hub id."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import SanaSprintPipeline
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from stream.exceptions import ModelNotFoundError

logger = logging.getLogger(__name__)

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def choose_placement(device: str | None, dtype: str | None) -> Placement:
    """CUDA with bfloat16 where a GPU exists, CPU with float32 otherwise; either can be overridden."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but torch sees no CUDA GPU")
    if dtype is None:
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    else:
        # float16 is not offered: it is known to break Sana checkpoints (DESIGN 5)
        allowed = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {', '.join(allowed)}, got {dtype!r}")
        dt = allowed[dtype]
    return Placement(dev, dt)


def _check_directory(model: str, path: Path) -> Path:
    missing = [name for name in ("model_index.json", *COMPONENTS) if not (path / name).exists()]
    if missing:
        raise ModelNotFoundError(model, missing, f"{path} is not a complete diffusers-format Sana-Sprint directory")
    return path


def resolve_model_dir(model: str | os.PathLike[str], local_files_only: bool | None = None) -> Path:
    """A directory is used as it is. A hub id is looked up in the local cache first; when it is not there
    and ``local_files_only`` is false (default: true only when ``HF_HUB_OFFLINE`` is set) it is downloaded."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_directory(name, path)
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(name, ["the directory itself"], "it is neither a directory nor a hub id (owner/name)")
    try:
        return _check_directory(name, Path(snapshot_download(name, local_files_only=True)))
    except LocalEntryNotFoundError:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") if local_files_only is None else local_files_only
    if offline:
        raise ModelNotFoundError(name, ["all files"], "it is not in the local Hugging Face cache and downloads are off")
    logger.info("downloading %s from the Hugging Face hub (first use)", name)
    try:
        return _check_directory(name, Path(snapshot_download(name)))
    except (OSError, ValueError) as exc:  # network errors are OSErrors; a missing repo a ValueError subclass
        raise ModelNotFoundError(name, ["all files"], f"it is not cached and downloading failed: {exc}") from exc


def load_pipeline(model: str | os.PathLike[str], placement: Placement,
                  local_files_only: bool | None = None) -> SanaSprintPipeline:
    """Loads every Sana-Sprint component through diffusers/transformers onto the chosen device and dtype."""
    path = resolve_model_dir(model, local_files_only)
    if placement.device.type == "cpu":
        # randomly initialised and small weights hit denormals on CPU: 12 s -> 2.5 s per 0.6B forward
        torch.set_flush_denormal(True)
    pipe = SanaSprintPipeline.from_pretrained(path, dtype=placement.dtype, local_files_only=True)
    pipe.to(placement.device)
    logger.info("loaded %s on %s as %s", model, placement.device, placement.dtype)
    return pipe
