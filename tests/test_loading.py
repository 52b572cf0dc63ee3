"""Model loading through the real diffusers code: directories, hub ids in the cache, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from server.cli import main
from stream import ModelNotFoundError, StreamConfig, StreamEngine
from stream.loading import choose_placement
from tests.support import camera_frame


def test_make_tiny_model_command_writes_a_loadable_model(tmp_path):
    assert main(["make-tiny-model", str(tmp_path / "m")]) == 0
    for part in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "m" / part).exists()
    engine = StreamEngine.from_pretrained(tmp_path / "m", StreamConfig(width=64, height=64))
    assert engine(camera_frame(0)).shape == (64, 64, 3)
    assert engine.backend.geometry.spatial_compression == 32  # the real DC-AE geometry


def test_missing_component_is_named(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(ModelNotFoundError, match="text_encoder") as info:
        StreamEngine.from_pretrained(broken)
    assert info.value.missing == ["text_encoder"]


def test_nonsense_model_name(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a directory nor a hub id"):
        StreamEngine.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


def _populate_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """Lays out ``source`` as huggingface_hub's cache does after a download of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_is_used_offline_when_cached(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    _populate_hub_cache(tmp_path / "hub", "someone/tiny-sprint", tiny_model_dir)
    engine = StreamEngine.from_pretrained("someone/tiny-sprint", StreamConfig(width=64, height=64),
                                          local_files_only=True)
    assert engine(camera_frame(0)).shape == (64, 64, 3)


def test_uncached_hub_id_offline_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache") as info:
        StreamEngine.from_pretrained("Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers")
    assert info.value.model == "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"


@pytest.mark.cpu
def test_placement_defaults_to_float32_on_a_cpu():
    auto = choose_placement(None, None)
    assert (auto.device.type, auto.dtype) == ("cpu", torch.float32)


def test_placement_overrides():
    assert choose_placement("cpu", "bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        choose_placement("cpu", "float8")


def test_cpu_loading_flushes_denormals(tiny_model_dir):
    torch.set_flush_denormal(False)
    StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64, device="cpu"))
    assert torch.tensor([1e-40], dtype=torch.float32).item() == 0.0
