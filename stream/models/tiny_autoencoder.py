"""A tiny autoencoder for DC-AE f32c32 latents, layer for layer TAESANA's published network.

madebyollin/taesd publishes ``taesana_encoder.pth`` / ``taesana_decoder.pth``, a distilled replacement for
Sana's DC-AE (8 / 148 GFLOPs at 512 px against DC-AE's 1,295 / 2,092). diffusers' ``AutoencoderTiny`` cannot
express their F32 plan, so ``TinyEncoder`` / ``TinyDecoder`` rebuild ``F32Encoder`` / ``F32Decoder`` of
``taesd.py`` (commit 2a1b414) with the same ``nn.Sequential`` indices, and the published state dicts load
strictly (``tiny_autoencoder_weights``). ``TinyAutoencoder`` speaks AutoencoderDC's language at its boundary:
images in [-1, 1], latents unscaled; TAESANA's own latents are DC-AE's scaled ones (x 0.41407), measured on
the published encoder. Conventions, sources and the measurements: docs/autoencoder.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DCAE_SCALING_FACTOR = 0.41407  # dc-ae-f32c32-sana-1.0 / 1.1 ``config.scaling_factor``
LATENT_CLAMP = 3.0  # the decoder's first layer: tanh(x / 3) * 3


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
