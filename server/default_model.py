"""Which model ``serve`` loads when no ``--model`` is given.

    --model given             -> that model
    Sana-Sprint 0.6B cached   -> the cached weights
    a CUDA GPU and the hub    -> download Sana-Sprint 0.6B once (its size is announced, a progress bar follows)
    otherwise (a CPU, offline) -> the tiny random demo model

On a CPU the real model runs at a few seconds per frame, so the demo stays the default there; on a GPU the real
model is what a user came for. Nothing here touches the network unless a GPU is present.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0


class ModelSource(str, enum.Enum):
    REQUESTED = "requested"  # --model
    CACHED = "cached"  # the default model, already in the Hugging Face cache
    DOWNLOAD = "download"  # the default model, fetched now
    DEMO = "demo"  # the tiny random model


def default_model_source(requested: str | None, *, cached: Callable[[], bool], gpu: Callable[[], bool],
                         online: Callable[[], bool]) -> ModelSource:
    """The decision above. The checks are callables, asked in order and only when needed: the network is
    probed only on a machine with a GPU."""
    if requested:
        return ModelSource.REQUESTED
    if cached():
        return ModelSource.CACHED
    if gpu() and online():
        return ModelSource.DOWNLOAD
    return ModelSource.DEMO


def hub_reachable(connect: Callable[[tuple[str, int], float], object] = socket.create_connection) -> bool:
    """Whether the Hugging Face hub can be reached: never with ``HF_HUB_OFFLINE`` set; through a proxy, assumed
    (the download will say otherwise); else a TCP connection to the hub's host in at most 3 s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    address = (url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
    try:
        connection = connect(address, HUB_PROBE_TIMEOUT_S)
    except OSError as exc:
        logger.info("the Hugging Face hub at %s:%d is not reachable (%s)", *address, exc)
        return False
    close = getattr(connection, "close", None)
    if close is not None:
        close()
    return True


def download_notice(repo_id: str, sizes: Iterable[int | None]) -> str:
    """One line announcing a download of files of ``sizes`` bytes (None: unknown)."""
    known = [s for s in sizes if s is not None]
    total = f"{sum(known) / 1e9:.1f} GB in {len(known)} files" if known else "size unknown"
    return (f"no --model given and a CUDA GPU is present: downloading {repo_id} ({total}) into the Hugging Face "
            "cache, once; later starts load it from there. Pass --model to choose another model, or set "
            "HF_HUB_OFFLINE=1 to serve the demo model instead")


def announce_download(repo_id: str) -> None:
    """Logs the download's size (read from the hub) and turns huggingface_hub's progress bars on."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import enable_progress_bars

    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=10)
        sizes: list[int | None] = [s.size for s in info.siblings or []]
    except Exception as exc:  # the notice only: the download itself reports its own failure
        logger.warning("could not read the size of %s from the hub (%s)", repo_id, exc)
        sizes = []
    logger.warning("%s", download_notice(repo_id, sizes))
    enable_progress_bars()
