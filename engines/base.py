"""The seam between the stream engine and a model runtime (torch, onnxruntime, tensorrt).

A backend runs the three networks of Sana-Sprint on ready tensors. Everything around them (TrigFlow
math, noise, slots, guidance) lives in ``stream/`` and is the same for every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from engines.prompt_kv import KVBatch, PromptKV

if TYPE_CHECKING:
    from engines.io_buffers import IOBuffers


@dataclass(frozen=True)
class ModelGeometry:
    """What the stream engine must know about the networks' shapes and scales."""

    latent_channels: int
    spatial_compression: int  # image pixels per latent pixel (32 for DC-AE f32c32)
    scaling_factor: float  # the VAE's latent scale (0.41407 for DC-AE)
    guidance_embeds_scale: float  # the transformer multiplies the guidance by this (0.1)
    cross_attention_heads: int  # heads of each block's cross-attention (K/V layout)
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True)
class ControlBatch:
    """Per ControlNet: its control latents (B, C, h, w), in the VAE's scaled latent space (what diffusers' Sana
    ControlNet pipeline feeds), each batch item's conditioning scale (B,), and whether any of its scales is not 0
    (``on``). The stream engine fills ``on`` from the host floats the scales were made of; None reads the tensors,
    which waits for the device, so the frame path never leaves it None."""

    conds: tuple[Tensor, ...]
    scales: tuple[Tensor, ...]
    on: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.on is None:
            object.__setattr__(self, "on", tuple(bool(scale.any()) for scale in self.scales))
        elif len(self.on) != len(self.scales):
            raise ValueError(f"on has {len(self.on)} entries for {len(self.scales)} scales")

    def is_on(self, net: int) -> bool:
        """Whether ControlNet ``net`` runs (exactly off when all its scales are 0), without touching the device."""
        assert self.on is not None  # filled by __post_init__
        return self.on[net]


class Autoencoder(Protocol):
    """An autoencoder in DC-AE's conventions: images (B, 3, H, W) in [-1, 1], latents unscaled."""

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


class ModelBackend(ABC):
    """Runs the autoencoder and the transformer. Shapes: images (B, 3, H, W) in [-1, 1]; latents
    (B, C, H/f, W/f) in the VAE's own (unscaled) space; transformer tensors in the model's space."""

    geometry: ModelGeometry

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C, H/f, W/f), unscaled VAE latents."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, H/f, W/f) unscaled VAE latents -> (B, 3, H, W) images in about [-1, 1]."""

    @abstractmethod
    def velocity(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, kv: KVBatch,
                 control: ControlBatch | None = None) -> Tensor:
        """One transformer call: x_in (B, C, h, w), flow time (B,), scaled guidance (B,) -> velocity.
        ``control`` conditions it with the backend's ControlNets (one entry per net)."""

    @abstractmethod
    def prompt_kv(self, embeds: Tensor) -> PromptKV:
        """Text-encoder hidden states (L, caption_channels) -> each block's cross-attention K and V."""

    def close(self) -> None:
        """Releases what the backend holds."""


class CompiledPart(ABC):
    """One compiled part (ONNX Runtime session, TensorRT engine) with a dynamic batch and buffers allocated once.

    ``buffers`` holds a tensor per input and output at fixed addresses, sized for the most rows the part takes;
    ``execute(rows)`` runs the part on their first ``rows`` rows. ``runs`` counts the calls per row count.
    """

    buffers: IOBuffers
    runs: Counter[int]

    @abstractmethod
    def execute(self, rows: int) -> None:
        """Runs once on the first ``rows`` rows of the input buffers, filling those rows of the output buffers."""

    def close(self) -> None:
        """Releases the runtime's objects."""
