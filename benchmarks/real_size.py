"""Networks at their published sizes with random weights, for benchmarks where the real weights are not at hand."""

from __future__ import annotations

import torch
from diffusers import AutoencoderDC

from stream.tiny_model import REAL_SPEC, build_vae


def real_size_dcae(seed: int = 0) -> AutoencoderDC:
    """The published DC-AE f32c32 (dc-ae-f32c32-sana-1.x) configuration, random weights, in eval mode: the
    ``real`` preset's autoencoder (``stream.tiny_model.REAL_SPEC``)."""
    torch.manual_seed(seed)
    return build_vae(REAL_SPEC).eval()
