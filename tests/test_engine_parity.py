"""The engine against a plain sequential reference built from diffusers' stock modules (docs/design.md#trigflow)."""

from __future__ import annotations

import numpy as np
import pytest

from stream import FrameKind
from tests.support import camera_frame, mean_abs_diff

PROMPT = "a watercolor painting of a cat"



def test_one_step_matches_reference(make_engine, reference):
    engine = make_engine(t_list=(1.1,), seed=3, prompt=PROMPT)
    for k in range(3):
        frame = camera_frame(k)
        out = engine(frame)
        ref = reference.img2img(frame, width=64, height=64, t_list=(1.1,), seed=3, prompt=PROMPT)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert mean_abs_diff(out, ref) <= 1.0


def test_three_steps_output_k_is_frame_k_minus_2(make_engine, reference):
    t_list = (1.3, 0.9, 0.45)
    engine = make_engine(t_list=t_list, seed=7, prompt=PROMPT)
    frames = [camera_frame(k) for k in range(6)]
    results = [engine.process({"default": f}, {"default": k})["default"] for k, f in enumerate(frames)]
    assert [r.kind for r in results[:2]] == [FrameKind.WARMUP, FrameKind.WARMUP]
    for k in range(2, 6):
        assert results[k].kind is FrameKind.GENERATED and results[k].tag == k - 2
        ref = reference.img2img(frames[k - 2], width=64, height=64, t_list=t_list, seed=7, prompt=PROMPT)
        assert mean_abs_diff(results[k].image, ref) <= 1.0
    # outputs of different frames really differ, so the check above can tell frames apart
    assert mean_abs_diff(results[2].image, results[5].image) > 2.0


def test_warmup_returns_the_fitted_input_frame(make_engine):
    engine = make_engine(t_list=(1.2, 0.6), width=64, height=32)
    frame = camera_frame(0, height=90, width=160)
    result = engine.process({"default": frame})["default"]
    assert result.kind is FrameKind.WARMUP
    assert result.image.shape == (32, 64, 3)
    # a 160x90 frame covers 64x32 at scale 0.4 (64x36), then the centre 32 rows are kept
    assert result.image.dtype == np.uint8 and engine.process({"default": frame})["default"].kind is FrameKind.GENERATED


@pytest.mark.parametrize("shape", [(48, 200), (300, 64), (64, 64)])
def test_frames_of_any_size_are_resized_and_centre_cropped(make_engine, shape):
    engine = make_engine(t_list=(1.0,))
    out = engine(camera_frame(1, height=shape[0], width=shape[1]))
    assert out.shape == (64, 64, 3)


def test_streams_in_one_batch_match_each_stream_alone(make_engine):
    settings = {"a": dict(prompt="an oil painting", seed=1), "b": dict(prompt="neon cyberpunk city", seed=2)}
    batched = make_engine(t_list=(1.2, 0.7))
    for sid, s in settings.items():
        batched.add_stream(sid, **s)
    alone = {}
    for sid, s in settings.items():
        alone[sid] = make_engine(t_list=(1.2, 0.7), **s)
    for k in range(4):
        frames = {"a": camera_frame(k), "b": camera_frame(k + 10)}
        together = batched.process(frames)
        for sid in settings:
            single = alone[sid].process({"default": frames[sid]})["default"]
            assert together[sid].kind is single.kind
            assert mean_abs_diff(together[sid].image, single.image) <= 0.5


def test_bfloat16_stays_close_to_float32(make_engine):
    full = make_engine(t_list=(1.0,), prompt=PROMPT)
    half = make_engine(t_list=(1.0,), prompt=PROMPT, dtype="bfloat16")
    frame = camera_frame(4)
    assert mean_abs_diff(full(frame), half(frame)) < 4.0
