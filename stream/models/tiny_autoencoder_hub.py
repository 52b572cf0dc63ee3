"""Finds the tiny autoencoder's weight files: a local directory as it is, or a Hugging Face hub id (cache first)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from stream.exceptions import ModelNotFoundError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def downloads_off(local_files_only: bool | None) -> bool:
    """``local_files_only`` where given, else whether ``HF_HUB_OFFLINE`` is set."""
    if local_files_only is not None:
        return local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def resolve_files(source: str | os.PathLike[str], names: list[str], *, hint: str, revision: str | None = None,
                  cache_dir: str | os.PathLike[str] | None = None,
                  local_files_only: bool | None = None) -> dict[str, Path]:
    """The path of each file in ``names``. A directory is used as it is; a hub id is looked up in the local
    Hugging Face cache first and downloaded only when it is not there and downloads are on. Raises
    ``ModelNotFoundError`` naming every missing file, with ``hint`` (where the files come from) appended."""
    name = os.fspath(source)
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise ModelNotFoundError(name, missing, f"{path} does not hold {'it' if len(missing) == 1 else 'them'}; "
                                                    + hint)
        return {n: path / n for n in names}
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(name, names, "it is neither a directory nor a hub id (owner/name)")
    offline = downloads_off(local_files_only)
    found: dict[str, Path] = {}
    reasons: dict[str, str] = {}
    for filename in names:
        try:
            found[filename] = Path(hf_hub_download(name, filename, revision=revision, cache_dir=cache_dir,
                                                   local_files_only=True))
            continue
        except (EntryNotFoundError, OSError, ValueError):
            pass  # not cached
        if offline:
            reasons[filename] = "not in the local Hugging Face cache and downloads are off"
            continue
        logger.info("downloading %s from the Hugging Face hub repo %s (first use)", filename, name)
        try:
            found[filename] = Path(hf_hub_download(name, filename, revision=revision, cache_dir=cache_dir))
        except (EntryNotFoundError, OSError, ValueError) as exc:  # network errors are OSErrors
            reasons[filename] = f"not cached and downloading failed: {exc}"
    if reasons:
        detail = "; ".join(f"{f}: {why}" for f, why in reasons.items())
        raise ModelNotFoundError(name, list(reasons), f"{detail}. {hint}")
    return found
