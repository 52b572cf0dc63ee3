"""Smoke test of the server benchmark: quick mode on the tiny preset into a temporary directory, with the
peers in their own process as in a full run.

It checks that every comparison is measured and reported, never how fast anything is: performance claims
live in benchmarks/results, not in tests.
"""

from __future__ import annotations

import json
import math
import re
import sys

import pytest

from benchmarks.server import PeerResult, PeerRun, Round, main, median_round, trend_ms_per_minute

COMPARISONS = {"peer_vs_engine", "p95_latency", "latency_drift", "four_peers"}


@pytest.mark.slow
def test_quick_run_reports_every_comparison(tmp_path):
    main(["--quick", "--rounds", "2", "--preset", "tiny", "--output", str(tmp_path)])
    data = json.loads((tmp_path / "server.json").read_text())
    by_key = {c["key"]: c for c in data["comparisons"]}
    assert set(by_key) == COMPARISONS
    for key, c in by_key.items():
        for name in ("a", "b", "ratio"):
            assert isinstance(c[name], float) and math.isfinite(c[name]), (key, name, c[name])
        assert c["a"] > 0 and c["b"] > 0 and (c["ratio"] > 0 or key == "latency_drift"), c  # growth may be < 0
    assert [run["peers"] for run in data["runs"]] == [1, 1, 4]
    assert all(r["fps"] > 0 and r["latencies"] for run in data["runs"] for r in run["results"])
    assert len(data["settings"]["engine_alone_fps"]) == 4  # before, between and after the three runs
    assert re.match(r"median of rounds \d+\.\d\d / \d+\.\d\d;", by_key["peer_vs_engine"]["note"])
    if sys.platform != "win32":  # the loop `sana-stream serve` gets from uvicorn once uvloop is installed
        assert data["settings"]["event_loop"] == "uvloop"
    assert data["settings"]["backend"] in ("onnxruntime", "tensorrt")  # a compiled backend, as `serve` picks
    assert (tmp_path / "server.png").stat().st_size > 0 and (tmp_path / "server.md").exists()


def test_trend_is_the_fitted_slope_per_minute():
    assert trend_ms_per_minute([(t, 0.5 + 0.001 * t) for t in range(60)]) == pytest.approx(60.0)
    assert math.isnan(trend_ms_per_minute([(0.0, 1.0)]))


def test_median_round_is_the_middle_one_and_of_two_the_one_nearer_failing():
    rounds = [Round(PeerRun([PeerResult(fps)], 0.0), engine_fps=2.0, steps=1, seconds=60.0) for fps in (1.8, 1.6, 2.0)]
    assert median_round(rounds, lambda r: r.fps_ratio, higher_is_better=True).peer.fps == 1.8
    two = rounds[:2]
    assert median_round(two, lambda r: r.fps_ratio, higher_is_better=True).peer.fps == 1.6
    assert median_round(two, lambda r: r.fps_ratio, higher_is_better=False).peer.fps == 1.8


def test_latency_growth_is_counted_in_output_intervals():
    """At 2 fps (0.5 s intervals), a last window 0.25 s slower than the first is half an interval of growth."""
    latencies = [(t / 2, 1.0 if t < 60 else 1.25) for t in range(120)]
    round_ = Round(PeerRun([PeerResult(2.0, latencies)], 0.0), engine_fps=2.0, steps=1, seconds=60.0)
    assert (round_.first, round_.last) == (1.0, 1.25)
    assert round_.growth == pytest.approx(0.5)
