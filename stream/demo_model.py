"""Writes the demo models: small, randomly initialised but real Sana-Sprint pipelines in diffusers format.

They are made of the same classes as the real model (SanaTransformer2DModel with guidance embedding and
qk-norm, AutoencoderDC with the real 6-stage 32x geometry, Gemma2Model, a fast tokenizer, SCMScheduler),
so tests, benchmarks and the server's demo mode load them through ``StreamEngine.from_pretrained`` exactly
like real weights. Their images are not a style of anything: they show what the code does, not quality.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

from stream.prompt import default_complex_human_instruction

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0..4
# Words a user of a style filter types, so that the tokenizer learns whole words for them.
_STYLE_WORDS = """
a an the of in on with and at by from under over portrait landscape city street forest ocean sky night
day sunset sunrise mountain river cat dog person face woman man child robot dragon castle garden room
watercolor painting oil sketch pencil charcoal ink anime manga cartoon comic pixel art photo photograph
realistic cinematic lighting neon cyberpunk steampunk fantasy surreal abstract impressionist cubist
pop vaporwave retro vintage noir dramatic soft warm cold golden hour studio bokeh detailed sharp
red orange yellow green blue purple pink black white gray brown silver gold colorful pastel vivid
style of van gogh monet picasso ukiyo-e stained glass mosaic clay claymation lego marble bronze statue
wearing hat glasses smiling looking camera background foreground beautiful ugly dark bright glowing
"""


class DemoPreset(str, enum.Enum):
    TINY = "tiny"  # the fastest thing that still runs every code path; tests and demo mode
    PROPORTIONAL = "proportional"  # the real Sprint 0.6B's share of work per part at 1/236 of its FLOPs; benchmarks
    REAL = "real"  # the real Sprint 0.6B and DC-AE sizes with random weights: GPU speed and export at full size


@dataclass(frozen=True)
class DemoModelSpec:
    """Sizes of a demo Sana-Sprint. The VAE always has the real 6 stages (32x down-sampling).

    The transformer's cross-attention has ``cross_heads * cross_head_dim == heads * head_dim`` (as in the
    real model). The VAE's widths must satisfy DC-AE's shortcuts: each width divides 4x the one before, and
    the last one is a multiple of ``latent_channels``.
    """

    latent_channels: int = 32
    transformer_layers: int = 2
    heads: int = 2
    head_dim: int = 8
    cross_heads: int = 2
    cross_head_dim: int = 8
    mlp_ratio: float = 2.5  # the transformer's GLUMBConv expansion (the real model's 2.5)
    text_hidden: int = 16  # Gemma-2's hidden size, also the transformer's caption_channels
    text_layers: int = 1
    text_heads: int = 2
    text_kv_heads: int = 1
    text_head_dim: int | None = None  # None: text_hidden // text_heads
    text_intermediate: int | None = None  # None: 4 * text_hidden
    vae_widths: tuple[int, ...] = (8, 8, 16, 16, 32, 32)  # last >= latent_channels (shortcuts)
    vae_encoder_layers: tuple[int, ...] = (1, 1, 1, 1, 1, 1)  # blocks per stage; the real DC-AE: (2, 2, 2, 3, 3, 3)
    vae_decoder_layers: tuple[int, ...] = (1, 1, 1, 1, 1, 1)  # the real DC-AE: (3, 3, 3, 3, 3, 3)
    vae_attention_head_dim: int = 4
    vocab_size: int = 800  # of the tokenizer
    sample_size: int = 16  # latent size of the "native" resolution; 512 px / 32
    text_vocab_size: int | None = None  # rows of Gemma's embedding; None: the tokenizer's vocabulary
    controlnet_layers: int = 1  # blocks of the ControlNet written beside the model
    dtype: str = "float32"  # of the weights as written ("bfloat16": as the real Sprint checkpoints)
    instruction_tokens: bool = False  # the tokenizer knows each instruction line as one token (build_tokenizer)


# Each part keeps its share of the real 0.6B's work at 512 px, scaled down by one common factor (1/236), so a
# CPU benchmark sees the real balance of parts; derivation and FLOPs: benchmarks/README.md#the-proportional-model
PROPORTIONAL_SPEC = DemoModelSpec(
    transformer_layers=4,
    heads=6,
    head_dim=32,
    cross_heads=3,
    cross_head_dim=64,
    mlp_ratio=2.5,
    text_hidden=384,
    text_layers=3,
    text_heads=4,
    text_kv_heads=2,
    text_head_dim=96,
    text_intermediate=1536,
    vae_widths=(8, 16, 32, 32, 64, 64),
    vae_encoder_layers=(2, 2, 2, 3, 3, 3),
    vae_decoder_layers=(3, 3, 3, 3, 3, 3),
    vae_attention_head_dim=2,
    vocab_size=1024,
)

# The published configs with random weights (speed does not depend on weight values): Sana-Sprint 0.6B
# (Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers: 28 blocks of 36 heads x 32, cross-attention 16 x 72,
# caption channels 2304, mlp_ratio 2.5, native 1024 px) and DC-AE f32c32 (mit-han-lab/dc-ae-f32c32-sana-1.1-
# diffusers: widths 128-256-512-512-1024-1024, 2-2-2-3-3-3 encoder and 3 x 6 decoder blocks, head dim 32), a
# 7-block ControlNet (the Sana ControlNet design) and TAESANA's published tiny autoencoder plan. Gemma-2 has
# Gemma-2-2B's width (2304), heads (8 query / 4 key-value, 256 each), MLP (9216) and vocabulary (256,000), but 2 of
# its 26 layers: all 26 would be ~10 GB in fp32 on the CPUs this is tested on, and the text encoder runs only when a
# prompt changes. Weights are written in bf16, as the real checkpoints are (about 3.4 GB on disk).
REAL_SPEC = DemoModelSpec(
    transformer_layers=28,
    heads=36,
    head_dim=32,
    cross_heads=16,
    cross_head_dim=72,
    mlp_ratio=2.5,
    text_hidden=2304,
    text_layers=2,
    text_heads=8,
    text_kv_heads=4,
    text_head_dim=256,
    text_intermediate=9216,
    text_vocab_size=256_000,
    vae_widths=(128, 256, 512, 512, 1024, 1024),
    vae_encoder_layers=(2, 2, 2, 3, 3, 3),
    vae_decoder_layers=(3, 3, 3, 3, 3, 3),
    vae_attention_head_dim=32,
    vocab_size=1024,
    sample_size=32,
    controlnet_layers=7,
    dtype="bfloat16",
)

PRESETS: dict[DemoPreset, DemoModelSpec] = {
    DemoPreset.TINY: DemoModelSpec(),
    DemoPreset.PROPORTIONAL: PROPORTIONAL_SPEC,
    DemoPreset.REAL: REAL_SPEC,
}


def build_tokenizer(vocab_size: int, instruction_tokens: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the pipeline's instruction text and common style words.

    Byte-level means every prompt tokenises (no unknown words), so different prompts give different ids. With
    ``instruction_tokens`` each line of the instruction prefix is one added token: the prefix every prompt carries
    shrinks from ~260 tokens to ~15, so a small trained model's cross-attention finds the prompt's own tokens.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = default_complex_human_instruction() + _STYLE_WORDS.split()
    tok.train_from_iterator(corpus, trainer)
    if instruction_tokens:
        tok.add_tokens([AddedToken(line, normalized=False) for line in default_complex_human_instruction()])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", padding_side="right",
    )


def build_text_encoder(spec: DemoModelSpec, vocab_size: int) -> Gemma2Model:
    return Gemma2Model(Gemma2Config(
        vocab_size=vocab_size, hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate or 4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads, head_dim=spec.text_head_dim or spec.text_hidden // spec.text_heads,
        max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=1, attn_implementation="eager",
    ))


def build_transformer(spec: DemoModelSpec) -> SanaTransformer2DModel:
    inner = spec.heads * spec.head_dim
    return SanaTransformer2DModel(
        in_channels=spec.latent_channels, out_channels=spec.latent_channels, num_attention_heads=spec.heads,
        attention_head_dim=spec.head_dim, num_layers=spec.transformer_layers,
        num_cross_attention_heads=spec.cross_heads, cross_attention_head_dim=spec.cross_head_dim,
        cross_attention_dim=inner, caption_channels=spec.text_hidden, mlp_ratio=spec.mlp_ratio,
        sample_size=spec.sample_size, patch_size=1, qk_norm="rms_norm_across_heads", guidance_embeds=True,
    )


def build_vae(spec: DemoModelSpec) -> AutoencoderDC:
    stages = len(spec.vae_widths)
    return AutoencoderDC(
        in_channels=3, latent_channels=spec.latent_channels, attention_head_dim=spec.vae_attention_head_dim,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * (stages - 3),
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * (stages - 3),
        encoder_block_out_channels=spec.vae_widths, decoder_block_out_channels=spec.vae_widths,
        encoder_layers_per_block=spec.vae_encoder_layers, decoder_layers_per_block=spec.vae_decoder_layers,
        encoder_qkv_multiscales=((),) * 3 + ((5,),) * (stages - 3),
        decoder_qkv_multiscales=((),) * 3 + ((5,),) * (stages - 3),
        downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )


def build_demo_pipeline(spec: DemoModelSpec, seed: int = 0) -> SanaSprintPipeline:
    """The pipeline of ``spec``, each network cast to ``spec.dtype`` as soon as it is built (the real preset's
    networks would need 6.6 GB at once in fp32)."""
    torch.manual_seed(seed)
    dtype = getattr(torch, spec.dtype)
    tokenizer = build_tokenizer(spec.vocab_size, spec.instruction_tokens)
    text_encoder = build_text_encoder(spec, max(spec.text_vocab_size or 0, len(tokenizer))).to(dtype)
    transformer = build_transformer(spec).to(dtype)
    vae = build_vae(spec).to(dtype)
    scheduler = SCMScheduler(prediction_type="trigflow", sigma_data=0.5)
    return SanaSprintPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                              transformer=transformer, scheduler=scheduler)


def make_demo_model(directory: str | os.PathLike[str], preset: DemoPreset | str = DemoPreset.TINY,
                    seed: int = 0) -> Path:
    """Writes a demo Sana-Sprint in diffusers format to ``directory`` and returns its path, with a tiny
    autoencoder (``tiny_autoencoder/``), a DC-AE-Lite-style decoder (``vae_lite/``) and a one-block Sprint
    ControlNet (``controlnet/``) beside it."""
    from engines.models.tiny_autoencoder import TinyAutoencoderConfig
    from stream.demo_extras import (PROPORTIONAL_PRESET_AUTOENCODER, TINY_PRESET_AUTOENCODER, write_demo_autoencoders,
                                    write_demo_controlnet)

    try:
        preset = DemoPreset(preset)
    except ValueError:
        raise ValueError(f"preset must be one of {', '.join(p.value for p in DemoPreset)}, got {preset!r}") from None
    spec, path = PRESETS[preset], Path(directory)
    pipe = build_demo_pipeline(spec, seed)
    pipe.save_pretrained(path)
    plan = {DemoPreset.TINY: TINY_PRESET_AUTOENCODER, DemoPreset.PROPORTIONAL: PROPORTIONAL_PRESET_AUTOENCODER,
            DemoPreset.REAL: TinyAutoencoderConfig()}[preset]
    write_demo_autoencoders(path, pipe.vae, plan, seed)
    write_demo_controlnet(path, pipe.transformer, seed, num_layers=spec.controlnet_layers)
    logger.info("wrote a random Sana-Sprint (%s preset) to %s", preset.value, path)
    return path
