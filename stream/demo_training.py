"""Trains the demo model so that the engine's output for each ``DemoStyle`` prompt imitates that style's filter
(``stream.demo_filters``), on synthetic webcam pictures (``stream.demo_scenes``). How and why: docs/demo-model.md.

Two stages, both seeded (same seed, same machine: the same weights):
1. the tiny autoencoder learns to encode camera pictures and to decode camera pictures and every filter's output;
2. the transformer learns, through the engine's own TrigFlow step (``stream.trigflow``), to turn a noised camera
   latent into the latent of the prompt's filter: fully at strength 1.0 and above, proportionally less at lower
   strengths. Prompts it was not trained on learn to keep the camera picture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import SanaSprintPipeline
from torch import Tensor, nn
from tqdm.auto import tqdm

from engines.models.tiny_autoencoder import TinyAutoencoderConfig, TinyDecoder, TinyEncoder
from engines.models.tiny_autoencoder_weights import save_tiny_autoencoder
from stream import trigflow
from stream.demo_manifest import DemoManifest
from stream.demo_model import DemoModelSpec, build_demo_pipeline
from stream.demo_filters import DemoStyle, apply_filter
from stream.demo_scenes import webcam_picture
from stream.loading import TINY_AUTOENCODER_DIR, TINY_AUTOENCODER_PLAN
from stream.prompt import PromptEncoder

logger = logging.getLogger(__name__)

SIGMA_D = 0.5
GUIDANCE = 4.5  # StreamConfig.guidance_scale's default: what the engine feeds the guidance embedder
ANCHORED_CHANNELS = 12  # latent channels tied to the colour grid (colour_grid)
FULL_STRENGTH = 1.0  # at and above this angle the output is the filter itself (the served default)
# Words of the trained prompts: an "other" prompt holds none of them
_STYLE_WORDS = {w for s in DemoStyle for w in s.value.split()}
_OTHER_WORDS = """watercolor painting oil portrait anime manga cartoon comic pixel cinematic cyberpunk steampunk
fantasy surreal abstract impressionist cubist vaporwave retro vintage noir dramatic golden hour studio bokeh van gogh
monet picasso ukiyo-e stained glass clay lego marble bronze statue forest ocean night sunset dragon castle robot
red blue green purple pastel vivid dark bright glowing""".split()


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Sizes and lengths of the training; the defaults take a few minutes on 2 CPU cores."""

    seed: int = 0
    pictures: int = 32  # synthetic 512 px webcam pictures (the served size, so filters keep their pixel scale)
    picture_size: int = 512
    crop: int = 64  # px of the autoencoder's training crops (it is convolutional)
    autoencoder_steps: int = 1500
    autoencoder_batch: int = 12
    transformer_steps: int = 1600
    transformer_batch: int = 16
    learning_rate: float = 3e-3
    other_prompts: int = 24  # untrained prompts taught to keep the camera picture
    min_angle: float = 0.2  # strengths the transformer trains on: U(min_angle, max_angle) radians
    max_angle: float = 1.3


def strength_weight(t: Tensor) -> Tensor:
    """How much of the filter the output holds at angle ``t``: all of it from ``FULL_STRENGTH`` up, and
    ``sin t / sin FULL_STRENGTH`` below (0.57 at 0.5 rad, 0.29 at 0.25)."""
    return (torch.sin(t) / math.sin(FULL_STRENGTH)).clamp(0, 1)


def other_prompts(count: int, seed: int) -> list[str]:
    """``count`` style-like prompts that share no word with the trained ones (two or three words each)."""
    rng = np.random.default_rng(seed)
    prompts: list[str] = ["a watercolor painting"]
    while len(prompts) < count:
        words = rng.choice(_OTHER_WORDS, int(rng.integers(1, 4)), replace=False)
        prompt = " ".join(words)
        if prompt not in prompts and not _STYLE_WORDS & set(words):
            prompts.append(prompt)
    return prompts


def to_unit(images: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@dataclass
class PictureSet:
    """Every training picture and each style's filter of it, as uint8 (N, 3, H, W); index 0 is the camera."""

    versions: list[Tensor]  # [camera, *one per DemoStyle]

    @classmethod
    def make(cls, config: DemoTrainingConfig) -> PictureSet:
        size = config.picture_size
        camera = np.stack([webcam_picture(config.seed * 100_000 + i, size, size) for i in range(config.pictures)])
        versions = [torch.from_numpy(camera).permute(0, 3, 1, 2).contiguous()]
        for style in DemoStyle:
            filtered = torch.cat([apply_filter(style, to_unit(camera[i:i + 16])) for i in range(0, len(camera), 16)])
            versions.append((filtered * 255).round().to(torch.uint8))
        return cls(versions)

    def crops(self, generator: torch.Generator, batch: int, crop: int) -> Tensor:
        """``batch`` random crops of random versions, as float (B, 3, crop, crop) in [0, 1]."""
        N, _, H, W = self.versions[0].shape
        out = []
        for _ in range(batch):
            v, i = (int(torch.randint(n, (1,), generator=generator)) for n in (len(self.versions), N))
            y, x = (int(torch.randint(n - crop + 1, (1,), generator=generator)) for n in (H, W))
            out.append(self.versions[v][i, :, y:y + crop, x:x + crop])
        return torch.stack(out).float() / 255


def _progress(steps: int, description: str) -> Iterator[int]:
    return iter(tqdm(range(steps), desc=description, unit="step", mininterval=2.0))


def colour_grid(images: Tensor) -> Tensor:
    """The anchor of the first ``ANCHORED_CHANNELS`` latent channels: each latent cell's 2 x 2 grid of 16 px mean
    colours, in [-1, 1]: (B, 3, H, W) -> (B, 12, H/32, W/32)."""
    return F.pixel_unshuffle(F.avg_pool2d(images, 16), 2) * 2 - 1


def train_autoencoder(encoder: TinyEncoder, decoder: TinyDecoder, pictures: PictureSet,
                      config: DemoTrainingConfig, generator: torch.Generator) -> float:
    """Stage 1: reconstruct camera pictures and filter outputs. The first 12 latent channels are anchored to the
    picture's 16 px colour grid, so the latents carry the colours from the first steps (a from-scratch autoencoder
    learns far too slowly for a few minutes on a CPU otherwise); the free channels are held near unit spread, the
    scale the transformer expects. Returns the last reconstruction loss (mean absolute error in [0, 1] units)."""
    nn.init.constant_(decoder[-1].bias, 0.5)  # start at mid grey, not black
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, config.autoencoder_steps)
    loss = torch.zeros(())
    for _ in _progress(config.autoencoder_steps, "demo model 1/2: autoencoder"):
        images = pictures.crops(generator, config.autoencoder_batch, config.crop)
        latents = encoder(images)  # (B, C, crop/32, crop/32)
        recon = decoder(latents)
        loss = F.l1_loss(recon, images)
        anchor = F.mse_loss(latents[:, :ANCHORED_CHANNELS], colour_grid(images))
        free = latents[:, ANCHORED_CHANNELS:]
        spread = (free.std() - 1) ** 2 + free.mean() ** 2
        optimizer.zero_grad()
        (loss + anchor + 0.05 * spread).backward()
        optimizer.step()
        schedule.step()
    return loss.item()


@torch.no_grad()
def encode_pictures(encoder: TinyEncoder, pictures: PictureSet) -> list[Tensor]:
    """Each version's latents in TrigFlow space (x sigma_d), (N, C, H/32, W/32)."""
    return [torch.cat([encoder(v[i:i + 8].float() / 255) for i in range(0, len(v), 8)]) * SIGMA_D
            for v in pictures.versions]


def engine_step(transformer: torch.nn.Module, x: Tensor, t: Tensor, embeds: Tensor, mask: Tensor) -> Tensor:
    """One call of the engine's TrigFlow step (``StreamEngine._denoise``): x0_hat for latents ``x`` at angles ``t``
    (B, 1, 1, 1), the prompt given as padded embeddings with their mask."""
    s = trigflow.flow_time(t)
    x_in = trigflow.model_input(x, s, SIGMA_D)
    guidance = x.new_full((x.shape[0],), GUIDANCE) * transformer.config.guidance_embeds_scale
    v = transformer(x_in, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=s.flatten(),
                    guidance=guidance, return_dict=False)[0]
    return trigflow.clean_estimate(x, trigflow.trigflow_output(x_in, v, s, SIGMA_D), t)


@dataclass
class PromptTable:
    """Padded embeddings of every training prompt; ``targets[i]`` is prompt i's style index (0: keep the camera)."""

    embeds: Tensor  # (P, L, C)
    mask: Tensor  # (P, L)
    targets: list[int]

    @classmethod
    def make(cls, pipe: SanaSprintPipeline, others: list[str]) -> PromptTable:
        encoder = PromptEncoder(pipe)
        prompts = [s.value for s in DemoStyle] + others
        rows = [encoder.encode(p) for p in prompts]  # each (L_i, C), padding dropped
        length = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, 0, length - r.shape[0])) for r in rows])
        mask = torch.stack([(torch.arange(length) < r.shape[0]).long() for r in rows])
        return cls(embeds, mask, [i + 1 for i in range(len(DemoStyle))] + [0] * len(others))


def _transformer_batch(transformer: torch.nn.Module, latents: list[Tensor], prompts: PromptTable,
                       config: DemoTrainingConfig,
                       generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Inputs and targets of one step: random pictures, prompts (60% trained styles), angles, noise and latent
    crops of 8-16 cells. A third of the styled items are a later Stream Batch slot: they start from the model's own
    first step (at 1.0 rad, without gradient), re-noised to an angle in [0.2, 0.8], and must land on the style."""
    B = config.transformer_batch
    N, _, h, w = latents[0].shape
    size = int(torch.randint(8, h + 1, (1,), generator=generator)) // 4 * 4
    y, x = (int(torch.randint(n - size + 1, (1,), generator=generator)) for n in (h, w))
    picture = torch.randint(N, (B,), generator=generator)
    styled = torch.rand(B, generator=generator) < 0.6
    style_row = torch.randint(len(DemoStyle), (B,), generator=generator)
    other_row = len(DemoStyle) + torch.randint(len(prompts.targets) - len(DemoStyle), (B,), generator=generator)
    row = torch.where(styled, style_row, other_row)
    target_version = torch.tensor([prompts.targets[int(r)] for r in row])
    chained = (styled & (torch.rand(B, generator=generator) < 0.33)).view(B, 1, 1, 1)
    angle = config.min_angle + (config.max_angle - config.min_angle) * torch.rand(B, generator=generator)
    angle = torch.where(torch.rand(B, generator=generator) < 0.3, torch.full_like(angle, FULL_STRENGTH), angle)
    t = angle.view(B, 1, 1, 1)

    def pick(versions: Tensor) -> Tensor:
        return torch.stack([latents[int(v)][int(i), :, y:y + size, x:x + size] for v, i in zip(versions, picture)])

    camera, filtered = pick(torch.zeros(B, dtype=torch.long)), pick(target_version)
    embeds, mask = prompts.embeds[row], prompts.mask[row]
    first_t = torch.full_like(t, FULL_STRENGTH)
    first_noise, noise = (torch.randn(camera.shape, generator=generator) for _ in range(2))
    with torch.no_grad():
        noised = trigflow.add_noise(camera, first_noise, first_t, SIGMA_D)
        first = engine_step(transformer, noised, first_t, embeds, mask)
    clean = torch.where(chained, first, camera)
    t = torch.where(chained, 0.2 + 0.6 * torch.rand(t.shape, generator=generator), t)
    weight = torch.where(chained, torch.ones_like(t), strength_weight(t))
    target = camera + weight * (filtered - camera)
    return trigflow.add_noise(clean, noise, t, SIGMA_D), t, embeds, mask, target


def train_transformer(transformer: torch.nn.Module, latents: list[Tensor], prompts: PromptTable,
                      config: DemoTrainingConfig, generator: torch.Generator) -> float:
    """Stage 2: the engine's step from noised camera latents to each prompt's filter latent. Returns the last
    loss (mean squared error in TrigFlow space)."""
    transformer.train().requires_grad_(True)
    optimizer = torch.optim.Adam(transformer.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, config.transformer_steps)
    loss = torch.zeros(())
    for _ in _progress(config.transformer_steps, "demo model 2/2: transformer"):
        x, t, embeds, mask, target = _transformer_batch(transformer, latents, prompts, config, generator)
        loss = F.mse_loss(engine_step(transformer, x, t, embeds, mask), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    transformer.eval().requires_grad_(False)
    return loss.item()


@dataclass(frozen=True)
class TrainingReport:
    seconds: float
    autoencoder_loss: float
    transformer_loss: float
    other_prompts: tuple[str, ...]


def train_demo(pipe: SanaSprintPipeline, encoder: TinyEncoder, decoder: TinyDecoder,
               config: DemoTrainingConfig = DemoTrainingConfig()) -> TrainingReport:
    """Trains ``pipe.transformer``, ``encoder`` and ``decoder`` in place (the text encoder stays as it is)."""
    start, threads = time.monotonic(), torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible sums, and far faster than 2 threads on a busy machine
    torch.set_flush_denormal(True)  # as the engine loads models on a CPU (stream.loading.load_pipeline)
    try:
        return _train(pipe, encoder, decoder, config, start)
    finally:
        torch.set_num_threads(threads)


def _train(pipe: SanaSprintPipeline, encoder: TinyEncoder, decoder: TinyDecoder, config: DemoTrainingConfig,
           start: float) -> TrainingReport:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    pictures = PictureSet.make(config)
    ae_loss = train_autoencoder(encoder, decoder, pictures, config, generator)
    encoder.eval().requires_grad_(False)
    decoder.eval().requires_grad_(False)
    latents = encode_pictures(encoder, pictures)
    del pictures
    others = other_prompts(config.other_prompts, config.seed)
    prompts = PromptTable.make(pipe, others)
    tf_loss = train_transformer(pipe.transformer, latents, prompts, config, generator)
    report = TrainingReport(time.monotonic() - start, ae_loss, tf_loss, tuple(others))
    logger.info("demo model trained in %.0f s: autoencoder L1 %.4f, transformer MSE %.4f", report.seconds,
                ae_loss, tf_loss)
    return report


# The trained demo's sizes: a little wider than the random tiny preset, so that it can learn its filters
TRAINED_SPEC = DemoModelSpec(transformer_layers=3, heads=4, head_dim=16, cross_heads=4, cross_head_dim=16,
                             instruction_tokens=True)
# no residual blocks: a shallow autoencoder learns in minutes, a deep one (TAESANA's plan) in days
TRAINED_AUTOENCODER = TinyAutoencoderConfig(
    encoder_stem_channels=(16, 32), encoder_stage_channels=(32, 32, 32, 32), encoder_stage_blocks=(0, 0, 0, 0),
    decoder_stage_channels=(64, 48, 32, 24, 16, 16), decoder_stage_blocks=(0, 0, 0, 0, 0, 0),
)


def make_trained_demo_model(directory: str | os.PathLike[str],
                            config: DemoTrainingConfig = DemoTrainingConfig()) -> Path:
    """Builds the demo pipeline of ``TRAINED_SPEC``, trains it (``train_demo``) and writes it to ``directory``
    with its trained tiny autoencoder and ``demo_model.json``. Returns the path."""
    path = Path(directory)
    pipe = build_demo_pipeline(TRAINED_SPEC, config.seed)
    torch.manual_seed(config.seed + 1)
    encoder, decoder = TinyEncoder(TRAINED_AUTOENCODER), TinyDecoder(TRAINED_AUTOENCODER)
    report = train_demo(pipe, encoder, decoder, config)
    pipe.save_pretrained(path)
    tiny_dir = path / TINY_AUTOENCODER_DIR
    save_tiny_autoencoder(tiny_dir, encoder, decoder)
    (tiny_dir / TINY_AUTOENCODER_PLAN).write_text(json.dumps(dataclasses.asdict(TRAINED_AUTOENCODER), indent=2) + "\n")
    manifest = DemoManifest(prompts=tuple(s.value for s in DemoStyle), training=dataclasses.asdict(config),
                            seconds=round(report.seconds), autoencoder_loss=report.autoencoder_loss,
                            transformer_loss=report.transformer_loss, other_prompts=report.other_prompts)
    manifest.write(path)
    logger.info("wrote the trained demo model to %s", path)
    return path
