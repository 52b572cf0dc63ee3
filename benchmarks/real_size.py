"""Networks at their published sizes with random weights, for benchmarks where the real weights are not at hand."""

from __future__ import annotations

import torch
from diffusers import AutoencoderDC

from stream.models.tiny_autoencoder import DCAE_SCALING_FACTOR


def real_size_dcae(seed: int = 0) -> AutoencoderDC:
    """The published DC-AE f32c32 (dc-ae-f32c32-sana-1.x) configuration, random weights, in eval mode."""
    torch.manual_seed(seed)
    return AutoencoderDC(
        latent_channels=32, attention_head_dim=32,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        downsample_block_type="conv", upsample_block_type="interpolate", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=DCAE_SCALING_FACTOR).eval()
