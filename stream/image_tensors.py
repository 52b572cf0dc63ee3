"""Conversion between camera frames (uint8 RGB arrays) and the model's image tensors, synchronously (tests,
reference pipelines, the host side of the similarity filter). The frame path's own uploads and downloads are
``engines.transfer``'s, with the same math."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engines.transfer import to_model_range, to_pixels


def to_tensor(frame: np.ndarray, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    return to_model_range(torch.from_numpy(frame)[None].to(device))


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding as diffusers' image processor does."""
    return to_pixels(images).cpu().numpy()
