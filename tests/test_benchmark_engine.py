"""Smoke test of the engine benchmark: quick mode on the tiny preset, small frames, into a temporary directory.

It checks that every comparison is measured and reported, never how fast anything is: performance claims
live in benchmarks/results, not in tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.engine import main

pytestmark = pytest.mark.slow  # the whole benchmark, in quick mode

COMPARISONS = {"engine_vs_pipeline", "stream_batch_vs_sequential", "rcfg_self_vs_full", "kv_cache_on_vs_off",
               "engine_overhead"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--preset", "tiny", "--width", "128", "--height", "96", "--output-dir", str(out)]) == 0
    return json.loads((out / "engine.json").read_text()), out


def test_every_comparison_has_finite_positive_numbers(results: tuple[dict, Path]) -> None:
    data, _ = results
    by_key = {c["key"]: c for c in data["comparisons"]}
    assert set(by_key) == COMPARISONS
    for key, c in by_key.items():
        for name in ("a", "b", "ratio"):
            assert isinstance(c[name], float) and math.isfinite(c[name]) and c[name] > 0, (key, name, c[name])
        assert c["passed"] in (True, False, None)


def test_the_same_work_is_compared(results: tuple[dict, Path]) -> None:
    by_key = {c["key"]: c for c in results[0]["comparisons"]}
    assert by_key["kv_cache_on_vs_off"]["details"]["output_max_abs_diff"] < 1e-4  # cached K/V == stock transformer
    batch = by_key["stream_batch_vs_sequential"]["details"]
    # the same frames come out (a random DC-AE decoder may amplify float rounding in a few pixels)
    assert batch["frames_compared"] >= 1 and batch["output_mean_abs_diff_uint8"] < 0.5


def test_report_records_machine_settings_and_flops(results: tuple[dict, Path]) -> None:
    data, out = results
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["torch"]
    assert data["settings"]["preset"] == "tiny" and data["settings"]["frames"] == 2
    assert (data["settings"]["width"], data["settings"]["height"]) == (128, 96)
    for part in ("encode", "decode", "transformer", "text_encoder"):
        assert data["flops_gflops"][part] > 0
    table = (out / "engine.md").read_text()
    assert table.count("\n| ") >= 6  # header, separator and five rows
