"""The ``real`` preset: Sana-Sprint 0.6B and DC-AE f32c32 at their published sizes with random weights.

The first test counts its FLOPs on meta-device copies (no weights, a few seconds) against the real model's
(DESIGN 4). The second runs one real-size 512 px frame on torch and on onnxruntime on the CPU and compares them;
it writes ~4 GB, took 5 minutes here and peaks at ~12.4 GB of memory (docs/gpu.md), so it is opt-in and not part
of ``make test``:

    SANA_STREAM_REAL_SIZE=1 .venv/bin/python -m pytest tests/test_real_preset.py -m slow -s
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.flops import REAL_SPRINT_GFLOPS, spec_flops
from stream.tiny_model import PRESETS, REAL_SPEC, TinyPreset, build_text_encoder, build_transformer

logger = logging.getLogger(__name__)


def test_real_preset_has_the_published_sizes():
    assert PRESETS[TinyPreset.REAL] is REAL_SPEC
    flops = spec_flops(REAL_SPEC, width=512, height=512)
    for part in ("encode", "decode", "transformer"):  # the real configs count 1294.9 / 2092.2 / 315.6
        assert abs(getattr(flops, part) / REAL_SPRINT_GFLOPS[part] - 1) < 0.005, (part, getattr(flops, part))
    with torch.device("meta"):
        transformer = build_transformer(REAL_SPEC)
        gemma = build_text_encoder(REAL_SPEC, REAL_SPEC.text_vocab_size)
    assert 590e6 < sum(p.numel() for p in transformer.parameters()) < 600e6  # "0.6B"
    config = gemma.config
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.intermediate_size, config.vocab_size) == (2304, 8, 4, 256, 9216, 256_000)
    assert config.num_hidden_layers == 2  # of Gemma-2-2B's 26: see the preset's comment


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SANA_STREAM_REAL_SIZE") != "1",
                    reason="real-size CPU run (~5-15 min, ~12 GB of memory): set SANA_STREAM_REAL_SIZE=1")
def test_one_real_size_frame_on_torch_and_onnxruntime(tmp_path: Path):
    from engines.compile import CompileOptions, compile_backend
    from engines.specs import BuildSpec
    from stream import StreamConfig, StreamEngine
    from stream.tiny_model import make_tiny_model
    from tests.conftest import camera_frame

    started = time.perf_counter()
    model = make_tiny_model(tmp_path / "real", preset=TinyPreset.REAL)
    written = time.perf_counter() - started
    config = StreamConfig(width=512, height=512, t_list=(1.0,), prompt="a watercolor painting", seed=1,
                          device="cpu", dtype="float32")
    eager = StreamEngine.from_pretrained(model, config)
    frame = camera_frame(3, height=512, width=512)
    started = time.perf_counter()
    theirs = eager.process({"default": frame})["default"]
    torch_s = time.perf_counter() - started
    # the prompt's embeddings are cached by now: free Gemma (3 GB in fp32) before the export needs the memory
    eager.pipeline.text_encoder.to("meta")
    gc.collect()
    started = time.perf_counter()
    parts = compile_backend(eager.backend, BuildSpec(width=512, height=512, steps=1, streams=1, kv_length=300),
                            CompileOptions(cache_dir=tmp_path / "engines"), "onnxruntime")
    export_s = time.perf_counter() - started
    compiled = StreamEngine(parts.backend, eager.prompt_encoder, eager.config, sigma_d=eager.sigma_d)
    started = time.perf_counter()
    ours = compiled.process({"default": frame})["default"]
    ort_s = time.perf_counter() - started
    weights = sum(f.stat().st_size for f in (tmp_path / "engines").rglob("*.onnx.data"))
    diff = np.abs(ours.image.astype(np.int16) - theirs.image.astype(np.int16))
    figures = (f"real-size 512 px frame: written in {written:.0f} s; torch {torch_s:.1f} s, onnxruntime "
               f"{ort_s:.1f} s (export {export_s:.0f} s, {weights / 1e9:.2f} GB of ONNX weights; "
               f"{dict(sorted((k, round(v)) for k, v in parts.seconds.items()))}); image difference mean "
               f"{diff.mean():.3f}, max {diff.max()} of 255")
    logger.warning("%s", figures)
    print(figures)
    assert ours.kind is theirs.kind and ours.image.shape == (512, 512, 3)
    assert weights > 2**31  # the transformer alone is over 2 GB in fp32: external data works at full size
    assert diff.mean() <= 1.0, figures
