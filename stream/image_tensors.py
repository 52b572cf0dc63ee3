"""Conversion between camera frames (uint8 RGB arrays) and the model's image tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_tensor(frame: np.ndarray, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    t = torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float()
    return t / 127.5 - 1.0


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding as diffusers' image processor does."""
    x = (images.float() * 0.5 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
