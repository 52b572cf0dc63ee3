"""TAESANA's published weight files: where they come from, and loading / saving them strictly.

The files are plain state dicts (``taesd.py`` loads them with ``load_state_dict(torch.load(path,
weights_only=True))``); the published encoder holds float16 tensors, which load into a float32 network as
they are. The strict check is torch's own (``load_state_dict(strict=True)``), wrapped in
``IncompatibleWeightsError`` naming the file.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from stream.exceptions import IncompatibleWeightsError
from stream.models.tiny_autoencoder import (
    DCAE_SCALING_FACTOR,
    TinyAutoencoder,
    TinyAutoencoderConfig,
    TinyDecoder,
    TinyEncoder,
)
from stream.models.tiny_autoencoder_hub import resolve_files

logger = logging.getLogger(__name__)

ENCODER_FILENAME = "taesana_encoder.pth"
DECODER_FILENAME = "taesana_decoder.pth"
TAESD_REPO_URL = "https://github.com/madebyollin/taesd"
TAESANA_COMMIT = "2a1b4149efda2cb6da482e8d3ff017bdb4f98fc3"  # "Add support for Sana DC-AE"
SOURCE_HINT = f"TAESANA's files are published at {TAESD_REPO_URL} (commit {TAESANA_COMMIT[:7]})"


def load_part(module: TinyEncoder | TinyDecoder, path: Path) -> None:
    """Loads the state dict at ``path`` into ``module`` strictly; ``IncompatibleWeightsError`` names the file."""
    target = f"{type(module).__name__} built from {module.config}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IncompatibleWeightsError(str(path), target, f"not a readable torch state dict ({first_line})") from exc
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:  # torch's strict check: missing/unexpected keys, shapes, not a dict
        raise IncompatibleWeightsError(str(path), target, str(exc)) from exc


def load_tiny_autoencoder(
    source: str | os.PathLike[str],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    scaling_factor: float = DCAE_SCALING_FACTOR,
    encoder: bool = True,
    decoder: bool = True,
    config: TinyAutoencoderConfig | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> TinyAutoencoder:
    """Loads ``taesana_encoder.pth`` and/or ``taesana_decoder.pth`` strictly into a ``TinyAutoencoder``.

    ``source`` is a directory holding the files or a Hugging Face hub id (for mirrors: no hub repo is known to
    host TAESANA; the files are on GitHub). ``encoder=False`` / ``decoder=False`` load one part alone. Raises
    ``ModelNotFoundError`` naming each missing file and ``IncompatibleWeightsError`` (a ValueError) naming the
    file that does not fit the layer plan. The result is on ``device`` and ``dtype``, in eval mode, with
    gradients off.
    """
    if not (encoder or decoder):
        raise ValueError("load at least one part: encoder=True and/or decoder=True")
    names = [n for wanted, n in ((encoder, ENCODER_FILENAME), (decoder, DECODER_FILENAME)) if wanted]
    paths = resolve_files(source, names, hint=SOURCE_HINT, revision=revision, cache_dir=cache_dir,
                          local_files_only=local_files_only)
    config = config or TinyAutoencoderConfig()
    enc = dec = None
    if encoder:
        enc = TinyEncoder(config)
        load_part(enc, paths[ENCODER_FILENAME])
    if decoder:
        dec = TinyDecoder(config)
        load_part(dec, paths[DECODER_FILENAME])
    model = TinyAutoencoder(enc, dec, scaling_factor=scaling_factor)
    model.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    logger.info("loaded tiny autoencoder (%s) from %s on %s as %s",
                "+".join(p for p, m in (("encoder", enc), ("decoder", dec)) if m is not None), source, device, dtype)
    return model


def save_tiny_autoencoder(directory: str | os.PathLike[str], encoder: TinyEncoder | None,
                          decoder: TinyDecoder | None) -> list[Path]:
    """Writes the parts given as ``taesana_encoder.pth`` / ``taesana_decoder.pth``: plain state dicts of
    float32 CPU tensors, which ``taesd.py`` loads as it loads the published files. Returns the paths written."""
    if encoder is None and decoder is None:
        raise ValueError("nothing to save: both encoder and decoder are None")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for module, filename in ((encoder, ENCODER_FILENAME), (decoder, DECODER_FILENAME)):
        if module is None:
            continue
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
        torch.save(state, path / filename)
        written.append(path / filename)
    return written
