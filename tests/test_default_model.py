"""Which model ``serve`` loads without ``--model``: the decision on its own (no network: every check is injected),
the hub probe with an injected connection, and ``choose_model`` on this CPU machine serving the demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.default_model import ModelSource, default_model_source, download_notice, hub_reachable


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
    assert demo and Path(model) == tmp_path / "cache" / "demo-model" and (Path(model) / "model_index.json").exists()
    assert choose_model("some/model", gpu=lambda: True, online=no_network) == ("some/model", False)
