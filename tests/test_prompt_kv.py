"""Prompt encoding identical to the pipeline's, and cached cross-attention K/V identical to no cache."""

from __future__ import annotations

import pytest
import torch
from diffusers import SanaSprintPipeline

from engines.prompt_kv import batch_prompt_kv
from engines.torch_backend import TorchBackend
from stream.prompt import PromptEncoder, default_complex_human_instruction
from tests.support import camera_frame


@pytest.fixture(scope="module")
def pipes(tiny_model_dir):
    stock = SanaSprintPipeline.from_pretrained(tiny_model_dir)
    cached = SanaSprintPipeline.from_pretrained(tiny_model_dir)
    return stock, cached, TorchBackend(cached.transformer, cached.vae)


def test_default_instruction_is_the_pipelines(pipes):
    chi = default_complex_human_instruction()
    assert len(chi) == 8 and chi[0].startswith("Given a user prompt") and chi[-1] == "User Prompt: "


def test_encoding_equals_pipeline_encode_prompt_with_defaults(pipes):
    stock, _, _ = pipes
    encoder = PromptEncoder(stock)
    expected, mask = stock.encode_prompt("a watercolor painting", device=torch.device("cpu"),
                                         complex_human_instruction=default_complex_human_instruction())
    assert expected.shape[1] == 300  # max_sequence_length, right padded, [0] + last 299 tokens
    trimmed = encoder.encode("a watercolor painting")
    assert torch.equal(trimmed, expected[0][mask[0].bool()])
    assert trimmed.shape[0] == int(mask.sum()) < 300


def test_different_prompts_give_different_embeddings(pipes):
    encoder = PromptEncoder(pipes[0])
    a, b = encoder.encode("a watercolor painting"), encoder.encode("an oil painting of a dog")
    assert a.shape != b.shape or not torch.allclose(a, b)


def _run(transformer, x, s, g, **kwargs):
    with torch.inference_mode():
        return transformer(x, timestep=s, guidance=g, return_dict=False, **kwargs)[0]


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_kv_equals_uncached_transformer(pipes, batch):
    stock, _, backend = pipes
    encoder = PromptEncoder(stock)
    torch.manual_seed(0)
    x = torch.randn(batch, 32, 4, 4)
    s, g = torch.rand(batch), torch.full((batch,), 0.45)
    embeds, mask = encoder.encode_padded("a cat in the style of van gogh")
    expected = _run(stock.transformer, x, s, g, encoder_hidden_states=embeds.expand(batch, -1, -1),
                    encoder_attention_mask=mask.expand(batch, -1))
    kv = backend.prompt_kv(encoder.encode("a cat in the style of van gogh"))
    got = backend.velocity(x, s, g, batch_prompt_kv([kv] * batch, backend.geometry.cross_attention_heads))
    assert (got - expected).abs().max().item() < 1e-5


def test_prompts_of_different_lengths_share_a_batch(pipes):
    stock, _, backend = pipes
    encoder = PromptEncoder(stock)
    prompts = ["a cat", "a very detailed oil painting of a castle in a forest at sunset"]
    kvs = [backend.prompt_kv(encoder.encode(p)) for p in prompts]
    assert kvs[0].length != kvs[1].length
    torch.manual_seed(1)
    x, s, g = torch.randn(2, 32, 4, 4), torch.tensor([0.3, 0.7]), torch.full((2,), 0.45)
    heads = backend.geometry.cross_attention_heads
    together = backend.velocity(x, s, g, batch_prompt_kv(kvs, heads))
    for i, kv in enumerate(kvs):
        alone = backend.velocity(x[i:i + 1], s[i:i + 1], g[i:i + 1], batch_prompt_kv([kv], heads))
        assert (together[i:i + 1] - alone).abs().max().item() < 1e-5


def test_gemma_runs_only_on_prompt_change(make_engine, monkeypatch):
    engine = make_engine(prompt="first")
    calls = []
    original = engine.prompt_encoder.encode_padded
    monkeypatch.setattr(engine.prompt_encoder, "encode_padded", lambda p: calls.append(p) or original(p))
    frame = camera_frame(0)
    for _ in range(3):
        engine(frame)
    assert calls == []
    engine.set_prompt("second")
    engine(frame)
    engine.set_seed(9)  # a seed change does not re-encode the prompt
    engine(frame)
    assert calls == ["second"]
