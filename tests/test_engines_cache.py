"""The engine cache: every key field matters; stale and corrupt entries are rebuilt with a log line."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from engines.cache import KEY_FILE, CacheKey, EngineCache, default_cache_dir, module_digest

KEY = CacheKey(kind="tensorrt", model_digest="a" * 64, component="transformer",
               shapes="hidden_states:4x32x2x2:bfloat16;velocity:4x32x2x2:bfloat16", precision="bf16", opset=18,
               torch_version="2.13.0", format_version=1, trt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3",
               compute_capability="9.0", builder_optimization_level=3)
CHANGED = {"kind": "onnx", "model_digest": "b" * 64, "component": "decoder", "shapes": "latents:1x32x2x2:bfloat16",
           "precision": "fp16", "opset": 19, "torch_version": "2.14.0", "format_version": 2, "trt_version": "11.4.0",
           "gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "builder_optimization_level": 5,
           "tf32": True}


class Builds:
    """A build function that writes one file and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, directory: Path) -> None:
        self.calls += 1
        (directory / "engine.plan").write_bytes(b"plan bytes %d" % self.calls)


def test_changed_fields_cover_the_whole_key():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(CacheKey)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_field_changes_the_key(field: str, tmp_path: Path):
    other = dataclasses.replace(KEY, **{field: CHANGED[field]})
    assert other.to_dict() != KEY.to_dict()
    cache, build = EngineCache(tmp_path), Builds()
    cache.get_or_build(KEY, build)
    # identifying fields pick another slot; version fields find the same slot and call it stale
    if field in CacheKey.SLOT_FIELDS:
        assert other.slot() != KEY.slot() and cache.problem(other) == "missing"
    else:
        assert other.slot() == KEY.slot() and cache.problem(other).startswith(f"stale: {field}")
    cache.get_or_build(other, build)
    assert build.calls == 2 and cache.problem(other) is None


def test_a_valid_entry_is_reused(tmp_path: Path, caplog):
    cache, build = EngineCache(tmp_path), Builds()
    first = cache.get_or_build(KEY, build)
    with caplog.at_level(logging.INFO, logger="engines.cache"):
        again = cache.get_or_build(KEY, build)
    assert first == again and build.calls == 1
    assert any("using cached" in r.message for r in caplog.records)
    assert json.loads((first / KEY_FILE).read_text())["key"] == KEY.to_dict()


def test_corrupt_engine_is_rebuilt_with_a_log_line(tmp_path: Path, caplog):
    cache, build = EngineCache(tmp_path), Builds()
    entry = cache.get_or_build(KEY, build)
    (entry / "engine.plan").write_bytes(b"garbage")  # a half-written or damaged plan
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        entry = cache.get_or_build(KEY, build)
    assert build.calls == 2 and (entry / "engine.plan").read_bytes() == b"plan bytes 2"
    assert any("corrupt: engine.plan changed" in r.message and "rebuilding" in r.message for r in caplog.records)


def test_stale_engine_is_rebuilt_with_a_log_line(tmp_path: Path, caplog):
    cache, build = EngineCache(tmp_path), Builds()
    entry = cache.get_or_build(dataclasses.replace(KEY, trt_version="10.8.0"), build)  # built by an older TensorRT
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        again = cache.get_or_build(KEY, build)
    assert again == entry and build.calls == 2
    assert any("stale: trt_version '10.8.0' -> '10.13.0'" in r.message for r in caplog.records)


@pytest.mark.parametrize("damage", ["delete", "garble", "extra file", "missing file"])
def test_damaged_entries_are_never_used(damage: str, tmp_path: Path):
    cache, build = EngineCache(tmp_path), Builds()
    entry = cache.get_or_build(KEY, build)
    if damage == "delete":
        (entry / KEY_FILE).unlink()
    elif damage == "garble":
        (entry / KEY_FILE).write_text("{not json")
    elif damage == "extra file":
        (entry / "leftover.bin").write_bytes(b"x")
    else:
        (entry / "engine.plan").unlink()
    assert cache.problem(KEY).startswith("corrupt")
    cache.get_or_build(KEY, build)
    assert build.calls == 2 and cache.problem(KEY) is None


def test_a_failed_build_leaves_no_entry(tmp_path: Path):
    cache = EngineCache(tmp_path)

    def fails(directory: Path) -> None:
        (directory / "engine.plan").write_bytes(b"partial")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_build(KEY, fails)
    assert cache.problem(KEY) == "missing" and list(tmp_path.iterdir()) == []


def test_invalidate_removes_the_entry(tmp_path: Path, caplog):
    cache = EngineCache(tmp_path)
    cache.get_or_build(KEY, Builds())
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        cache.invalidate(KEY, "deserialize_cuda_engine returned None")
    assert cache.problem(KEY) == "missing"
    assert any("cannot be used" in r.message for r in caplog.records)


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("SANA_STREAM_CACHE", str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("SANA_STREAM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "sana-stream" / "engines"


def test_module_digest_follows_the_weights():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4)
    b = torch.nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    assert module_digest(a) == module_digest(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert module_digest(a) != module_digest(b)
    assert module_digest(a) != module_digest(a.to(torch.bfloat16))
