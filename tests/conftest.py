"""Shared fixtures: one tiny random Sana-Sprint written to disk per test session and loaded back through
the real loading code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream.tiny_model import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sana-sprint")


def camera_frame(index: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A synthetic camera frame: a gradient with a square that moves with ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 96)], axis=-1).astype(np.uint8)
    top, left = (index * 5) % (height - 24), (index * 7) % (width - 24)
    frame[top:top + 24, left:left + 24] = (240, 40, 40)
    return frame


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path):
    from diffusers import SanaSprintPipeline

    from tests.reference import ReferenceSprint

    return ReferenceSprint(SanaSprintPipeline.from_pretrained(tiny_model_dir))


@pytest.fixture
def make_engine(tiny_model_dir: Path):
    from stream import StreamConfig, StreamEngine

    def make(**config):
        config.setdefault("width", 64)
        config.setdefault("height", 64)
        return StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**config))

    return make


@pytest.fixture(scope="session")
def coturn(tmp_path_factory: pytest.TempPathFactory):
    """A real coturn on loopback with a shared secret (TURN REST API credentials), one per test session."""
    import secrets

    from tests.coturn import start_coturn

    server = start_coturn(tmp_path_factory.mktemp("coturn"), secret=secrets.token_hex(24))
    try:
        yield server
    finally:
        server.stop()
