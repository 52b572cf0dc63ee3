"""The light camera bridge: `pip install '.[bridge,ndi]'` into a fresh virtual environment, offline, from the built
wheel, with pip resolving the dependencies itself from a local directory that holds only the core dependencies
and those extras (benchmarks/wheelhouse.py). torch, diffusers and transformers are not there to be had, so the
install succeeding proves the extras do not need them; then `camera --help` and a short `--record` session
against a server run from that environment, and `serve` answers with one line naming the server extra."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
from pathlib import Path

import pytest

from benchmarks.wheelhouse import clean_env, fresh_venv, install_offline, size_bytes, wheelhouse
from tests.test_wheel import clip, installed, source, wheel, wheel_server  # noqa: F401 - fixtures shared
from tests.test_without_torch import PROJECT

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
NOT_IN_A_LIGHT_BRIDGE = ("torch", "diffusers", "transformers", "fastapi", "uvicorn", "onnxruntime")


@pytest.fixture(scope="module")
def light_bridge(wheel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with `sana-stream[bridge,ndi]` installed offline; returns its root."""
    base = tmp_path_factory.mktemp("light-bridge")
    requirements = [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["bridge"],
                    *PROJECT["optional-dependencies"]["ndi"]]
    packed = wheelhouse(requirements, base / "wheelhouse")
    assert not {"torch", "diffusers", "transformers"} & set(packed)
    (base / "wheelhouse" / wheel.name).write_bytes(wheel.read_bytes())
    root = base / "venv"
    python = fresh_venv(root)
    done = install_offline(python, f"sana-stream[bridge,ndi]=={PROJECT['version']}", base / "wheelhouse")
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def run(root: Path, *argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "bin" / "sana-stream"), *argv], capture_output=True, text=True,
                          env=clean_env(), cwd=cwd, timeout=timeout, check=False)


def test_the_light_bridge_installs_without_torch(light_bridge, tmp_path):
    probe = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None "
             f"for m in {NOT_IN_A_LIGHT_BRIDGE + ('cyndilib', 'pyvirtualcam', 'mss', 'aiortc')!r}}}))")
    done = subprocess.run([str(light_bridge / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path, timeout=120, check=True)
    found = json.loads(done.stdout)
    assert not any(found[m] for m in NOT_IN_A_LIGHT_BRIDGE), found
    assert found["cyndilib"] and found["pyvirtualcam"] and found["mss"] and found["aiortc"]
    assert importlib.util.find_spec("torch") is not None  # while this test environment has it
    logger.info("light bridge environment: %.0f MB (du)", size_bytes(light_bridge) / 1e6)

    helped = run(light_bridge, "camera", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--ndi NAME" in helped.stdout, helped.stdout + helped.stderr

    served = run(light_bridge, "serve", cwd=tmp_path)
    lines = served.stderr.strip().splitlines()
    assert served.returncode == 1 and len(lines) == 1, served.stderr
    assert "needs the server extra" in lines[0] and "pip install 'torch>=" in lines[0]  # no checkout: the extra's own requirements


def test_the_light_bridge_records_a_session_against_a_server(light_bridge, wheel_server, clip, tmp_path):
    out = tmp_path / "frames"
    done = run(light_bridge, "camera", "--server", wheel_server, "--source", f"file:{clip}", "--loop",
               "--record", str(out), "--max-frames", "3", "--no-stdin", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(sorted(out.glob("frame_*.png"))) == 3
