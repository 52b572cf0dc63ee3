"""``sana-stream build``: prebuilds into the cache, ControlNets included; ``--check`` passes on the tiny model
and fails (exit 1) when an exported graph disagrees with torch."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engines.cache import KEY_FILE, file_hashes
from sana_stream.cli import build_parser
from stream.config import even_t_list
from stream.demo_extras import CONTROLNET_DIR


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "engine-cache"


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_args(model: Path, cache: Path, *extra: str) -> argparse.Namespace:
    # the shapes of the other engine tests (64 px, 2 steps, 2 streams), so the shared cache is reused
    return parse(["build", "--model", str(model), "--backend", "onnxruntime", "--width", "64", "--height", "64",
                  "--steps", "2", "--streams", "2", "--cache-dir", str(cache), *extra])


def built_paths(records: list[logging.LogRecord]) -> dict[str, Path]:
    """Each part's engine path from the summary the build logs at the end ("transformer  /cache/.../model.onnx")."""
    lines = [r.getMessage().split() for r in records if r.name == "sana_stream.commands.build"]
    return {words[0]: Path(words[1]) for words in lines if len(words) == 2 and words[1].endswith(".onnx")}


def test_build_with_check_passes_and_fills_the_cache(demo_model_dir: Path, engine_cache: Path, caplog):
    args = build_args(demo_model_dir, engine_cache, "--check")
    with caplog.at_level(logging.INFO):
        assert args.func(args) == 0
    checks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("check ")]
    assert len(checks) == 3 and all(m.endswith(": pass") for m in checks)
    assert {p.name.split("-")[0] for p in engine_cache.iterdir() if p.is_dir()} >= {"transformer", "encoder", "decoder"}


def test_check_fails_when_a_graph_disagrees_with_torch(demo_model_dir: Path, engine_cache: Path, tmp_path: Path,
                                                       caplog):
    """An exporter that got the numbers wrong: one weight of the cached transformer graph is scaled, and the
    entry re-recorded so that the cache itself accepts it. Only the parity check can catch that."""
    first = build_args(demo_model_dir, engine_cache)
    with caplog.at_level(logging.INFO):
        assert first.func(first) == 0
    cache = tmp_path / "cache"
    shutil.copytree(engine_cache, cache)
    entry = cache / built_paths(caplog.records)["transformer"].parent.name  # the cache holds other transformers too
    caplog.clear()
    model = onnx.load(str(entry / "model.onnx"))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 1.5, largest.name))
    (entry / "model.onnx.data").unlink()
    onnx.save_model(model, str(entry / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    record = json.loads((entry / KEY_FILE).read_text())
    record["files"] = file_hashes(entry)
    (entry / KEY_FILE).write_text(json.dumps(record))

    args = build_args(demo_model_dir, cache, "--check")
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 1
    assert any("check failed: transformer" in r.getMessage() and "above the tolerance 0.001" in r.getMessage()
               for r in caplog.records)


def test_build_with_a_controlnet_adds_its_part_and_keeps_the_transformer(demo_model_dir: Path, engine_cache: Path,
                                                                          caplog):
    plain = build_args(demo_model_dir, engine_cache)
    controlled = build_args(demo_model_dir, engine_cache, "--check", "--controlnet",
                            f"{demo_model_dir / CONTROLNET_DIR}:passthrough:0.5")
    with caplog.at_level(logging.INFO):
        assert plain.func(plain) == 0
        without = built_paths(caplog.records)
        caplog.clear()
        assert controlled.func(controlled) == 0
    checks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("check ")]
    assert len(checks) == 4 and all(m.endswith(": pass") for m in checks)
    assert any(m.startswith("check controlnet_0: relative error") for m in checks)
    paths = built_paths(caplog.records)
    assert set(paths) == {"transformer", "encoder", "decoder", "controlnet_0"}
    assert paths["controlnet_0"].parent.name.startswith("controlnet-onnx-fp32-")
    assert paths["transformer"] == without["transformer"]  # one transformer serves with and without ControlNets


def test_bad_settings_exit_2(demo_model_dir: Path, tmp_path: Path, caplog):
    args = parse(["build", "--model", str(demo_model_dir), "--backend", "onnxruntime", "--width", "70",
                  "--cache-dir", str(tmp_path)])
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert any("width must be a positive multiple of 32" in r.getMessage() for r in caplog.records)


def test_steps_become_evenly_spaced_angles():
    assert even_t_list(1.0, 1) == (1.0,)
    assert even_t_list(1.0, 4) == (1.0, 0.75, 0.5, 0.25)
    args = parse(["build", "--model", "m", "--t-list", "1.2", "0.6"])
    assert args.t_list == [1.2, 0.6] and args.steps is None and args.backend == "tensorrt"
