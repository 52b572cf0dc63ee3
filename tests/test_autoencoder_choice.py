"""Choosing the autoencoder per side: DC-AE, the tiny autoencoder, or the DC-AE-Lite decoder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stream import FrameKind, ModelNotFoundError, StreamConfig, StreamEngine
from stream.loading import LITE_VAE_DIR, TINY_VAE_DIR
from tests.support import camera_frame, mean_abs_diff


def run(engine: StreamEngine, frames: int = 2) -> list[np.ndarray]:
    return [engine(camera_frame(k)) for k in range(frames)]


@pytest.mark.parametrize("encoder, decoder", [("tiny", "tiny"), ("dcae", "tiny"), ("tiny", "dcae"),
                                              ("dcae", "dcae-lite")])
def test_each_choice_loads_from_the_model_directory_and_changes_the_output(tiny_model_dir, encoder, decoder):
    config = dict(width=64, height=64, t_list=(1.0,))
    default = run(StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**config)))
    chosen = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**config, encoder=encoder, decoder=decoder))
    outputs = run(chosen)
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outputs)
    assert mean_abs_diff(outputs[-1], default[-1]) > 1.0


def test_tiny_autoencoder_from_an_explicit_directory(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir / TINY_VAE_DIR, tmp_path / "taesana")
    config = StreamConfig(width=64, height=64, encoder="tiny", decoder="tiny", tiny_vae=str(tmp_path / "taesana"))
    engine = StreamEngine.from_pretrained(tiny_model_dir, config)
    assert engine.process({"default": camera_frame(0)})["default"].kind is FrameKind.GENERATED


def test_missing_tiny_autoencoder_is_a_clear_error(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns(TINY_VAE_DIR, LITE_VAE_DIR))
    with pytest.raises(ModelNotFoundError, match=TINY_VAE_DIR):
        StreamEngine.from_pretrained(bare, StreamConfig(width=64, height=64, decoder="tiny"))
    with pytest.raises(ModelNotFoundError, match="dc-ae-lite"):
        StreamEngine.from_pretrained(bare, StreamConfig(width=64, height=64, decoder="dcae-lite"),
                                     local_files_only=True)


@pytest.mark.parametrize("kwargs, name", [(dict(encoder="dcae-lite"), "encoder"), (dict(decoder="vqgan"), "decoder")])
def test_bad_choices_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StreamConfig(**kwargs)
