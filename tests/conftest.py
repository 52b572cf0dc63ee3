"""Shared fixtures: one tiny random Sana-Sprint written to disk per test session and loaded back through
the real loading code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream.demo_model import make_demo_model
from tests.support import camera_frame  # noqa: F401 - its old home; tests import it from tests.support


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        skip = pytest.mark.skip(reason="assumes no CUDA device (marker cpu)")
        for item in items:
            if "cpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def restored_environment():
    """Each module leaves os.environ as it found it: the cluster front exports the TURN secret and Ray's token for
    its workers (cluster.secrets), and later modules' `serve` options would read them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_model(tmp_path_factory.mktemp("models") / "tiny-sana-sprint")


@pytest.fixture(scope="session")
def reference(demo_model_dir: Path):
    from diffusers import SanaSprintPipeline

    from tests.support.reference import ReferenceSprint

    return ReferenceSprint(SanaSprintPipeline.from_pretrained(demo_model_dir))


@pytest.fixture
def make_engine(demo_model_dir: Path):
    from stream import StreamConfig, StreamEngine

    def make(**config):
        config.setdefault("width", 64)
        config.setdefault("height", 64)
        return StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**config))

    return make


@pytest.fixture(scope="session")
def coturn(tmp_path_factory: pytest.TempPathFactory):
    """A real coturn on loopback with a shared secret (TURN REST API credentials), one per test session."""
    import secrets

    from tests.support.coturn import start_coturn

    server = start_coturn(tmp_path_factory.mktemp("coturn"), secret=secrets.token_hex(24))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def torch_compiled(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo model on the torch-compile backend (64 px, 1 step, tiny autoencoder, one stream), compiled once per
    session into a cache of its own: ``(engine, cache_dir)``. tests/test_torch_compile.py checks its parity with
    eager torch; tests/test_device_check.py starts again from the same cache in new processes."""
    import os
    import shutil

    from engines.compile_options import CompileOptions
    from stream import StreamConfig, StreamEngine
    from tests.support.coturn import in_ci

    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:  # Inductor's CPU code is C++
        reason = f"no C++ compiler ({cxx!r} is not on PATH): torch-compile on a CPU needs one"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the torch-compile tests must run)")
        pytest.skip(f"{reason}; `make test` as root installs g++ (scripts/ensure_cxx.sh)")
    cache_dir = tmp_path_factory.mktemp("torch-compile-cache")
    config = StreamConfig(width=64, height=64, t_list=(1.0,), encoder="tiny", decoder="tiny", backend="torch-compile")
    return StreamEngine.from_pretrained(demo_model_dir, config, compile_options=CompileOptions(cache_dir=cache_dir)), \
        cache_dir
