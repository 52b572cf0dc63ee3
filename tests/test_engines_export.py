"""ONNX export of every part the stream engine runs: parity with torch through ONNX Runtime, no NaN. The
transformer's parity runs with non-zero ControlNet residuals, and each ControlNet is a part of its own."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from diffusers import SanaSprintPipeline
from diffusers.models.attention_processor import SanaLinearAttnProcessor2_0

from engines import BackendName
from engines.compile import Compiler, model_shapes
from engines.compile_options import CompileOptions
from engines.export import FORBIDDEN_OPS, example_inputs, export_onnx
from engines.graphs import DecodeGraph, EncodeGraph, GuardedLinearAttnProcessor, VelocityGraph, bound_kv, export_safe
from engines.parity import check_parity
from engines.specs import BuildSpec, Component, ControlNetPart, ModelShapes, Precision
from engines.torch_backend import TorchBackend
from stream import StreamConfig, StreamEngine
from engines.models.controlnet import SprintControlNetModel
from engines.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderConfig, TinyDecoder, TinyEncoder
from stream.demo_extras import CONTROLNET_DIR, demo_controlnet

# the shapes the onnxruntime engine tests use too: the shared cache then exports each part once per session
BUILD = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=300)


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "engine-cache"


@pytest.fixture(scope="module")
def torch_backend(demo_model_dir: Path):
    return StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=64, height=64)).backend


@pytest.fixture(scope="module")
def compiler(torch_backend, engine_cache: Path) -> Compiler:
    return Compiler(torch_backend, BUILD, CompileOptions(cache_dir=engine_cache), BackendName.ONNXRUNTIME)


@pytest.fixture(scope="module")
def controlled_compiler(demo_model_dir: Path, engine_cache: Path) -> Compiler:
    """Two trained-like ControlNets (random, non-zero projections): the model's one-block net, and a net of two
    blocks, deeper than the tiny transformer's one residual input. Its own pipeline: a TorchBackend installs
    its K/V processors on the transformer it gets, which would unbind the other fixture's graph."""
    pipe = SanaSprintPipeline.from_pretrained(demo_model_dir)
    nets = [SprintControlNetModel.from_pretrained(demo_model_dir / CONTROLNET_DIR),
            demo_controlnet(pipe.transformer, num_layers=2, seed=5)]
    backend = TorchBackend(pipe.transformer, pipe.vae, controlnets=nets)
    return Compiler(backend, BUILD, CompileOptions(cache_dir=engine_cache), BackendName.ONNXRUNTIME)


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


def test_transformer_io_is_static_with_kv_and_control_inputs_per_block(compiler: Compiler, torch_backend):
    spec = compiler.part(Component.TRANSFORMER, Precision.FP32)
    shapes = model_shapes(torch_backend)
    n = shapes.num_blocks
    names = [t.name for t in spec.inputs]
    assert names[:4] == ["hidden_states", "timestep", "guidance", "kv_bias"]
    assert names[4:] == ([f"key_{i}" for i in range(n)] + [f"value_{i}" for i in range(n)]
                         + [f"control_{i}" for i in range(n - 1)])
    assert spec.input("key_0").shape == (4, shapes.cross_heads, 300, shapes.cross_head_dim)  # 2 steps x 2 streams
    assert spec.input("kv_bias").shape == (4, 1, 1, 300)
    assert spec.input("control_0").shape == (4, 2 * 2, shapes.hidden_size)  # (B, N, D): 64 px is 2x2 latents


def test_transformer_parity_inputs_carry_residuals_that_change_the_output(compiler: Compiler):
    """The parity check feeds non-zero residuals, so it covers the path that adds them: zeros give the plain
    transformer exactly, and the random residuals move the output."""
    graph, spec = compiler.modules[Component.TRANSFORMER], compiler.part(Component.TRANSFORMER, Precision.FP32)
    inputs = example_inputs(spec, torch.device("cpu"), seed=1)
    n = len(graph.processors)
    hidden, timestep, guidance, kv_bias, kv, controls = (*inputs[:4], inputs[4:4 + 2 * n], inputs[4 + 2 * n:])
    assert controls and all(c.abs().mean() > 0.5 for c in controls)  # unit normal, not zeros
    with torch.inference_mode():
        controlled = graph(*inputs)
        off = graph(hidden, timestep, guidance, kv_bias, *kv, *(torch.zeros_like(c) for c in controls))
        placeholder = hidden.new_zeros((hidden.shape[0], 1, graph.caption_channels))
        with bound_kv(graph.processors, tuple(kv), kv_bias):
            plain = graph.transformer(hidden, encoder_hidden_states=placeholder, timestep=timestep,
                                      guidance=guidance, return_dict=False)[0]
    assert torch.equal(off, plain)
    assert (controlled - off).abs().max() > 0.1 * off.abs().max()


def with_controlnets(backend: TorchBackend, nets: list[SprintControlNetModel]) -> TorchBackend:
    """The backend's modules with another list of ControlNets, for shapes and keys only (a new TorchBackend
    would install new K/V processors on the shared blocks)."""
    other = copy.copy(backend)
    other.controlnets = nets
    return other


def test_controlnet_part_io_is_static_with_its_own_blocks(controlled_compiler: Compiler):
    shapes = model_shapes(controlled_compiler.backend)
    assert shapes.controlnet_blocks == (1, 2) and shapes.control_inputs == 1
    spec = controlled_compiler.part(ControlNetPart(1), Precision.FP32)
    names = [t.name for t in spec.inputs]
    assert names == ["hidden_states", "timestep", "guidance", "control", "conditioning_scale", "kv_bias",
                     "key_0", "key_1", "value_0", "value_1"]
    assert spec.input("control").shape == spec.input("hidden_states").shape == (4, 32, 2, 2)
    assert spec.input("conditioning_scale").shape == (4,) and spec.input("timestep").dtype == "float32"
    assert [(t.name, t.shape) for t in spec.outputs] == [("residual_0", (4, 4, shapes.hidden_size)),
                                                         ("residual_1", (4, 4, shapes.hidden_size))]


@pytest.mark.parametrize("index", [0, 1])
def test_controlnet_part_matches_torch_in_onnxruntime(controlled_compiler: Compiler, index: int):
    part = ControlNetPart(index)
    report = controlled_compiler.check(part)
    assert report.finite and report.relative_error < 1e-3, str(report)
    assert report.component == f"controlnet_{index}" and report.max_abs_reference > 0.01  # trained-like: acts
    model = onnx.load(str(controlled_compiler.onnx(part, Precision.FP32)), load_external_data=False)
    assert not {n.op_type for n in model.graph.node} & FORBIDDEN_OPS
    spec = controlled_compiler.part(part, Precision.FP32)
    assert [o.name for o in model.graph.output] == [t.name for t in spec.outputs]


def test_controlnet_cache_keys_are_per_net_and_leave_the_transformer_key_alone(compiler: Compiler,
                                                                              controlled_compiler: Compiler):
    keys = {part: controlled_compiler.onnx_key(part, Precision.FP32)
            for part in (Component.TRANSFORMER, ControlNetPart(0), ControlNetPart(1))}
    assert keys[Component.TRANSFORMER] == compiler.onnx_key(Component.TRANSFORMER, Precision.FP32)
    assert len({k.slot() for k in keys.values()}) == 3
    assert keys[ControlNetPart(0)].component == keys[ControlNetPart(1)].component == "controlnet"
    assert keys[ControlNetPart(0)].model_digest != keys[ControlNetPart(1)].model_digest
    # the same net at another place in the list is the same engine: its weights, not its index, identify it
    backend = controlled_compiler.backend
    swapped = Compiler(with_controlnets(backend, backend.controlnets[::-1]), BUILD, controlled_compiler.options,
                       BackendName.ONNXRUNTIME)
    assert swapped.onnx_key(ControlNetPart(1), Precision.FP32) == keys[ControlNetPart(0)]


def test_a_controlnet_of_another_layout_is_refused(torch_backend):
    c = torch_backend.transformer.config
    other = SprintControlNetModel(in_channels=c.in_channels, num_attention_heads=c.num_attention_heads,
                                  attention_head_dim=c.attention_head_dim, num_layers=1,
                                  num_cross_attention_heads=c.num_cross_attention_heads * 2,
                                  cross_attention_head_dim=c.cross_attention_head_dim // 2,
                                  cross_attention_dim=c.cross_attention_dim, caption_channels=c.caption_channels)
    with pytest.raises(ValueError, match=r"controlnets\[0\] does not fit the transformer: num_cross_attention_heads"):
        model_shapes(with_controlnets(torch_backend, [other]))


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


def model_shapes_for_tiny() -> ModelShapes:
    return ModelShapes(latent_channels=32, spatial_compression=32, num_blocks=1, cross_heads=1, cross_head_dim=8,
                       hidden_size=8, patch_size=1)


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
