"""``make gpu-check`` on a CPU: the script's argument handling and its dry run end to end (every step but the
GPU's: the GPU tests skip, the benchmark measures onnxruntime and torch on the demo model at 64 px and records
the TensorRT case's error), and the benchmark's own arguments, deadline and report merging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu import DEFAULT_CASES, Case, main, parse_args

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})}, check=False)


def test_script_rejects_bad_arguments():
    done = run_script("--budget", "ten")
    assert done.returncode == 2 and "--budget must be whole seconds, got 'ten'" in done.stderr
    done = run_script("--build-limit", "-1")
    assert done.returncode == 2 and "--build-limit must be whole seconds, got '-1'" in done.stderr
    done = run_script("--fast")
    assert done.returncode == 2 and "unknown argument '--fast'" in done.stderr
    assert "make gpu-check" in run_script("--help").stdout


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def test_script_dry_run_writes_the_report_outside_benchmarks_results(demo_model_dir: Path, tmp_path: Path):
    env = {"PYTHONPATH": str(ROOT), "SANA_STREAM_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path),
           "GPU_TESTS": "tests/test_engines_tensorrt_gpu.py", "DRY_RUN_CASES": "onnxruntime-tiny,tensorrt-tiny"}
    before = snapshot(ROOT / "benchmarks" / "results")
    done = run_script("--dry-run", "--model", str(demo_model_dir), env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert snapshot(ROOT / "benchmarks" / "results") == before  # issue 32: a dry run never writes there
    (results,) = tmp_path.glob("sana-stream-gpu-check-dry-run-*")
    assert f"gpu-check (dry run): {results}/gpu.md" in done.stdout
    steps = (results / "gpu_check.log").read_text().splitlines()
    assert [line.split(":")[0] for line in steps] == ["preflight", "gpu-tests", "prebuild", "benchmark-dry-run"]
    assert all(": ok (" in line for line in steps), steps
    assert "skipped" in (results / "gpu_tests.log").read_text()  # no GPU here: every GPU test skips cleanly
    data = json.loads((results / "gpu.json").read_text())
    rows = {(r["case"], r["streams"]): r for r in data["results"]}
    assert set(rows) == {(c, s) for c in ("onnxruntime-tiny", "tensorrt-tiny") for s in (1, 4)}
    for streams in (1, 4):
        row = rows[("onnxruntime-tiny", streams)]
        assert row["status"] == "ok" and row["calls"] == 2 and row["fps"] > 0, row
        assert row["p95_ms"] >= row["median_ms"] > 0
    assert any(k.startswith("export_") for k in rows[("onnxruntime-tiny", 1)]["setup_s"])
    assert rows[("onnxruntime-tiny", 1)]["diff_max"] <= 1  # its image against torch's (fp32 both)
    error = rows[("tensorrt-tiny", 1)]
    assert error["status"] == "error" and "tensorrt" in error["error"]
    assert [t["verdict"] for t in data["targets"]] == ["not measured", "not measured"]
    assert any("dry run" in n for n in data["notes"])
    md = (results / "gpu.md").read_text()
    assert "| case | streams | fps |" in md and "| onnxruntime-tiny | 4 |" in md and "error: " in md


def test_benchmark_dry_run_defaults_to_a_temporary_directory(capsys):
    args, config = parse_args(["--dry-run", "--cases", "torch-tiny"])
    assert config.output_dir != ROOT / "benchmarks" / "results" and config.output_dir.is_dir()
    config.output_dir.rmdir()
    _, config = parse_args(["--model", "m"])
    assert config.output_dir == ROOT / "benchmarks" / "results"


def test_a_step_cut_short_leaves_a_building_row(tmp_path: Path):
    from benchmarks.gpu import BUILDING, GpuBenchConfig, Measurement, Report

    report = Report(GpuBenchConfig(model=tmp_path, output_dir=tmp_path), [], append=False)
    report.record(Measurement("tensorrt-dcae", 1, BUILDING, error="the step's time limit ended the build"))
    assert "| tensorrt-dcae | 1 |" in (tmp_path / "gpu.md").read_text()
    assert "building / timed out" in (tmp_path / "gpu.md").read_text()


def test_a_wrong_engine_output_is_not_a_result(demo_model_dir: Path, tmp_path: Path, monkeypatch):
    import benchmarks.gpu as gpu

    monkeypatch.setattr(gpu, "output_check", lambda *args: (97.5, 255.0))  # what a NaN engine's black image reads
    assert main(["--dry-run", "--model", str(demo_model_dir), "--cases", "onnxruntime-tiny", "--frames", "1",
                 "--output-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gpu.json").read_text())["results"]
    assert {r["status"] for r in rows} == {"wrong output"} and all(r["diff_mean"] == 97.5 for r in rows)


def test_benchmark_arguments(capsys):
    assert [c.name for c in DEFAULT_CASES[:2]] == ["tensorrt-tiny", "tensorrt-tiny-cn"]  # most important first
    assert Case.parse("torch-dcae-cn") == Case("torch", "dcae", True)
    for argv, message in ((["--model", "m", "--cases", "tensorrt-vae"], "case must be BACKEND-AUTOENCODER"),
                          (["--cases", "torch-tiny"], "--model is required"),
                          (["--model", "m", "--frames", "0"], "--frames must be at least 1")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert message in capsys.readouterr().err
    _, config = parse_args(["--model", "m"])
    assert (config.width, config.height, config.device, config.dtype, config.built_streams) == (512, 512, "cuda",
                                                                                               "bfloat16", 4)


def test_benchmark_deadline_and_append(demo_model_dir: Path, tmp_path: Path):
    out = str(tmp_path)
    assert main(["--dry-run", "--model", str(demo_model_dir), "--cases", "torch-tiny-cn", "--output-dir", out]) == 0
    assert main(["--dry-run", "--model", str(demo_model_dir), "--cases", "torch-dcae", "--deadline-s", "0",
                 "--append", "--output-dir", out]) == 0
    assert main(["--report-only", "--append", "--note", "stopped early", "--output-dir", out]) == 0
    data = json.loads((tmp_path / "gpu.json").read_text())
    status = {(r["case"], r["streams"]): r["status"] for r in data["results"]}
    assert status == {("torch-tiny-cn", 1): "ok", ("torch-tiny-cn", 4): "ok", ("torch-dcae", 1): "skipped",
                      ("torch-dcae", 4): "skipped"}
    row = next(r for r in data["results"] if r["case"] == "torch-tiny-cn" and r["streams"] == 4)
    assert row["fps"] > row["fps_per_stream"] > 0 and row["p95_ms"] >= row["median_ms"] > 0
    assert data["notes"] == ["stopped early"]
