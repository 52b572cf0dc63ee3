"""ONNX export of every part the stream engine runs: parity with torch through ONNX Runtime, no NaN."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from diffusers.models.attention_processor import SanaLinearAttnProcessor2_0

from engines import BackendName
from engines.compile import CompileOptions, Compiler, model_shapes
from engines.export import FORBIDDEN_OPS, export_onnx
from engines.graphs import DecodeGraph, EncodeGraph, GuardedLinearAttnProcessor, VelocityGraph, export_safe
from engines.parity import check_parity
from engines.specs import BuildSpec, Component, Precision
from stream import StreamConfig, StreamEngine
from stream.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderConfig, TinyDecoder, TinyEncoder

# the shapes the onnxruntime engine tests use too: the shared cache then exports each part once per session
BUILD = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=300)


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "engine-cache"


@pytest.fixture(scope="module")
def torch_backend(tiny_model_dir: Path):
    return StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64)).backend


@pytest.fixture(scope="module")
def compiler(torch_backend, engine_cache: Path) -> Compiler:
    return Compiler(torch_backend, BUILD, CompileOptions(cache_dir=engine_cache), BackendName.ONNXRUNTIME)


@pytest.mark.parametrize("component", list(Component))
def test_every_part_matches_torch_in_onnxruntime(compiler: Compiler, component: Component):
    report = compiler.check(component)
    assert report.finite and report.relative_error < 1e-3, str(report)
    model = onnx.load(str(compiler.onnx(component, Precision.FP32)), load_external_data=False)
    assert not {n.op_type for n in model.graph.node} & FORBIDDEN_OPS
    assert model.opset_import[0].version == 18
    spec = compiler.part(component, Precision.FP32)
    assert [i.name for i in model.graph.input] == [t.name for t in spec.inputs]
    assert [o.name for o in model.graph.output] == [t.name for t in spec.outputs]


def test_transformer_io_is_static_with_kv_inputs_per_block(compiler: Compiler, torch_backend):
    spec = compiler.part(Component.TRANSFORMER, Precision.FP32)
    shapes = model_shapes(torch_backend)
    names = [t.name for t in spec.inputs]
    assert names[:4] == ["hidden_states", "timestep", "guidance", "kv_bias"]
    assert names[4:] == [f"key_{i}" for i in range(shapes.num_blocks)] + [f"value_{i}" for i in range(shapes.num_blocks)]
    assert spec.input("key_0").shape == (4, shapes.cross_heads, 300, shapes.cross_head_dim)  # 2 steps x 2 streams
    assert spec.input("kv_bias").shape == (4, 1, 1, 300)


def test_linear_attention_epsilon_survives_export(torch_backend, tmp_path: Path):
    """With every self-attention query zeroed, each denominator is 0: only the guarded epsilon keeps it finite."""
    transformer = copy.deepcopy(torch_backend.transformer)
    for block in transformer.transformer_blocks:
        torch.nn.init.zeros_(block.attn1.to_q.weight)
        if block.attn1.to_q.bias is not None:
            torch.nn.init.zeros_(block.attn1.to_q.bias)
    graph = VelocityGraph(transformer)
    spec = BuildSpec(width=64, height=64, kv_length=8).parts(model_shapes(torch_backend))[Component.TRANSFORMER]
    path = export_onnx(graph, spec, tmp_path)
    report = check_parity(graph, path, spec)
    assert report.finite and report.passed, str(report)
    # the live modules keep diffusers' own processor after the export
    assert all(isinstance(b.attn1.processor, SanaLinearAttnProcessor2_0) for b in transformer.transformer_blocks)


def test_guarded_processor_equals_diffusers_and_is_finite_on_zero_queries(torch_backend):
    attn = torch_backend.transformer.transformer_blocks[0].attn1
    x = torch.randn(2, 16, attn.to_q.in_features)
    with torch.inference_mode():
        ours, theirs = GuardedLinearAttnProcessor()(attn, x), SanaLinearAttnProcessor2_0()(attn, x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    with export_safe(torch_backend.transformer):
        assert isinstance(attn.processor, GuardedLinearAttnProcessor)
    assert isinstance(attn.processor, SanaLinearAttnProcessor2_0)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_tiny_autoencoder_exports(part: str, tmp_path: Path):
    torch.manual_seed(0)
    plan = TinyAutoencoderConfig(encoder_stage_blocks=(1, 1, 1, 1), decoder_stage_channels=(64, 32, 16, 16, 16, 16),
                                 decoder_stage_blocks=(1, 1, 1, 1, 1, 1))
    codec = TinyAutoencoder(TinyEncoder(plan), TinyDecoder(plan)).eval()
    graph = EncodeGraph(codec) if part == "encoder" else DecodeGraph(codec)
    spec = BuildSpec(width=64, height=96, streams=2).parts(model_shapes_for_tiny())[Component(part)]
    path = export_onnx(graph, spec, tmp_path)
    report = check_parity(graph, path, spec)
    assert report.finite and report.relative_error < 1e-3, str(report)


def model_shapes_for_tiny():
    from engines.specs import ModelShapes

    return ModelShapes(latent_channels=32, spatial_compression=32, num_blocks=1, cross_heads=1, cross_head_dim=8)


def test_parity_check_fails_on_a_changed_weight(compiler: Compiler):
    """The check is real: a torch module whose weights moved away from the exported graph fails it."""
    from engines.exceptions import ParityError

    path = compiler.onnx(Component.TRANSFORMER, Precision.FP32)
    changed = copy.deepcopy(compiler.modules[Component.TRANSFORMER])
    with torch.no_grad():
        changed.transformer.proj_out.weight.mul_(1.01)
    with pytest.raises(ParityError, match="above the tolerance"):
        check_parity(changed, path, compiler.part(Component.TRANSFORMER, Precision.FP32))


def test_onnx_outputs_are_finite_on_real_frames(compiler: Compiler):
    import onnxruntime as ort

    path = compiler.onnx(Component.ENCODER, Precision.FP32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.clip(np.random.default_rng(0).normal(0, 0.5, (2, 3, 64, 64)), -1, 1).astype(np.float32)
    images[1] = -1.0  # an all-black frame
    assert np.isfinite(session.run(None, {"images": images})[0]).all()
