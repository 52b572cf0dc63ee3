"""Writes the optional parts beside a tiny Sana-Sprint: a tiny autoencoder (TAESANA layer plan, scaled like the
rest of the preset), a DC-AE-Lite-style decoder and a Sprint ControlNet, all random, so demo mode, tests and
benchmarks select them exactly as a user selects the real ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel
from torch import nn

from stream.loading import LITE_VAE_DIR, TINY_VAE_DIR, TINY_VAE_PLAN
from stream.models.controlnet import SprintControlNetModel
from stream.models.tiny_autoencoder import TinyAutoencoderConfig, TinyDecoder, TinyEncoder
from stream.models.tiny_autoencoder_weights import save_tiny_autoencoder

# TAESANA's published plan with every width / 16 (~1/256 of its work, like the proportional preset's ~1/236).
PROPORTIONAL_TINY_VAE = TinyAutoencoderConfig(
    encoder_stem_channels=(2, 4), encoder_stage_channels=(4, 4, 4, 4),
    decoder_stage_channels=(16, 8, 4, 4, 4, 4),
)
# The smallest plan that still has every layer of the real one: tests and demo mode.
TINY_TINY_VAE = TinyAutoencoderConfig(
    encoder_stem_channels=(4, 8), encoder_stage_channels=(8, 8, 8, 8), encoder_stage_blocks=(1, 1, 1, 1),
    decoder_stage_channels=(16, 8, 8, 8, 8, 8), decoder_stage_blocks=(1, 1, 1, 1, 1, 1),
)


def write_tiny_codecs(directory: Path, vae: AutoencoderDC, plan: TinyAutoencoderConfig, seed: int = 0) -> None:
    """``directory``/tiny_autoencoder (taesana_*.pth + its plan) and ``directory``/vae_lite (diffusers format)."""
    torch.manual_seed(seed + 1)
    plan = dataclasses.replace(plan, latent_channels=int(vae.config.latent_channels))
    tiny_dir = directory / TINY_VAE_DIR
    save_tiny_autoencoder(tiny_dir, TinyEncoder(plan), TinyDecoder(plan))
    (tiny_dir / TINY_VAE_PLAN).write_text(json.dumps(dataclasses.asdict(plan), indent=2) + "\n")
    # DC-AE-Lite: the same encoder and latent space, a decoder of plain ResBlocks (no attention blocks)
    config = dict(vae.config)
    config["decoder_block_types"] = ["ResBlock"] * len(config["decoder_block_out_channels"])
    config["decoder_qkv_multiscales"] = [[]] * len(config["decoder_block_out_channels"])
    AutoencoderDC.from_config(config).to(vae.dtype).save_pretrained(directory / LITE_VAE_DIR)


CONTROLNET_DIR = "controlnet"


def tiny_controlnet(transformer: SanaTransformer2DModel, num_layers: int = 1, seed: int = 0) -> SprintControlNetModel:
    """A Sprint ControlNet copied from the transformer's first ``num_layers`` blocks, with small random (not
    zero) projections so that it visibly acts, as a trained one would."""
    torch.manual_seed(seed + 2)
    net = SprintControlNetModel.from_transformer(transformer, num_layers=num_layers)
    for layer in (net.input_block, *net.controlnet_blocks):
        nn.init.normal_(layer.weight, std=0.2)
    return net


def write_tiny_controlnet(directory: Path, transformer: SanaTransformer2DModel, seed: int = 0,
                          num_layers: int = 1) -> None:
    """``directory``/controlnet: a ``tiny_controlnet`` of ``num_layers`` blocks."""
    tiny_controlnet(transformer, num_layers=num_layers, seed=seed).save_pretrained(directory / CONTROLNET_DIR)
