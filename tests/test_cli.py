"""The ``sana-stream`` command as a user runs it: a real process, a real port."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import pytest
import torch

from engines import BackendName, batching_pays, resolve_backend
from sana_stream.cli import build_parser, main
from server.serve import build_settings, compile_options
from stream.config import even_t_list
from stream.demo_extras import CONTROLNET_DIR
from tests.support import free_port, wait_until


def serve(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sana_stream.cli", "serve", "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen, base: str, timeout: float = 120) -> dict:
    health: dict = {}

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            health.update(httpx.get(f"{base}/health", timeout=2).json())
        except httpx.TransportError:
            return False
        return True

    wait_until(answers, timeout, "serve answering /health")
    return health


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_serve_runs_a_model_with_a_controlnet_on_each_backend(demo_model_dir, tmp_path, backend):
    net = f"{demo_model_dir / CONTROLNET_DIR}:canny:0.8"
    process, base = serve(["--model", str(demo_model_dir), "--width", "64", "--height", "64", "--backend", backend,
                           "--max-peers", "1", "--controlnet", net], env={"SANA_STREAM_CACHE": str(tmp_path / "cache")})
    try:
        health = wait_healthy(process, base)
        assert health["backend"] == backend and health["demo_model"] is False
        r = httpx.post(f"{base}/prompt", json={"prompt": "an oil painting", "control_scales": [0.5]})
        assert r.status_code == 200
        assert r.json()["streams"]["default"]["prompt"] == "an oil painting"
        assert r.json()["streams"]["default"]["control_scales"] == [0.5]
    finally:
        stop(process)


@pytest.mark.slow
def test_serve_without_model_uses_the_demo_model_loudly(tmp_path):
    process, base = serve(["--width", "64", "--height", "64"],
                          env={"SANA_STREAM_CACHE": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"),
                               "HF_HUB_OFFLINE": "1"})
    try:
        health = wait_healthy(process, base)
        assert health["demo_model"] is True
        assert health["backend"] in ("onnxruntime", "tensorrt")  # auto picked a compiled backend
    finally:
        output = stop(process)
    assert "DEMO MODE" in output and "demo model: imitates 4 simple filters" in output
    assert "real styles need Sana-Sprint weights (a GPU)" in output


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SANA_STREAM_PORT", "9191")
    monkeypatch.setenv("SANA_STREAM_TOKEN", "from-the-environment")
    args = build_parser().parse_args(["serve"])
    assert args.port == 9191 and args.token == "from-the-environment"


def test_bad_serve_options_exit_with_a_clear_message(caplog):
    assert main(["serve", "--host", "0.0.0.0", "--width", "64", "--height", "64"]) == 2
    assert "without --token" in caplog.text
    assert main(["serve", "--width", "100", "--model", "/nonexistent"]) == 2
    assert main(["serve", "--model", "/nonexistent/model"]) == 2
    assert "neither a directory nor a hub id" in caplog.text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", "cuda-magic"])


def test_build_and_make_tiny_model_define_their_options_when_parsed(capsys):
    args = build_parser().parse_args(["build", "--model", "m", "--backend", "onnxruntime", "--precision", "fp16"])
    assert (args.precision, args.func.__name__) == ("fp16", "run_build")
    assert build_parser().parse_args(["make-tiny-model", "d", "--preset", "proportional"]).preset == "proportional"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--model", "m", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--kv-length" in capsys.readouterr().out


def test_even_t_list():
    assert even_t_list(1.0, 2) == (1.0, 0.5)
    assert even_t_list(1.2, 3) == pytest.approx((1.2, 0.8, 0.4))


def test_backend_auto_picks_the_compiled_backend_this_machine_has(caplog):
    def only(*modules):
        return lambda module: module in modules

    assert resolve_backend("auto", cuda=True, installed=only("tensorrt")) is BackendName.TENSORRT
    assert resolve_backend("auto", cuda=False, installed=only("onnxruntime")) is BackendName.ONNXRUNTIME
    with caplog.at_level(logging.WARNING, logger="engines"):
        assert resolve_backend("auto", cuda=True, installed=only("onnxruntime")) is BackendName.TORCH
        assert resolve_backend("auto", cuda=False, installed=only()) is BackendName.TORCH
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2
    assert "tensorrt is not installed" in caplog.records[0].message
    assert resolve_backend("torch", cuda=True, installed=only("tensorrt")) is BackendName.TORCH  # as asked
    with pytest.raises(ValueError,
                       match="backend must be auto or one of torch, onnxruntime, tensorrt, torch-compile, got 'tvm'"):
        resolve_backend("tvm")


@pytest.mark.cpu
def test_serve_defaults_to_auto_and_on_a_cpu_builds_onnxruntime_parts_for_one_stream():
    args = build_parser().parse_args(["serve", "--max-peers", "4"])
    assert args.backend == "auto"
    settings = build_settings(args, "unused-model-id")
    assert settings.backend == "onnxruntime"  # the test extra installs it
    assert compile_options(settings.stream, settings.max_peers).streams == 1


def test_streams_share_a_model_call_only_where_batching_pays():
    assert batching_pays(torch.device("cuda")) and not batching_pays(torch.device("cpu"))
