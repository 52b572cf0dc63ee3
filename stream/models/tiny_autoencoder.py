"""A tiny autoencoder for DC-AE f32c32 latents that loads the published TAESANA weights.

Why this module exists
----------------------
DC-AE costs about 92% of a 512 px Sana-Sprint frame (docs/design.md#where-the-time-goes: decode 2,092 GFLOPs, encode
1,295). madebyollin/taesd publishes a distilled "tiny" replacement for it, ``taesana_encoder.pth`` and
``taesana_decoder.pth`` (commit 2a1b414, "Add support for Sana DC-AE"), at about 8 / 148 GFLOPs.
diffusers' ``AutoencoderTiny`` cannot load them: its ``DecoderTiny`` keeps one channel count per stage
and cannot express the F32 decoder, whose channel plan is 256-128-64-64-64-64 with five 2x upsamplings
(and whose encoder starts with two strided convolutions). So this module rebuilds ``F32Encoder`` /
``F32Decoder`` layer for layer, with the same ``nn.Sequential`` indices, so the published state dicts
load strictly: ``module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))``.

Source read: ``taesd.py`` of github.com/madebyollin/taesd at 2a1b4149efda2cb6da482e8d3ff017bdb4f98fc3
(``F32Encoder``, ``F32Decoder``, ``Block``, ``Clamp``, ``TAESD``). A later revision of that file (which
adds ``image_channels`` and an F16 variant) leaves the F32 plan unchanged. Our code is written anew.

Conventions
-----------
Found in the sources:

* TAESD images are (B, 3, H, W) in [0, 1] (``taesd.py`` ``main`` feeds ``TF.to_tensor`` images and
  clamps decoder output to [0, 1]; diffusers' ``EncoderTiny`` maps ``x.add(1).div(2)`` and
  ``DecoderTiny`` returns ``x.mul(2).sub(1)`` "to match TAESD convention").
* The decoder starts with ``Clamp``: ``tanh(x / 3) * 3``, a soft clamp of the latents to (-3, 3).
  The decoder's *output* is not clamped by the network.
* Latents are "in approximately [-3, 3]" (README); ``TAESD.scale_latents`` maps [-3, 3] to [0, 1].
* diffusers' ``AutoencoderTiny`` (the same TAESD design for SD) uses ``scaling_factor=1.0`` because
  "no such scaling factor was used": TAESD latents live in the diffusion model's latent space, i.e.
  they are already the VAE latents multiplied by the VAE's scaling factor.

Inferred, not verified (no TAESANA weights can be downloaded here): TAESANA follows the same rule, so
its latents equal ``AutoencoderDC.encode(x).latent * 0.41407``. Consistent with it: unscaled DC-AE
latents have a std of about 1 / 0.41407 = 2.4, which the (-3, 3) ``Clamp`` would crush.

``TinyAutoencoder`` therefore speaks AutoencoderDC's language at its boundary, as ``engines/``
expects: images in [-1, 1] in and out, latents in DC-AE's own unscaled space (the engine multiplies
by ``scaling_factor`` itself). It converts with ``x01 = (x + 1) / 2``, ``z = z_taesd / scaling_factor``
on encode and the reverse on decode.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import Tensor, nn

from stream.exceptions import ModelNotFoundError

logger = logging.getLogger(__name__)

ENCODER_FILENAME = "taesana_encoder.pth"
DECODER_FILENAME = "taesana_decoder.pth"
DCAE_SCALING_FACTOR = 0.41407  # dc-ae-f32c32-sana-1.0 / 1.1 ``config.scaling_factor``
TAESD_REPO_URL = "https://github.com/madebyollin/taesd"
TAESANA_COMMIT = "2a1b4149efda2cb6da482e8d3ff017bdb4f98fc3"
LATENT_CLAMP = 3.0  # the decoder's first layer: tanh(x / 3) * 3
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class TinyAutoencoderConfig:
    """Layer plan of the tiny autoencoder. The defaults are TAESANA's published F32 plan.

    Encoder: ``encoder_stem_channels`` strided 3x3 convs (each halves H and W, with bias, then ReLU);
    then stages of width ``encoder_stage_channels[i]`` holding ``encoder_stage_blocks[i]`` Blocks,
    stages after the first entered through a strided bias-free 3x3 conv; then a 3x3 conv to latents.

    Decoder: Clamp, a 3x3 conv to ``decoder_stage_channels[0]``, ReLU; then stages of width
    ``decoder_stage_channels[i]`` holding ``decoder_stage_blocks[i]`` Blocks, each stage but the last
    followed by a 2x nearest upsampling and a bias-free 3x3 conv to the next width; then a 3x3 conv
    to the image channels.
    """

    image_channels: int = 3
    latent_channels: int = 32
    encoder_stem_channels: tuple[int, ...] = (32, 64)
    encoder_stage_channels: tuple[int, ...] = (64, 64, 64, 64)
    encoder_stage_blocks: tuple[int, ...] = (1, 3, 3, 3)
    decoder_stage_channels: tuple[int, ...] = (256, 128, 64, 64, 64, 64)
    decoder_stage_blocks: tuple[int, ...] = (3, 3, 3, 3, 3, 1)

    def __post_init__(self) -> None:
        for name in ("image_channels", "latent_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("encoder_stem_channels", "encoder_stage_channels", "encoder_stage_blocks",
                     "decoder_stage_channels", "decoder_stage_blocks"):
            value = tuple(getattr(self, name))
            if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
                raise ValueError(f"{name} must be a non-empty tuple of non-negative ints, got {value!r}")
            if name.endswith("channels") and 0 in value:
                raise ValueError(f"{name} must hold positive widths, got {value!r}")
            object.__setattr__(self, name, value)
        if len(self.encoder_stage_channels) != len(self.encoder_stage_blocks):
            raise ValueError("encoder_stage_channels and encoder_stage_blocks must have the same length, got "
                             f"{len(self.encoder_stage_channels)} and {len(self.encoder_stage_blocks)}")
        if len(self.decoder_stage_channels) != len(self.decoder_stage_blocks):
            raise ValueError("decoder_stage_channels and decoder_stage_blocks must have the same length, got "
                             f"{len(self.decoder_stage_channels)} and {len(self.decoder_stage_blocks)}")
        if self.encoder_stem_channels[-1] != self.encoder_stage_channels[0]:
            raise ValueError(f"the encoder stem must end at the first stage's width "
                             f"({self.encoder_stage_channels[0]}), got {self.encoder_stem_channels!r}")
        if self.encoder_downsamplings != self.decoder_upsamplings:
            raise ValueError(f"the encoder halves the image {self.encoder_downsamplings} times but the decoder "
                             f"doubles it {self.decoder_upsamplings} times")

    @property
    def encoder_downsamplings(self) -> int:
        return len(self.encoder_stem_channels) + len(self.encoder_stage_channels) - 1

    @property
    def decoder_upsamplings(self) -> int:
        return len(self.decoder_stage_channels) - 1


def _conv3x3(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp to (-3, 3): ``tanh(x / 3) * 3``. No parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / LATENT_CLAMP) * LATENT_CLAMP


class Block(nn.Module):
    """Residual block: ReLU(conv-ReLU-conv-ReLU-conv(x) + skip(x)), all 3x3 convs with bias.

    State-dict keys: ``conv.{0,2,4}.{weight,bias}``, plus ``skip.weight`` (1x1, no bias) only when the
    widths differ (never in the F32 plan).
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(n_in, n_out), nn.ReLU(), _conv3x3(n_out, n_out), nn.ReLU(), _conv3x3(n_out, n_out)
        )
        self.skip: nn.Module = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:  # (B, n_in, H, W) -> (B, n_out, H, W)
        return self.fuse(self.conv(x) + self.skip(x))


class TinyEncoder(nn.Sequential):
    """TAESANA's ``F32Encoder``: (B, 3, H, W) images in [0, 1] -> (B, C, H/32, W/32) TAESD latents.

    An ``nn.Sequential`` so that its state-dict keys are the published ones (``0.weight``,
    ``4.conv.0.weight``, ..., ``17.bias``). Works in TAESD's conventions; ``TinyAutoencoder`` converts.
    """

    def __init__(self, config: TinyAutoencoderConfig | None = None) -> None:
        config = config or TinyAutoencoderConfig()
        layers: list[nn.Module] = []
        width = config.image_channels
        for stem in config.encoder_stem_channels:  # default: 3 -> 32 -> 64, H/4
            layers += [_conv3x3(width, stem, stride=2), nn.ReLU(inplace=True)]
            width = stem
        for i, (stage, blocks) in enumerate(zip(config.encoder_stage_channels, config.encoder_stage_blocks)):
            if i > 0:  # H/8, H/16, H/32
                layers.append(_conv3x3(width, stage, stride=2, bias=False))
            layers += [Block(stage, stage) for _ in range(blocks)]  # (B, stage, H/2^(i+2), W/2^(i+2))
            width = stage
        layers.append(_conv3x3(width, config.latent_channels))
        super().__init__(*layers)
        self.config = config
        self._spatial_compression_ratio = math.prod(
            int(m.stride[0]) for m in self.modules() if isinstance(m, nn.Conv2d)
        )

    @property
    def spatial_compression_ratio(self) -> int:
        """Image pixels per latent pixel: the product of the convolutions' strides (32 for TAESANA)."""
        return self._spatial_compression_ratio

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, C, H/f, W/f)
        return super().forward(images)


class TinyDecoder(nn.Sequential):
    """TAESANA's ``F32Decoder``: (B, C, h, w) TAESD latents -> (B, 3, 32h, 32w) images in about [0, 1].

    An ``nn.Sequential`` so that its state-dict keys are the published ones (``1.weight``,
    ``3.conv.0.weight``, ``7.weight``, ..., ``29.bias``). The output is not clamped here.
    """

    def __init__(self, config: TinyAutoencoderConfig | None = None) -> None:
        config = config or TinyAutoencoderConfig()
        widths, blocks = config.decoder_stage_channels, config.decoder_stage_blocks
        layers: list[nn.Module] = [Clamp(), _conv3x3(config.latent_channels, widths[0]), nn.ReLU(inplace=True)]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            layers += [Block(width, width) for _ in range(n_blocks)]  # (B, width, h * 2^i, w * 2^i)
            if i + 1 < len(widths):
                layers += [nn.Upsample(scale_factor=2), _conv3x3(width, widths[i + 1], bias=False)]
        layers.append(_conv3x3(widths[-1], config.image_channels))
        super().__init__(*layers)
        self.config = config
        self._spatial_compression_ratio = math.prod(
            int(m.scale_factor) for m in self.modules() if isinstance(m, nn.Upsample)
        )

    @property
    def spatial_compression_ratio(self) -> int:
        """Image pixels per latent pixel: the product of the upsampling factors (2^5 = 32 for TAESANA)."""
        return self._spatial_compression_ratio

    def forward(self, latents: Tensor) -> Tensor:  # (B, C, h, w) -> (B, 3, f*h, f*w) in about [0, 1]
        return super().forward(latents)


class TinyAutoencoder(nn.Module):
    """TAESANA behind AutoencoderDC's conventions: images in [-1, 1], latents unscaled (DC-AE's own space).

    Either part may be missing (encoder-only or decoder-only use); calling it then raises RuntimeError.
    ``encode``/``decode`` run with autograd as the caller has it; backends wrap them in inference mode.
    """

    encoder: TinyEncoder | None
    decoder: TinyDecoder | None

    def __init__(self, encoder: TinyEncoder | None, decoder: TinyDecoder | None, *,
                 scaling_factor: float = DCAE_SCALING_FACTOR) -> None:
        super().__init__()
        if encoder is None and decoder is None:
            raise ValueError("a TinyAutoencoder needs an encoder, a decoder or both")
        if isinstance(scaling_factor, bool) or not isinstance(scaling_factor, (int, float)) \
                or not math.isfinite(scaling_factor) or scaling_factor <= 0:
            raise ValueError(f"scaling_factor must be a positive finite number, got {scaling_factor!r}")
        if encoder is not None and decoder is not None:
            if encoder.config.latent_channels != decoder.config.latent_channels:
                raise ValueError(f"encoder makes {encoder.config.latent_channels} latent channels but the decoder "
                                 f"reads {decoder.config.latent_channels}")
            if encoder.spatial_compression_ratio != decoder.spatial_compression_ratio:
                raise ValueError(f"encoder downsamples {encoder.spatial_compression_ratio}x but the decoder "
                                 f"upsamples {decoder.spatial_compression_ratio}x")
        self.encoder = encoder
        self.decoder = decoder
        self.scaling_factor = float(scaling_factor)

    @property
    def _part(self) -> TinyEncoder | TinyDecoder:
        part = self.decoder if self.decoder is not None else self.encoder
        assert part is not None  # guaranteed by __init__
        return part

    @property
    def config(self) -> TinyAutoencoderConfig:
        return self._part.config

    @property
    def latent_channels(self) -> int:
        return self._part.config.latent_channels

    @property
    def spatial_compression_ratio(self) -> int:
        """Image pixels per latent pixel, derived from the layers (32 for TAESANA)."""
        return self._part.spatial_compression_ratio

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f) unscaled latents, like ``AutoencoderDC.encode(x).latent``."""
        if self.encoder is None:
            raise RuntimeError("this TinyAutoencoder was loaded without its encoder")
        f = self.spatial_compression_ratio
        if images.ndim != 4 or images.shape[1] != self.config.image_channels:
            raise ValueError(f"images must have shape (B, {self.config.image_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"image height and width must be multiples of {f}, got {tuple(images.shape[2:])}")
        param = next(self.encoder.parameters())
        x01 = images.to(param.dtype).add(1).mul(0.5)  # (B, 3, H, W) in [0, 1], TAESD's image range
        return self.encoder(x01) / self.scaling_factor  # (B, C, H/f, W/f) in DC-AE's unscaled space

    def decode(self, latents: Tensor, *, clamp: bool = True) -> Tensor:
        """(B, C, h, w) unscaled latents -> (B, 3, f*h, f*w) images in [-1, 1] (clamped unless ``clamp=False``),
        like ``AutoencoderDC.decode(z).sample``."""
        if self.decoder is None:
            raise RuntimeError("this TinyAutoencoder was loaded without its decoder")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must have shape (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        param = next(self.decoder.parameters())
        z = latents.to(param.dtype) * self.scaling_factor  # (B, C, h, w) in the diffusion model's space
        images = self.decoder(z).mul(2).sub(1)  # (B, 3, f*h, f*w), [0, 1] -> [-1, 1]
        return images.clamp(-1, 1) if clamp else images


def _state_dict_problems(module: nn.Module, state: Mapping[str, object]) -> list[str]:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = [f"missing {k} {list(shape)}" for k, shape in expected.items() if k not in state]
    for key, value in state.items():
        if key not in expected:
            problems.append(f"unexpected {key}")
        elif not isinstance(value, Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"{key} has shape {list(value.shape)}, expected {list(expected[key])}")
    return problems


def _load_part(module: TinyEncoder | TinyDecoder, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    problems = _state_dict_problems(module, state)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{path} does not fit {type(module).__name__} built from {module.config}: {shown}")
    module.load_state_dict(state, strict=True)


def _missing_hint(source: str) -> str:
    return (f"the TAESANA files are published at {TAESD_REPO_URL} (commit {TAESANA_COMMIT[:7]}); put them in a "
            f"directory and pass that, or pass encoder=False / decoder=False to load one part alone "
            f"(source: {source})")


def _resolve_files(source: str | os.PathLike[str], names: list[str], *, revision: str | None,
                   cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None) -> dict[str, Path]:
    """A directory is used as it is; a hub id is looked up in the local Hugging Face cache first and
    downloaded only when it is not there and downloads are on (default: off only if ``HF_HUB_OFFLINE`` is set)."""
    name = os.fspath(source)
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise ModelNotFoundError(name, missing, f"{path} does not hold them; " + _missing_hint(name))
        return {n: path / n for n in names}
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(name, names, "it is neither a directory nor a hub id (owner/name)")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") if local_files_only is None else local_files_only
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
        raise ModelNotFoundError(name, list(reasons), f"{detail}. {_missing_hint(name)}")
    return found


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

    ``source`` is a directory holding the files or a Hugging Face hub id. No hub repo is known to host
    TAESANA (the hub's madebyollin/taesd is the diffusers-format SD 1.x TAESD; the .pth files are on
    GitHub), so a hub id is for mirrors. Raises ``ModelNotFoundError`` naming each missing file and
    ``ValueError`` naming each key whose presence or shape differs from the layer plan. The result is
    on ``device`` and ``dtype``, in eval mode, with gradients off.
    """
    if not (encoder or decoder):
        raise ValueError("load at least one part: encoder=True and/or decoder=True")
    names = [n for wanted, n in ((encoder, ENCODER_FILENAME), (decoder, DECODER_FILENAME)) if wanted]
    paths = _resolve_files(source, names, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    config = config or TinyAutoencoderConfig()
    enc = dec = None
    if encoder:
        enc = TinyEncoder(config)
        _load_part(enc, paths[ENCODER_FILENAME])
    if decoder:
        dec = TinyDecoder(config)
        _load_part(dec, paths[DECODER_FILENAME])
    model = TinyAutoencoder(enc, dec, scaling_factor=scaling_factor)
    model.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    logger.info("loaded tiny autoencoder (%s) from %s on %s as %s",
                "+".join(p for p, m in (("encoder", enc), ("decoder", dec)) if m is not None), source, device, dtype)
    return model


def save_tiny_autoencoder(directory: str | os.PathLike[str], encoder: TinyEncoder | None,
                          decoder: TinyDecoder | None) -> list[Path]:
    """Writes the parts given as ``taesana_encoder.pth`` / ``taesana_decoder.pth``: plain state dicts of
    float32 CPU tensors, as published. Returns the paths written."""
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
