"""Engine benchmark (GitHub issue 2): StreamEngine against diffusers and against the engine's own alternatives.

    python -m benchmarks.engine [--quick] [--frames N] [--preset proportional|tiny] [--width W] [--height H]
                                [--retries N] [--wait-quiet SECONDS]

It writes a randomly initialised Sana-Sprint (by default the ``proportional`` preset: the real 0.6B's share of
work per part at 1/236 of its FLOPs) to a temporary directory, loads it with ``StreamEngine.from_pretrained``
and measures, in one run, with the sides of each comparison interleaved (medians):

  a. StreamEngine (1 step, cfg none) frames/s against ``SanaSprintImg2ImgPipeline`` called once per frame;
  b. Stream Batch (one batched transformer call per frame) against sequential batch-1 calls per step;
  c. RCFG ``self`` against ``full``: transformer time per frame at 4 steps;
  d. the engine's cached prompt K/V against the stock transformer fed 300 padded prompt tokens;
  e. StreamEngine's wall time per frame against the sum of its model calls (its own overhead).

Results: a table on stdout, ``engine.json`` and ``engine.md`` in ``--output-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.engine_comparisons import (compare_engine_with_pipeline, compare_kv_cache, compare_rcfg,
                                           compare_stream_batch)
from benchmarks.engine_setup import QUICK, RESULTS_DIR, BenchConfig, load_setup
from benchmarks.flops import pipeline_flops, scale_against_real
from benchmarks.harness import NOISY_SHARE, run_quietest
from benchmarks.report import Comparison, machine_info, text_table, write_results
from benchmarks.timing import cpu_snapshot, other_cpu_share
from stream.tiny_model import TinyPreset, make_tiny_model

logger = logging.getLogger(__name__)


def run_benchmark(config: BenchConfig) -> tuple[list[Comparison], dict[str, Any]]:
    started = time.perf_counter()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="sana-stream-bench-") as tmp:
        model_dir = make_tiny_model(Path(tmp) / config.preset, preset=config.preset)
        setup = load_setup(config, model_dir)
        prompt_tokens = int(setup.encoder.encode(config.prompt).shape[0])
        flops = pipeline_flops(setup.engine.pipeline, config.width, config.height, prompt_tokens=prompt_tokens)
        expected_kv = flops.transformer / flops.transformer_cached if flops.transformer_cached else None
        steps: list[tuple[str, Callable[[], list[Comparison]]]] = [
            ("a/e: engine vs pipeline", lambda: compare_engine_with_pipeline(setup, flops)),
            ("b: stream batch", lambda: [compare_stream_batch(setup)]),
            ("c: rcfg", lambda: [compare_rcfg(setup)]),
            ("d: kv cache", lambda: [compare_kv_cache(setup, expected_kv)]),
        ]
        comparisons: list[Comparison] = []
        contention: dict[str, float | None] = {}
        attempts: dict[str, list[float | None]] = {}
        first = cpu_snapshot()
        for name, step in steps:
            result, attempts[name] = run_quietest(name, step, config.retries, config.wait_quiet_s)
            comparisons += result
            contention[name] = min((a for a in attempts[name] if a is not None), default=None)
        contention["whole run"] = other_cpu_share(first, cpu_snapshot())
    busy = {name: share for name, share in contention.items() if share is not None and share > NOISY_SHARE}
    if busy:
        logger.warning("other processes used the CPUs during the run (share of all cores: %s): timings are noisy",
                       ", ".join(f"{k} {v:.0%}" for k, v in busy.items()))
    comparisons.sort(key=lambda cmp: cmp.title)
    scale, shares = scale_against_real(flops)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = list(os.getloadavg())
    machine["other_processes_cpu_share"] = contention
    machine["other_processes_cpu_share_per_attempt"] = attempts
    meta = {
        "benchmark": "engine",
        "machine": machine,
        "settings": {**config.to_dict(), "dtype": str(setup.timed.geometry.dtype),
                     "device": str(setup.timed.geometry.device)},
        "flops_gflops": {**flops.to_dict(), "scale_vs_real_sprint_0.6b": scale, "share_vs_real": shares},
        "duration_s": round(time.perf_counter() - started, 1),
    }
    return comparisons, meta


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2 frames per side")
    parser.add_argument("--frames", type=int, help="timed frames per side (default 30; 2 with --quick)")
    parser.add_argument("--preset", choices=[p.value for p in TinyPreset], default=BenchConfig.preset)
    parser.add_argument("--width", type=int, default=BenchConfig.width)
    parser.add_argument("--height", type=int, default=BenchConfig.height)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--retries", type=int, default=0,
                        help="re-run a comparison while other processes used >5%% of the CPUs during it, "
                             "keeping the least disturbed attempt (default 0)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each comparison, wait up to SECONDS for other processes to calm down")
    args = parser.parse_args(argv)
    if args.retries < 0 or args.wait_quiet < 0:
        parser.error("--retries and --wait-quiet must not be negative")
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.frames is not None:
        if args.frames < 1:
            parser.error("--frames must be at least 1")
        overrides["frames"] = args.frames
    return BenchConfig(preset=args.preset, width=args.width, height=args.height, output_dir=args.output_dir,
                       retries=args.retries, wait_quiet_s=args.wait_quiet, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    logger.info("engine benchmark: preset %s, %dx%d, %d frames per side", config.preset, config.width,
                config.height, config.frames)
    comparisons, meta = run_benchmark(config)
    json_path, md_path = write_results(config.output_dir, "engine", comparisons, meta)
    for cmp in comparisons:
        if not all(math.isfinite(v) for v in (cmp.a, cmp.b, cmp.ratio)):
            logger.warning("%s: a non-finite measurement", cmp.key)
    print(text_table(comparisons))  # the report itself
    logger.info("wrote %s and %s (%.0f s)", json_path, md_path, meta["duration_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
