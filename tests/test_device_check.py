"""`make device-check ARGS=--dry-run`: the offline GPU check's every step on the CPU with the demo model, written
outside benchmarks/results/ (issue 32: a dry run never writes where real results live). It starts from the
Inductor cache that conftest's ``torch_compiled`` filled, in new processes: a second start compiles nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.device_check import CASES, Row, collect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def test_dry_run_measures_every_step_and_leaves_the_results_folder_alone(torch_compiled):
    _, cache_dir = torch_compiled
    before = snapshot(RESULTS)
    cases = "eager-tiny,graphs-tiny,compile-tiny"
    done = subprocess.run(["bash", "scripts/device_check.sh", "--dry-run", "--cases", cases, "--streams", "1",
                           "--cache-dir", str(cache_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    found = re.search(r"^results: (\S+) and (\S+)$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    md, js = Path(found.group(1)), Path(found.group(2))
    try:
        assert RESULTS not in md.parents
        data = json.loads(js.read_text())
        rows = {r["case"]: r for r in data["rows"]}
        assert list(rows) == cases.split(",") and all(r["status"] == "ok" and r["streams"] == 1 for r in rows.values())
        for r in rows.values():
            assert r["fps"] > 0 and r["p95_ms"] >= r["p50_ms"] > 0
            assert r["diff_max"] <= 2 and r["diff_mean"] < 0.05, r  # the same image as eager
        assert rows["eager-tiny"]["diff_max"] == 0
        assert rows["compile-tiny"]["compiled"] == 0 and rows["compile-tiny"]["cached"] > 0, rows["compile-tiny"]
        assert data["settings"]["dry_run"] and "DRY RUN" in md.read_text()
        assert "| compile-tiny | 1 |" in done.stdout  # the printed table
    finally:
        shutil.rmtree(md.parent)
    assert snapshot(RESULTS) == before


def test_a_case_cut_short_is_a_timed_out_row(tmp_path: Path):
    case = next(c for c in CASES if c.name == "compile-dcae")
    finished = Row(case.name, 1, "ok", fps=10.0, p50_ms=100.0, p95_ms=120.0)
    (tmp_path / f"{case.name}.jsonl").write_text(json.dumps(finished.__dict__) + "\n")
    rows = collect(case, tmp_path, "timed out after 150 s (its limit)", (1, 4))
    assert [(r.streams, r.status) for r in rows] == [(1, "ok"), (4, "timed out")]
    assert rows[1].error == "timed out after 150 s (its limit)"
