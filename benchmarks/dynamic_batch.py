"""Dynamic batch benchmark (issue 27): one stream on compiled parts built for 4 streams against parts built for 1.

    python -m benchmarks.dynamic_batch [--quick] [--frames N] [--width W] [--height H] [--streams N]
    python -m benchmarks.dynamic_batch --device cuda --compiled tensorrt --precision bf16

A randomly initialised Sana-Sprint (the ``proportional`` preset) with its tiny autoencoder, 256 px, 1 step, as in the
issue's measurement before the change. The same eager model is compiled twice into one engine cache, for
``--streams`` (4) streams and for one, and three engines run one stream each, interleaved; the timed calls are rerun
(up to twice) while other processes take the CPUs, keeping the least disturbed run:

- ``built for 4``: the parts as ``serve`` builds them for 4 peers, called with the one stream's rows;
- ``built for 1``: the parts built for a single stream;
- ``padded to 4``: the parts built for 4, every call run on all their rows, which is what static shapes did before
  issue 27 (``PaddedPart``): the reference that shows what the dynamic batch saves.

The ratio ``built for 4 / built for 1`` (target <= 1.15) and ``padded / built for 1`` (information), each the median
of the per-repetition ratios (the ratio of the medians is in the JSON), with the outputs compared frame by frame.
Results: a table on stdout, ``dynamic_batch.json`` and ``.md`` in ``--output-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.backends import RESULTS_DIR, BackendBenchConfig
from benchmarks.frames import camera_frames, mean_abs_diff
from benchmarks.report import Comparison, Target, machine_info, text_table, write_results
from benchmarks.harness import run_quietest
from benchmarks.timing import Sample, interleave, median_of
from engines import BackendName
from engines.base import CompiledPart
from engines.compile import compile_backend
from engines.compile_options import CompileOptions
from engines.compiled_backend import CompiledBackend
from engines.specs import BuildSpec
from stream.demo_model import DemoPreset, make_demo_model
from stream.engine import DEFAULT_STREAM, FrameKind, StreamEngine

logger = logging.getLogger(__name__)

RATIO_TARGET = Target("<=", 1.15)
ALONE = "built for 1"


@dataclass(frozen=True)
class DynamicBatchBenchConfig(BackendBenchConfig):
    """The backends benchmark's settings at the issue's: 256 px, the tiny autoencoder, plus ``streams``."""

    width: int = 256
    height: int = 256
    frames: int = 60  # timed frames per side
    warmup: int = 3
    encoder: str = "tiny"
    decoder: str = "tiny"
    streams: int = 4  # what the larger parts are built for (serve's default --max-peers)
    retries: int = 2  # reruns of the timed calls while other processes took the CPUs (the least disturbed is kept)
    wait_quiet_s: float = 20.0  # before each run, wait up to this long for the CPUs to calm down


class PaddedPart(CompiledPart):
    """A part run on all the rows it was built for whatever a call has: static shapes, as before issue 27. The
    rows past the call's hold earlier, valid data, and rows never interact, so the outputs are the same."""

    def __init__(self, inner: CompiledPart) -> None:
        self.inner, self.buffers, self.runs = inner, inner.buffers, inner.runs

    def execute(self, rows: int) -> None:
        self.buffers.check_rows(rows)
        self.inner.execute(self.buffers.batch)


def run_benchmark(config: DynamicBatchBenchConfig, model: str | Path,
                  cache_dir: Path) -> tuple[list[Comparison], dict[str, Any]]:
    eager = StreamEngine.from_pretrained(model, config.stream_config())
    options = {n: CompileOptions(streams=n, cache_dir=cache_dir, precision=config.precision)
               for n in (config.streams, 1)}
    spec = {n: BuildSpec(width=config.width, height=config.height, steps=len(config.t_list), streams=n,
                         kv_length=config.kv_length or eager.config.max_sequence_length) for n in options}
    built = {n: compile_backend(eager.backend, spec[n], options[n], config.compiled).backend for n in options}
    wide = compile_backend(eager.backend, spec[config.streams], options[config.streams], config.compiled).backend
    padded = CompiledBackend(eager.backend, {p: PaddedPart(c) for p, c in wide.parts.items()}, wide.kv_length,
                             f"{config.compiled} (padded)")  # parts of its own: the same graphs, other sessions
    wide_label, padded_label = f"built for {config.streams}", f"padded to {config.streams}"
    backends = {wide_label: built[config.streams], ALONE: built[1], padded_label: padded}
    engines = {label: StreamEngine(backend, eager.prompt_encoder, eager.config, sigma_d=eager.sigma_d)
               for label, backend in backends.items()}
    frames = camera_frames(16, config.width, config.height)
    outputs: dict[str, dict[int, np.ndarray]] = {label: {} for label in engines}

    def side(label: str) -> Callable[[int], Mapping[str, float]]:
        def run(i: int) -> Mapping[str, float]:
            frame = engines[label].process({DEFAULT_STREAM: frames[i % len(frames)]}, {DEFAULT_STREAM: i})
            if frame[DEFAULT_STREAM].kind is FrameKind.GENERATED:
                outputs[label][frame[DEFAULT_STREAM].tag] = frame[DEFAULT_STREAM].image
            return {}
        return run

    device = eager.backend.geometry.device
    samples, shares = run_quietest(
        "interleaved calls", lambda: interleave({label: side(label) for label in engines}, config.frames,
                                                config.warmup, device),
        retries=config.retries, wait_quiet_s=config.wait_quiet_s)
    comparisons = [_comparison(label, samples[label], samples[ALONE], outputs, config, label == wide_label)
                   for label in (wide_label, padded_label)]
    rows = {label: {part.value: dict(compiled.runs) for part, compiled in backend.parts.items()}
            for label, backend in backends.items()}
    kept = min((s for s in shares if s is not None), default=None)
    meta = {"machine": {**machine_info(), "other_processes_cpu_share": {"timed calls (kept run)": kept}},
            "attempts_other_cpu_share": shares,
            "settings": {**dataclasses.asdict(config), "output_dir": str(config.output_dir),
                         "cache_dir": str(cache_dir)},
            "rows_per_call": rows}
    return comparisons, meta


def _comparison(label: str, samples: list[Sample], alone: list[Sample], outputs: dict[str, dict[int, np.ndarray]],
                config: DynamicBatchBenchConfig, dynamic: bool) -> Comparison:
    """A/B as the median of each repetition's A/B (the two calls ran next to each other, so a slow spell of the
    shared machine hits both): steadier under load than the ratio of the medians, which is in the details."""
    ms, one = median_of(samples), median_of(alone)
    paired = statistics.median(a["wall"] / b["wall"] for a, b in zip(samples, alone, strict=True))
    same = sorted(set(outputs[label]) & set(outputs[ALONE]))
    diffs = [mean_abs_diff(outputs[label][i], outputs[ALONE][i]) for i in same]
    equal = sum(np.array_equal(outputs[label][i], outputs[ALONE][i]) for i in same)
    target = RATIO_TARGET if dynamic else None
    return Comparison(
        key=label.replace(" ", "_"), a_label=label, a=1e3 * ms, b_label=ALONE, b=1e3 * one, unit="ms",
        title=f"one stream, {config.compiled} parts {label} vs {ALONE} ({config.device})",
        ratio=paired, ratio_of="median of per-repetition A/B", target=target,
        note=(f"{equal} of {len(same)} frames identical, mean |diff| {np.mean(diffs) if diffs else -1:.3f} of 255; "
              + ("each part runs the rows of one stream" if target else
                 f"each part runs all the rows of {config.streams} streams")),
        details={"a_ms": [round(1e3 * s["wall"], 3) for s in samples],
                 "b_ms": [round(1e3 * s["wall"], 3) for s in alone], "ratio_of_medians": round(ms / one, 4),
                 "frames_compared": len(same), "frames_identical": int(equal)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 frames per side, 64 px, the tiny preset: a smoke run")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--streams", type=int, default=4, help="streams the larger parts are built for")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compiled", default=BackendName.ONNXRUNTIME.value,
                        choices=[BackendName.ONNXRUNTIME.value, BackendName.TENSORRT.value])
    parser.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = 64 if args.quick else 256
    config = DynamicBatchBenchConfig(
        preset=DemoPreset.TINY.value if args.quick else DemoPreset.PROPORTIONAL.value, width=args.width or size,
        height=args.height or size, frames=args.frames or (3 if args.quick else 60), warmup=1 if args.quick else 3,
        retries=0 if args.quick else 2, wait_quiet_s=0.0 if args.quick else 20.0, streams=args.streams,
        device=args.device, compiled=args.compiled, precision=args.precision, output_dir=args.output_dir)
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory(prefix="sana-stream-bench-") as tmp:
        model = make_demo_model(Path(tmp) / "model", preset=config.preset)
        comparisons, meta = run_benchmark(config, model, Path(tmp) / "engines")
    meta["settings"]["model"] = f"tiny:{config.preset}"
    json_path, md_path = write_results(config.output_dir, "dynamic_batch", comparisons, meta)
    logger.info("results:\n%s\nrows per call: %s\nwritten to %s and %s", text_table(comparisons),
                meta["rows_per_call"], json_path, md_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
