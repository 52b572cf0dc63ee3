"""Sprint ControlNet: the model, control maps, per-slot conditioning in the stream batch, live scales."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import SanaControlNetModel, SanaSprintPipeline

from stream import StreamConfig, StreamEngine
from stream.control import Canny, ControlNetConfig, Passthrough, get_preprocessor
from stream.frames import fit_frame
from stream.image_tensors import to_tensor
from stream.models.controlnet import SprintControlNetModel
from stream.tiny_codecs import CONTROLNET_DIR
from tests.support import camera_frame, mean_abs_diff

T3 = (1.2, 0.8, 0.4)



def engine_with(tiny_model_dir, net_dir=None, scale=1.0, **config) -> StreamEngine:
    nets = () if net_dir is None else (ControlNetConfig(str(net_dir), "canny", scale),)
    config.setdefault("t_list", (1.0,))
    return StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64, controlnets=nets,
                                                                     prompt="a cat", **config))


@pytest.fixture(scope="module")
def zero_net_dir(tiny_model_dir, tmp_path_factory):
    pipe = SanaSprintPipeline.from_pretrained(tiny_model_dir)
    path = tmp_path_factory.mktemp("nets") / "zero"
    SprintControlNetModel.from_transformer(pipe.transformer, num_layers=2).save_pretrained(path)
    return path


def test_zero_initialised_controlnet_changes_nothing_exactly(tiny_model_dir, zero_net_dir):
    plain, controlled = engine_with(tiny_model_dir, t_list=T3), engine_with(tiny_model_dir, zero_net_dir, t_list=T3)
    for k in range(4):
        assert np.array_equal(plain(camera_frame(k)), controlled(camera_frame(k)))


def test_trained_controlnet_changes_the_output(tiny_model_dir):
    plain, controlled = engine_with(tiny_model_dir), engine_with(tiny_model_dir, tiny_model_dir / CONTROLNET_DIR)
    assert mean_abs_diff(plain(camera_frame(2)), controlled(camera_frame(2))) > 1.0


def test_scale_zero_equals_off_and_scales_change_live(tiny_model_dir):
    net = tiny_model_dir / CONTROLNET_DIR
    plain, off = engine_with(tiny_model_dir), engine_with(tiny_model_dir, net, scale=0.0)
    live = engine_with(tiny_model_dir, net)
    frame = camera_frame(3)
    assert np.array_equal(plain(frame), off(frame))
    assert not np.array_equal(plain(frame), live(frame))
    live.update(control_scales=(0.0,))
    assert np.array_equal(plain(frame), live(frame))
    with pytest.raises(ValueError, match="control_scales"):
        live.update(control_scales=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"control_scales\[0\]"):
        live.update(control_scales=(math.nan,))


def test_each_slot_is_conditioned_on_its_own_frame(tiny_model_dir, reference):
    """3 steps: output k is frame k-2 denoised sequentially with frame k-2's control map at every step."""
    net_dir = tiny_model_dir / CONTROLNET_DIR
    engine = engine_with(tiny_model_dir, net_dir, t_list=T3, seed=2)
    stock = SprintControlNetModel.from_pretrained(net_dir)
    frames = [camera_frame(5 * k) for k in range(5)]
    outputs = [engine(f) for f in frames]
    vae, scaling = reference.pipe.vae, reference.pipe.vae.config.scaling_factor

    def control_latent(frame):
        with torch.inference_mode():
            return vae.encode(to_tensor(Canny()(fit_frame(frame, 64, 64)), torch.device("cpu"))).latent * scaling

    def sequential(frame, control_frame):
        x0_img = reference.encode(frame, 64, 64)
        eps = torch.randn((3, *x0_img.shape[1:]), generator=torch.Generator().manual_seed(2))
        prompt, cond = reference.encode_prompt("a cat"), control_latent(control_frame)
        x = math.cos(T3[0]) * x0_img + math.sin(T3[0]) * 0.5 * eps[0:1]
        for i, t in enumerate(T3):
            with torch.inference_mode():
                x0_hat = reference.clean(x, t, prompt, 4.5, (stock, cond, 1.0))
            if i + 1 < 3:
                x = math.cos(T3[i + 1]) * x0_hat + math.sin(T3[i + 1]) * 0.5 * eps[i + 1:i + 2]
        return reference.decode(x0_hat)

    for k in (2, 3, 4):
        right = sequential(frames[k - 2], frames[k - 2])
        assert mean_abs_diff(outputs[k], right) <= 0.1
        wrong = sequential(frames[k - 2], frames[k])  # conditioned on the newest frame instead
        assert mean_abs_diff(right, wrong) > 0.3


def test_non_sprint_controlnet_is_refused_with_the_reason(tmp_path):
    SanaControlNetModel(in_channels=4, num_attention_heads=2, attention_head_dim=4, num_layers=1,
                        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8,
                        caption_channels=8, sample_size=8).save_pretrained(tmp_path / "sana-cn")
    with pytest.raises(ValueError, match="non-Sprint Sana.*no guidance embedding and no qk-norm"):
        SprintControlNetModel.from_pretrained(tmp_path / "sana-cn")


def test_from_transformer_copies_blocks_and_zero_projections(reference):
    net = SprintControlNetModel.from_transformer(reference.pipe.transformer, num_layers=1)
    block, theirs = net.transformer_blocks[0], reference.pipe.transformer.transformer_blocks[0]
    assert all(torch.equal(a, b) for a, b in zip(block.state_dict().values(), theirs.state_dict().values()))
    assert not net.input_block.weight.any() and not net.controlnet_blocks[0].weight.any()
    with pytest.raises(ValueError, match="num_layers"):
        SprintControlNetModel.from_transformer(reference.pipe.transformer, num_layers=99)


def test_preprocessors():
    frame = camera_frame(0)
    edges = Canny()(frame)
    assert edges.shape == frame.shape and edges.dtype == np.uint8
    assert edges.max() == 255 and (edges == 0).mean() > 0.8  # a few edges on a mostly flat picture
    assert Passthrough()(frame) is frame
    with pytest.raises(ValueError, match="canny, passthrough"):
        get_preprocessor("sobel")
    with pytest.raises(ValueError, match="needs model weights"):
        ControlNetConfig("some/net", preprocessor="depth")


def test_controlnet_option_and_live_scales_over_http(tiny_model_dir):
    import asyncio

    import httpx

    from server.app import ModelInfo, create_app
    from server.settings import ServerSettings
    from tests.support import running

    parse = ControlNetConfig.from_option
    assert parse("nets/canny:passthrough:0.5") == ControlNetConfig("nets/canny", "passthrough", 0.5)
    assert parse("owner/net") == ControlNetConfig("owner/net", "canny", 1.0)
    with pytest.raises(ValueError, match="scale"):
        parse("net:canny:loud")
    with pytest.raises(ValueError, match=r"PATH\[:PREPROCESSOR\[:SCALE\]\]"):
        parse("a:b:c:d")
    engine = engine_with(tiny_model_dir, tiny_model_dir / CONTROLNET_DIR)
    app = create_app(ServerSettings(stream=engine.config), engine, ModelInfo("tiny", True, "torch"))

    async def main():
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            ok = await http.post("/prompt", json={"control_scales": [0.25]})
            bad = await http.post("/prompt", json={"control_scales": [1.0, 1.0]})
            return ok, bad

    ok, bad = asyncio.run(main())
    assert ok.status_code == 200 and ok.json()["streams"]["default"]["control_scales"] == [0.25]
    assert bad.status_code == 400 and "control_scales" in bad.json()["detail"]
