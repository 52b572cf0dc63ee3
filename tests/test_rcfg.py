"""RCFG (docs/design.md#rcfg): each cfg_type against the sequential reference, and the batch size each one costs."""

from __future__ import annotations

import pytest

from engines.base import ModelBackend
from stream import CfgType, StreamEngine
from tests.support import camera_frame, mean_abs_diff

T_LIST = (1.2, 0.8, 0.4)
SETTINGS = dict(prompt="a cat", negative_prompt="blurry photo", cfg_scale=2.0, delta=0.8, seed=4)



@pytest.mark.parametrize("cfg_type", [c.value for c in CfgType])
def test_cfg_type_matches_sequential_reference(make_engine, reference, cfg_type):
    engine = make_engine(t_list=T_LIST, cfg_type=cfg_type, **SETTINGS)
    outputs = [engine(camera_frame(k)) for k in range(4)]
    for k in (2, 3):
        expected = reference.img2img(camera_frame(k - 2), width=64, height=64, t_list=T_LIST,
                                     cfg_type=cfg_type, **SETTINGS)
        assert mean_abs_diff(outputs[k], expected) <= 0.1
        if cfg_type != "none":  # guidance visibly changes the image, so the comparison above has teeth
            unguided = reference.img2img(camera_frame(k - 2), width=64, height=64, t_list=T_LIST,
                                         **{**SETTINGS, "cfg_scale": 1.0})
            assert mean_abs_diff(expected, unguided) > 1.0


@pytest.mark.parametrize("cfg_type", ["full", "self", "onetime"])
def test_scale_one_equals_no_guidance(make_engine, cfg_type):
    plain = make_engine(t_list=T_LIST, cfg_type="none", **SETTINGS)
    guided = make_engine(t_list=T_LIST, cfg_type=cfg_type, **{**SETTINGS, "cfg_scale": 1.0})
    for k in range(4):
        frame = camera_frame(k)
        assert mean_abs_diff(plain(frame), guided(frame)) <= 0.05


class CountingBackend(ModelBackend):
    """Delegates to a real backend and records each transformer batch size."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner, self.geometry, self.batches = inner, inner.geometry, []

    def encode(self, images):
        return self.inner.encode(images)

    def decode(self, latents):
        return self.inner.decode(latents)

    def prompt_kv(self, embeds):
        return self.inner.prompt_kv(embeds)

    def velocity(self, x_in, timestep, guidance, kv, control=None):
        self.batches.append(x_in.shape[0])
        return self.inner.velocity(x_in, timestep, guidance, kv, control)


@pytest.mark.parametrize("cfg_type, per_call", [("none", 3), ("self", 3), ("onetime", 4), ("full", 6)])
def test_batch_size_per_cfg_type(make_engine, cfg_type, per_call):
    loaded = make_engine(t_list=T_LIST, cfg_type=cfg_type, **SETTINGS)
    backend = CountingBackend(loaded.backend)
    engine = StreamEngine(backend, loaded.prompt_encoder, loaded.config)
    for k in range(4):
        engine(camera_frame(k))
    n = 3
    warmup = {"none": [1, 2], "self": [1, 2], "onetime": [2, 3], "full": [2, 4]}[cfg_type]
    assert backend.batches == warmup + [per_call, per_call]
    assert per_call == {"none": n, "self": n, "onetime": n + 1, "full": 2 * n}[cfg_type]
