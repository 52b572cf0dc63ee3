"""Which model ``serve`` loads without ``--model``: the decision on its own (no network: every check is injected),
the hub probe with an injected connection, and ``choose_model`` on this CPU machine serving the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.default_model import ModelSource, default_model_source, download_notice, hub_reachable
from stream.demo_manifest import TRAINED_DEMO_DIR


class Checks:
    """The decision's checks, recording which were asked."""

    def __init__(self, *, cached: bool = False, gpu: bool = False, online: bool = False) -> None:
        self.values = {"cached": cached, "gpu": gpu, "online": online}
        self.asked: list[str] = []

    def __getattr__(self, name: str):
        if name not in ("cached", "gpu", "online"):
            raise AttributeError(name)

        def check() -> bool:
            self.asked.append(name)
            return self.values[name]
        return check

    def decide(self, requested: str | None = None) -> ModelSource:
        return default_model_source(requested, cached=self.cached, gpu=self.gpu, online=self.online)


@pytest.mark.parametrize(("checks", "source", "asked"), [
    (Checks(), ModelSource.DEMO, ["cached", "gpu"]),  # a CPU: the network is never probed
    (Checks(online=True), ModelSource.DEMO, ["cached", "gpu"]),
    (Checks(gpu=True), ModelSource.DEMO, ["cached", "gpu", "online"]),  # a GPU, offline
    (Checks(gpu=True, online=True), ModelSource.DOWNLOAD, ["cached", "gpu", "online"]),
    (Checks(cached=True, gpu=True, online=True), ModelSource.CACHED, ["cached"]),
])
def test_the_real_model_is_fetched_only_on_a_gpu_with_the_hub_in_reach(checks: Checks, source, asked):
    assert checks.decide() is source and checks.asked == asked


def test_a_requested_model_is_used_without_asking_anything():
    checks = Checks(cached=True, gpu=True, online=True)
    assert checks.decide("my/model") is ModelSource.REQUESTED and checks.asked == []


def test_hub_probe_respects_offline_mode_and_reports_unreachable(monkeypatch):
    attempts = []

    def refused(address, timeout):
        attempts.append((address, timeout))
        raise ConnectionRefusedError("refused")

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable(refused) is False and attempts == []  # offline: not even a connection attempt
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub_reachable(refused) is False
    assert len(attempts) == 1 and attempts[0][0][1] in (80, 443) and attempts[0][1] <= 3.0

    class Connection:
        closed = False

        def close(self) -> None:
            self.closed = True

    opened = Connection()
    assert hub_reachable(lambda address, timeout: opened) is True and opened.closed


def test_download_notice_states_the_size():
    notice = download_notice("owner/model", [3_000_000_000, 1_250_000_000, None])
    assert "owner/model (4.2 GB in 2 files)" in notice and "HF_HUB_OFFLINE=1" in notice
    assert "size unknown" in download_notice("owner/model", [])


def test_serve_chooses_the_demo_model_on_this_cpu_machine(tmp_path: Path, monkeypatch):
    from server.serve import choose_model

    monkeypatch.setenv("SANA_STREAM_CACHE", str(tmp_path / "cache"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # the real model is not cached there

    def no_network() -> bool:
        raise AssertionError("the network must not be probed without a GPU")

    model, demo = choose_model(None, gpu=lambda: False, online=no_network)
    assert demo and Path(model) == TRAINED_DEMO_DIR and (Path(model) / "model_index.json").exists()
    assert choose_model("some/model", gpu=lambda: True, online=no_network) == ("some/model", False)


def test_without_the_committed_demo_weights_serve_writes_a_random_demo_model(tmp_path: Path, monkeypatch, caplog):
    import server.serve
    from huggingface_hub import constants

    monkeypatch.setenv("SANA_STREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(server.serve, "TRAINED_DEMO_DIR", tmp_path / "missing")
    model, demo = server.serve.choose_model(None, gpu=lambda: False, online=lambda: False)
    assert demo and Path(model) == tmp_path / "cache" / "demo-model" and (Path(model) / "model_index.json").exists()
    assert "the trained demo model is missing" in caplog.text
    assert server.serve.demo_label(model) == server.serve.RANDOM_DEMO_LABEL


def test_the_trained_demo_model_is_served_with_its_first_prompt_and_its_autoencoder():
    from sana_stream.cli import build_parser
    from server.serve import build_settings, demo_label

    stream = build_settings(build_parser().parse_args(["serve"]), str(TRAINED_DEMO_DIR)).stream
    assert (stream.prompt, stream.encoder.value, stream.decoder.value) == ("pencil sketch", "tiny", "tiny")
    args = build_parser().parse_args(["serve", "--prompt", "mosaic", "--encoder", "dcae", "--decoder", "dcae-lite"])
    stream = build_settings(args, str(TRAINED_DEMO_DIR)).stream
    assert (stream.prompt, stream.encoder.value, stream.decoder.value) == ("mosaic", "dcae", "dcae-lite")
    stream = build_settings(build_parser().parse_args(["serve"]), "owner/real-model").stream  # real weights: as before
    assert (stream.prompt, stream.encoder.value, stream.decoder.value) == ("a watercolor painting", "dcae", "dcae")
    assert demo_label(str(TRAINED_DEMO_DIR)).startswith("demo model: imitates 4 simple filters")
