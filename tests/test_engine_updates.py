"""Live settings: prompt/seed/strength changes between frames, atomic from other threads, bad input."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

from stream import FrameKind, StreamConfig, StreamSettings, UnknownStreamError
from stream.live_settings import ALIASES, LIVE_SETTING_NAMES
from tests.support import camera_frame, mean_abs_diff



@pytest.mark.parametrize("t_list, least_change", [((1.2,), 1.0), ((1.2, 0.8, 0.4), 0.1)])
def test_prompt_change_is_visible_on_the_next_completed_frame(make_engine, t_list, least_change):
    """With several steps the next finished frame had only its last step under the new prompt, so the
    change is smaller, but it is there."""
    engine = make_engine(t_list=t_list, prompt="a watercolor painting")
    twin = make_engine(t_list=t_list, prompt="a watercolor painting")
    frame = camera_frame(0)
    for _ in range(4):
        assert np.array_equal(engine(frame), twin(frame))
    engine.set_prompt("neon cyberpunk city at night")
    assert mean_abs_diff(engine(frame), twin(frame)) > least_change


def test_seed_and_strength_change_output(make_engine):
    engine = make_engine(t_list=(1.0,), seed=0)
    frame = camera_frame(2)
    base = engine(frame)
    engine.set_seed(1)
    reseeded = engine(frame)
    engine.set_strength(0.3)
    assert engine.settings().t_list == (0.3,)
    weak = engine(frame)
    assert mean_abs_diff(base, reseeded) > 1.0
    assert mean_abs_diff(weak, base) > 1.0


def test_set_strength_scales_every_angle(make_engine):
    engine = make_engine(t_list=(1.2, 0.6))
    engine.set_strength(0.6)
    assert engine.settings().t_list == pytest.approx((0.6, 0.3))


def test_changing_the_number_of_steps_restarts_the_pipe(make_engine):
    engine = make_engine(t_list=(1.2, 0.6))
    frame = camera_frame(1)
    assert [engine.process({"default": frame})["default"].kind for _ in range(2)] == [
        FrameKind.WARMUP, FrameKind.GENERATED]
    engine.set_t_list((1.2, 0.8, 0.4))
    kinds = [engine.process({"default": frame})["default"].kind for _ in range(4)]
    assert kinds[-1] is FrameKind.GENERATED and FrameKind.WARMUP not in kinds[2:]


def test_updates_from_another_thread_are_atomic(make_engine):
    """Two settings (prompt, seed) change together; a frame must never see one without the other."""
    settings = [dict(prompt="a watercolor painting", seed=1), dict(prompt="neon cyberpunk city", seed=2)]
    frame = camera_frame(3)
    expected = []
    for s in settings:
        expected.append(make_engine(t_list=(1.0,), **s)(frame))
    mixed = [make_engine(t_list=(1.0,), prompt=settings[0]["prompt"], seed=2)(frame),
             make_engine(t_list=(1.0,), prompt=settings[1]["prompt"], seed=1)(frame)]
    assert all(mean_abs_diff(m, e) > 0.3 for m in mixed for e in expected)  # a torn update would show

    engine = make_engine(t_list=(1.0,), **settings[0])
    stop = threading.Event()

    def flip() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            engine.update(**settings[i % 2])

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        seen = [engine(frame) for _ in range(60)]
    finally:
        stop.set()
        thread.join()
    matches = [min(range(2), key=lambda j: mean_abs_diff(out, expected[j])) for out in seen]
    assert all(mean_abs_diff(out, expected[j]) < 0.01 for out, j in zip(seen, matches))


@pytest.mark.parametrize("frame, match", [
    (np.zeros((64, 64, 3), np.float32), "dtype uint8"),
    (np.zeros((64, 64), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((64, 64, 4), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_frames_raise_value_error_naming_the_argument(make_engine, frame, match):
    engine = make_engine(t_list=(1.0,))
    with pytest.raises(ValueError, match=match) as info:
        engine(frame)
    assert "frames['default']" in str(info.value)
    assert engine(camera_frame(0)).shape == (64, 64, 3)  # still works afterwards


@pytest.mark.parametrize("changes, name", [
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(t_list=(1.0, 1.2)), "t_list"),
    (dict(t_list=(math.pi / 2,)), r"t_list\[0\]"),
    (dict(t_list=(float("nan"),)), r"t_list\[0\]"),
    (dict(t_list=()), "t_list"),
    (dict(guidance_scale=float("inf")), "guidance_scale"),
    (dict(cfg_scale=float("nan")), "cfg_scale"),
    (dict(prompt=3), "prompt"),
    (dict(prompt="x" * 5000), "prompt"),
    (dict(colour="red"), "colour"),
])
def test_bad_settings_raise_and_change_nothing(make_engine, changes, name):
    engine = make_engine(t_list=(1.0,), prompt="a cat")
    before = engine.settings()
    with pytest.raises(ValueError, match=name):
        engine.update(**changes)
    assert engine.settings() == before


def test_bad_strength_and_unknown_stream(make_engine):
    engine = make_engine(t_list=(1.0,))
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="strength"):
            engine.set_strength(bad)
    with pytest.raises(UnknownStreamError, match="nope"):
        engine.process({"nope": camera_frame(0)})
    with pytest.raises(UnknownStreamError):
        engine.update("nope", seed=1)
    with pytest.raises(ValueError, match="already registered"):
        engine.add_stream("default")


@pytest.mark.parametrize("kwargs, name", [
    (dict(width=100), "width"),
    (dict(height=0), "height"),
    (dict(t_list=(0.5, 0.9)), "t_list"),
    (dict(t_list=(0.0,)), r"t_list\[0\]"),
    (dict(t_list=(1.0,) * 5), "t_list"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(delta=float("inf")), "delta"),
    (dict(cfg_type="double"), "cfg_type"),
    (dict(similarity_threshold=1.0), "similarity_threshold"),
    (dict(max_skip_frames=-2), "max_skip_frames"),
    (dict(cfg_type="self", t_list=(1.57,)), r"t_list\[0\]"),
    (dict(dtype="float16"), "dtype"),  # refused here, not first at from_pretrained
])
def test_bad_config_raises_value_error_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StreamConfig(**kwargs)


def test_every_live_setting_of_the_api_and_the_bridge_is_one_the_engine_takes(make_engine):
    """stream.live_settings declares what POST /prompt and the bridge may change; each must be a StreamSettings
    field (or strength, which sets t_list), and each is applied by update."""
    engine = make_engine(t_list=(1.0, 0.5))
    fields = {f.name for f in dataclasses.fields(StreamSettings)}
    assert set(LIVE_SETTING_NAMES) - fields == set(ALIASES)
    changes = {"prompt": "a fox", "negative_prompt": "blur", "seed": 3, "strength": 0.8, "guidance_scale": 3.0,
               "cfg_scale": 1.5, "control_scales": ()}
    assert set(changes) == set(LIVE_SETTING_NAMES)
    new = engine.update(**changes)["default"]
    assert (new.prompt, new.negative_prompt, new.seed, new.t_list, new.guidance_scale, new.cfg_scale) == (
        "a fox", "blur", 3, pytest.approx((0.8, 0.4)), 3.0, 1.5)
