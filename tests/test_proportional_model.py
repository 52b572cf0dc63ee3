"""The proportional preset keeps the real Sana-Sprint 0.6B's work share per part (docs/design.md#where-the-time-goes).

FLOPs are counted on meta-device models built from the preset's spec (no weights, ~1 s). Tolerance: after
dividing by one common scale factor (the geometric mean over the four parts), each part's FLOPs lie within
+-30% of the real model's (1.0 = exactly the real proportion). The preset measures within 16% today.
"""

from __future__ import annotations

import pytest

from benchmarks.flops import (PARTS, REAL_SPRINT_CACHEABLE_GFLOPS, REAL_SPRINT_GFLOPS, ModelFlops, scale_against_real,
                              spec_flops)
from stream.tiny_model import PRESETS, TinyModelSpec, TinyPreset

SHARE_TOLERANCE = 0.30


@pytest.fixture(scope="module")
def flops() -> ModelFlops:
    return spec_flops(PRESETS[TinyPreset.PROPORTIONAL], width=512, height=512)


@pytest.mark.parametrize("part", PARTS)
def test_each_part_keeps_the_real_share(flops: ModelFlops, part: str) -> None:
    _, shares = scale_against_real(flops)
    assert abs(shares[part] - 1.0) <= SHARE_TOLERANCE, f"{part}: {shares[part]:.3f} of the real share ({flops})"


def test_common_scale_gives_a_cpu_sized_frame(flops: ModelFlops) -> None:
    scale, _ = scale_against_real(flops)
    assert 150 <= scale <= 400, scale  # the preset's comment documents 236
    frame = flops.encode + flops.transformer + flops.decode  # one 1-step frame
    real_frame = REAL_SPRINT_GFLOPS["encode"] + REAL_SPRINT_GFLOPS["transformer"] + REAL_SPRINT_GFLOPS["decode"]
    assert 8.0 <= frame <= 25.0, frame
    assert frame < real_frame / 150


def test_cacheable_share_of_a_step_matches_the_real_model(flops: ModelFlops) -> None:
    real = REAL_SPRINT_CACHEABLE_GFLOPS / REAL_SPRINT_GFLOPS["transformer"]
    ours = flops.transformer_cacheable / flops.transformer
    assert abs(ours / real - 1.0) <= SHARE_TOLERANCE, (ours, real)


def test_text_encoder_sees_as_many_tokens_as_the_real_pipeline(flops: ModelFlops) -> None:
    # the real Gemma tokenizer makes the instruction prefix ~200 tokens, so Gemma runs on ~500
    assert 450 <= flops.encoder_tokens <= 550, flops.encoder_tokens


def test_tiny_preset_is_unchanged() -> None:
    tiny = PRESETS[TinyPreset.TINY]
    assert tiny == TinyModelSpec()
    assert (tiny.transformer_layers, tiny.heads, tiny.head_dim, tiny.text_hidden, tiny.text_layers) == (2, 2, 8, 16, 1)
    assert tiny.vae_widths == (8, 8, 16, 16, 32, 32)
    assert tiny.vae_encoder_layers == tiny.vae_decoder_layers == (1,) * 6
