"""FLOPs of each part of a Sana-Sprint, counted by torch's FlopCounterMode on meta-device copies.

Meta tensors carry shapes but no data, so counting a full-size model takes about a second and no memory.
FlopCounterMode counts matrix multiplies, convolutions and attention (1 FMA = 2 FLOPs), not element-wise ops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import Gemma2Model, PreTrainedTokenizerBase

from engines.prompt_kv import batch_prompt_kv
from engines.torch_backend import TorchBackend
from stream.prompt import default_complex_human_instruction
from stream.tiny_model import TinyModelSpec, build_text_encoder, build_tokenizer, build_transformer, build_vae

META = torch.device("meta")
PARTS = ("encode", "decode", "transformer", "text_encoder")

# The real Sana-Sprint 0.6B at 512x512 px, batch 1, in GFLOPs (docs/design.md#where-the-time-goes). This module
# counts the real configs (diffusers / Gemma-2-2B defaults) at 1294.9 / 2092.2 / 315.6, and 2077.5 at 500 text tokens.
REAL_SPRINT_GFLOPS: dict[str, float] = {"encode": 1295.0, "decode": 2092.0, "transformer": 316.0,
                                        "text_encoder": 2000.0}
REAL_SPRINT_CACHEABLE_GFLOPS = 47.0  # caption projection + cross-attention K/V over 300 text tokens, per step


@dataclass(frozen=True)
class ModelFlops:
    """GFLOPs of one call of each part at ``width`` x ``height``, batch 1."""

    width: int
    height: int
    encode: float  # DC-AE encoder, one image
    decode: float  # DC-AE decoder, one latent
    transformer: float  # one stock step: ``text_tokens`` padded prompt tokens with their mask
    transformer_cacheable: float  # the part of it a fixed prompt makes constant (caption projection + K/V)
    text_encoder: float  # Gemma-2 over ``encoder_tokens`` tokens (instruction prefix + prompt + padding)
    text_tokens: int
    encoder_tokens: int
    prompt_tokens: int | None = None  # a real prompt's length without padding, when measured
    transformer_cached: float | None = None  # the engine's step: cached K/V of ``prompt_tokens`` tokens

    def parts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARTS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def text_encoder_tokens(tokenizer: PreTrainedTokenizerBase, max_sequence_length: int = 300) -> int:
    """How many tokens the pipeline's ``encode_prompt`` feeds Gemma (its ``max_length_all``)."""
    instruction = "\n".join(default_complex_human_instruction())
    return len(tokenizer.encode(instruction)) + max_sequence_length - 2


def measure_flops(transformer: SanaTransformer2DModel, vae: AutoencoderDC, text_encoder: Gemma2Model, *,
                  width: int, height: int, encoder_tokens: int, text_tokens: int = 300,
                  prompt_tokens: int | None = None) -> ModelFlops:
    """Counts meta-device models (see ``meta_copies``). Installs the engine's processors on ``transformer``."""
    f = int(vae.spatial_compression_ratio)
    channels = int(transformer.config.caption_channels)
    latent = torch.empty(1, int(vae.config.latent_channels), height // f, width // f, device=META)
    embeds = torch.empty(1, text_tokens, channels, device=META)
    ones = torch.ones(1, device=META)
    with torch.no_grad():
        encode = count_flops(lambda: vae.encode(torch.empty(1, 3, height, width, device=META)))
        decode = count_flops(lambda: vae.decode(latent))
        stock = count_flops(lambda: transformer(
            latent, encoder_hidden_states=embeds, encoder_attention_mask=torch.ones(1, text_tokens, device=META),
            timestep=ones, guidance=ones, return_dict=False))
        ids = torch.zeros(1, encoder_tokens, dtype=torch.long, device=META)
        gemma = count_flops(lambda: text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids)))
        backend = TorchBackend(transformer, vae)  # the engine's own prompt K/V code
        cacheable = count_flops(lambda: backend.prompt_kv(embeds[0]))
        cached = None
        if prompt_tokens is not None:
            kv = batch_prompt_kv([backend.prompt_kv(embeds[0, :prompt_tokens])], backend.geometry.cross_attention_heads)
            cached = count_flops(lambda: backend.velocity(latent, ones, ones, kv)) / 1e9
    return ModelFlops(width=width, height=height, encode=encode / 1e9, decode=decode / 1e9, transformer=stock / 1e9,
                      transformer_cacheable=cacheable / 1e9, text_encoder=gemma / 1e9, text_tokens=text_tokens,
                      encoder_tokens=encoder_tokens, prompt_tokens=prompt_tokens, transformer_cached=cached)


def meta_copies(pipe: SanaSprintPipeline) -> tuple[SanaTransformer2DModel, AutoencoderDC, Gemma2Model]:
    """Weightless copies of a loaded pipeline's networks, built from their configs."""
    with META:
        transformer = SanaTransformer2DModel.from_config(pipe.transformer.config)
        vae = AutoencoderDC.from_config(pipe.vae.config)
        text_encoder = Gemma2Model(pipe.text_encoder.config)
    return transformer, vae, text_encoder


def pipeline_flops(pipe: SanaSprintPipeline, width: int, height: int, max_sequence_length: int = 300,
                   prompt_tokens: int | None = None) -> ModelFlops:
    """FLOPs of a loaded pipeline's parts (counted on meta copies: its weights are not touched)."""
    transformer, vae, text_encoder = meta_copies(pipe)
    return measure_flops(transformer, vae, text_encoder, width=width, height=height,
                         encoder_tokens=text_encoder_tokens(pipe.tokenizer, max_sequence_length),
                         text_tokens=max_sequence_length, prompt_tokens=prompt_tokens)


def spec_flops(spec: TinyModelSpec, width: int = 512, height: int = 512, max_sequence_length: int = 300) -> ModelFlops:
    """FLOPs of the tiny model ``spec`` describes, without building its weights."""
    tokenizer = build_tokenizer(spec.vocab_size)
    with META:
        transformer, vae = build_transformer(spec), build_vae(spec)
        text_encoder = build_text_encoder(spec, len(tokenizer))
    return measure_flops(transformer, vae, text_encoder, width=width, height=height,
                         encoder_tokens=text_encoder_tokens(tokenizer, max_sequence_length),
                         text_tokens=max_sequence_length)


def scale_against_real(flops: ModelFlops) -> tuple[float, dict[str, float]]:
    """The common scale factor (geometric mean of real / measured over the four parts) and each part's share
    relative to the real model's after that scaling (1.0 = exactly the real proportion)."""
    parts = flops.parts()
    factors = {name: REAL_SPRINT_GFLOPS[name] / parts[name] for name in PARTS}
    scale = math.exp(sum(math.log(v) for v in factors.values()) / len(factors))
    return scale, {name: scale / factors[name] for name in PARTS}
