"""Finds and loads Sana-Sprint weights in diffusers format (a local directory or a hub id): ``load_model`` is
the one loading sequence both ``StreamEngine.from_pretrained`` and ``sana-stream build`` run."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderDC, SanaSprintPipeline
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from engines import BackendName
from engines.base import Autoencoder
from engines.compile_options import CompileOptions
from engines.models.controlnet import SprintControlNetModel
from engines.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderConfig
from engines.models.tiny_autoencoder_weights import ENCODER_FILENAME, load_tiny_autoencoder
from engines.specs import BuildSpec
from engines.torch_backend import DcaeAutoencoder, TorchBackend
from stream.config import DTYPES, AutoencoderKind, StreamConfig
from stream.control import ControlNetConfig
from stream.exceptions import ModelNotFoundError

logger = logging.getLogger(__name__)

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
TINY_AUTOENCODER_DIR = "tiny_autoencoder"  # taesana_*.pth (+ tiny_autoencoder.json when not the published plan)
TINY_AUTOENCODER_PLAN = "tiny_autoencoder.json"
DCAE_LITE_DIR = "vae_lite"
DCAE_LITE_HUB_ID = "mit-han-lab/dc-ae-lite-f32c32-sana-1.1-diffusers"
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
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        dt = getattr(torch, dtype)
    return Placement(dev, dt)


def _check_directory(model: str, path: Path, required: list[str]) -> Path:
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise ModelNotFoundError(model, missing, f"{path} is not a complete diffusers-format directory")
    return path


def resolve_model_dir(model: str | os.PathLike[str], local_files_only: bool | None = None) -> Path:
    """A Sana-Sprint directory, or a hub id resolved through ``resolve_snapshot``."""
    name = os.fspath(model)
    required = ["model_index.json", *COMPONENTS]
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_directory(name, path, required)
    return resolve_snapshot(name, local_files_only, required)


def resolve_snapshot(name: str, local_files_only: bool | None, required: list[str]) -> Path:
    """A hub id is looked up in the local cache first; when it is not there and ``local_files_only`` is
    false (default: true only when ``HF_HUB_OFFLINE`` is set) it is downloaded."""
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(name, ["the directory itself"], "it is neither a directory nor a hub id (owner/name)")
    try:
        return _check_directory(name, Path(snapshot_download(name, local_files_only=True)), required)
    except LocalEntryNotFoundError:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") if local_files_only is None else local_files_only
    if offline:
        raise ModelNotFoundError(name, ["all files"], "it is not in the local Hugging Face cache and downloads are off")
    logger.info("downloading %s from the Hugging Face hub (first use)", name)
    try:
        return _check_directory(name, Path(snapshot_download(name)), required)
    except (OSError, ValueError) as exc:  # network errors are OSErrors; a missing repo a ValueError subclass
        raise ModelNotFoundError(name, ["all files"], f"it is not cached and downloading failed: {exc}") from exc


def load_pipeline(path: Path, placement: Placement) -> SanaSprintPipeline:
    """Loads every Sana-Sprint component of a resolved directory through diffusers/transformers."""
    if placement.device.type == "cpu":
        # randomly initialised and small weights hit denormals on CPU: 12 s -> 2.5 s per 0.6B forward
        torch.set_flush_denormal(True)
    pipe = SanaSprintPipeline.from_pretrained(path, dtype=placement.dtype, local_files_only=True)
    pipe.to(placement.device)
    logger.info("loaded %s on %s as %s", path, placement.device, placement.dtype)
    return pipe


def _tiny_autoencoder(model_dir: Path, config: StreamConfig, placement: Placement,
                      local_files_only: bool | None) -> TinyAutoencoder:
    source: str | Path = config.tiny_vae or model_dir / TINY_AUTOENCODER_DIR
    if config.tiny_vae is None and not Path(source).is_dir():
        raise ModelNotFoundError(str(model_dir), [TINY_AUTOENCODER_DIR],
                                 "the tiny autoencoder was asked for: pass tiny_vae=DIR holding taesana_*.pth")
    plan_file = Path(source) / TINY_AUTOENCODER_PLAN
    plan = TinyAutoencoderConfig(**json.loads(plan_file.read_text())) if plan_file.is_file() else None
    try:
        return load_tiny_autoencoder(source, device=placement.device, dtype=placement.dtype, config=plan,
                                     encoder=config.encoder is AutoencoderKind.TINY,
                                     decoder=config.decoder is AutoencoderKind.TINY,
                                     local_files_only=local_files_only)
    except ModelNotFoundError as exc:  # add which option asked for each missing file, and the way around it
        raise ModelNotFoundError(exc.model, exc.missing, f"{exc.hint}. {_tiny_option_hint(exc.missing)}") from exc


def _tiny_option_hint(missing: list[str]) -> str:
    hints = []
    for filename in missing:
        side, others = ("encoder", "'dcae'") if filename == ENCODER_FILENAME else ("decoder", "'dcae' or 'dcae-lite'")
        hints.append(f"{filename} is read because {side}='tiny' (--{side} tiny); without it, choose {side}={others}")
    return "; ".join(hints)


def _dcae_lite(model_dir: Path, config: StreamConfig, placement: Placement,
               local_files_only: bool | None) -> DcaeAutoencoder:
    bundled = model_dir / DCAE_LITE_DIR
    source = config.dcae_lite or (str(bundled) if bundled.is_dir() else DCAE_LITE_HUB_ID)
    path = Path(source) if Path(source).is_dir() else resolve_snapshot(source, local_files_only, ["config.json"])
    vae = AutoencoderDC.from_pretrained(path, dtype=placement.dtype, local_files_only=True).to(placement.device)
    logger.info("decoding with DC-AE-Lite from %s", source)
    return DcaeAutoencoder(vae)


def load_controlnets(configs: tuple[ControlNetConfig, ...], placement: Placement,
                     local_files_only: bool | None = None) -> list[SprintControlNetModel]:
    """Each configured Sprint ControlNet (diffusers-format directory or hub id) on the model's device and dtype."""
    nets = []
    for c in configs:
        path = Path(c.model) if Path(c.model).is_dir() else resolve_snapshot(c.model, local_files_only,
                                                                               ["config.json"])
        net = SprintControlNetModel.from_pretrained(path, dtype=placement.dtype, local_files_only=True)
        nets.append(net.to(placement.device))
        logger.info("loaded ControlNet %s (%d blocks, preprocessor %s)", c.model, net.config.num_layers,
                    c.preprocessor)
    return nets


def load_autoencoders(model_dir: Path, config: StreamConfig, placement: Placement, latent_channels: int,
                local_files_only: bool | None = None) -> tuple[Autoencoder | None, Autoencoder | None]:
    """The encoder and decoder ``config`` asks for instead of the model's DC-AE (None: use DC-AE)."""
    tiny = None
    if AutoencoderKind.TINY in (config.encoder, config.decoder):
        tiny = _tiny_autoencoder(model_dir, config, placement, local_files_only)
        if tiny.latent_channels != latent_channels or tiny.spatial_compression_ratio != 32:
            raise ValueError(f"tiny_vae makes {tiny.latent_channels}-channel latents at "
                             f"{tiny.spatial_compression_ratio}x, the model needs {latent_channels} at 32x")
    encoder = tiny if config.encoder is AutoencoderKind.TINY else None
    decoder: Autoencoder | None = tiny if config.decoder is AutoencoderKind.TINY else None
    if config.decoder is AutoencoderKind.DCAE_LITE:
        decoder = _dcae_lite(model_dir, config, placement, local_files_only)
    return encoder, decoder


@dataclass
class LoadedModel:
    """A Sana-Sprint checkpoint loaded for a ``StreamConfig``: the diffusers pipeline (text encoder, tokenizer,
    scheduler) and its networks, with the chosen encoder, decoder and ControlNets, on the torch backend."""

    pipeline: SanaSprintPipeline
    torch_backend: TorchBackend


def load_model(model: str | os.PathLike[str], config: StreamConfig,
               local_files_only: bool | None = None) -> LoadedModel:
    """Resolves ``model``, loads it on ``config``'s device and dtype, with the autoencoders and ControlNets
    ``config`` names; the torch backend over it runs as it is or is compiled (``engines.compile``)."""
    if config.backend is BackendName.TENSORRT:  # the GPU stack's real problem in a second, not after loading
        from engines.gpu_probe import probe_tensorrt

        probe_tensorrt(config.device)
    placement = choose_placement(config.device, config.dtype)
    path = resolve_model_dir(model, local_files_only)
    pipe = load_pipeline(path, placement)
    latent_channels = int(pipe.vae.config.latent_channels)
    encoder, decoder = load_autoencoders(path, config, placement, latent_channels, local_files_only)
    controlnets = load_controlnets(config.controlnets, placement, local_files_only)
    backend = TorchBackend(pipe.transformer, pipe.vae, encoder=encoder, decoder=decoder, controlnets=controlnets)
    return LoadedModel(pipe, backend)


def build_spec(config: StreamConfig, options: CompileOptions) -> BuildSpec:
    """The static shapes compiled parts are built for: ``config``'s size, steps and cfg type, ``options``' streams
    and prompt length."""
    return BuildSpec(width=config.width, height=config.height, steps=config.num_steps, streams=options.streams,
                     cfg_type=config.cfg_type.value, kv_length=options.kv_length or config.max_sequence_length)
