"""Smoke test of the dynamic-batch benchmark: quick mode (tiny preset, 64 px) into a temporary directory.

It checks what the benchmark measures and reports, never how fast anything is: the ratio lives in
benchmarks/results/dynamic_batch.md. What is deterministic is checked: the rows each side's parts ran and that the
three sides' frames are identical.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.dynamic_batch import main

pytestmark = pytest.mark.slow  # exports three parts and runs three engines


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--output-dir", str(out)]) == 0
    assert (out / "dynamic_batch.md").is_file()
    return json.loads((out / "dynamic_batch.json").read_text())


def test_both_ratios_are_measured_on_identical_frames(results: dict) -> None:
    rows = {c["key"]: c for c in results["comparisons"]}
    assert set(rows) == {"built_for_4", "padded_to_4"}
    assert rows["built_for_4"]["target"] == "<= 1.15" and rows["padded_to_4"]["target"] is None
    for c in rows.values():
        assert math.isfinite(c["ratio"]) and c["ratio"] > 0 and c["a"] > 0 and c["b"] > 0
        assert c["details"]["frames_compared"] > 0
        assert c["details"]["frames_identical"] == c["details"]["frames_compared"]


def test_parts_built_for_four_run_one_row_and_padded_ones_four(results: dict) -> None:
    calls = 4  # 1 warm-up + 3 timed calls per side, one step: every call encodes, denoises and decodes one row
    assert results["rows_per_call"] == {
        "built for 4": {part: {"1": calls} for part in ("transformer", "encoder", "decoder")},
        "built for 1": {part: {"1": calls} for part in ("transformer", "encoder", "decoder")},
        "padded to 4": {part: {"4": calls} for part in ("transformer", "encoder", "decoder")}}
