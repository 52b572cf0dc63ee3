"""Encoder speed: the published TAESANA encoder (tests/data/taesana) vs a DC-AE f32c32 encoder at its published
size (random weights: DC-AE's cannot be downloaded here), in torch and in ONNX Runtime, side by side in one run.

    python -m benchmarks.taesana [--size 512] [--repetitions 5] [--quick] [--output DIR]

Both encoders get the same frame (tests/data/taesana/sample.jpg resized), one at a time, as the engine feeds
them on a CPU. The ONNX side runs the parts the server would run: ``export_onnx`` graphs in ``OrtPart``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from benchmarks.flops import count_flops
from benchmarks.real_size import real_size_dcae
from benchmarks.report import Comparison, Target, machine_info, text_table, write_results
from benchmarks.timing import cpu_snapshot, in_worker_thread, interleave, median_of, other_cpu_share
from engines.base import Autoencoder
from engines.export import export_onnx
from engines.graphs import EncodeGraph
from engines.models.tiny_autoencoder import TinyEncoder
from engines.models.tiny_autoencoder_weights import load_tiny_autoencoder
from engines.onnxruntime_backend import OrtPart
from engines.parity import FP32_TOLERANCE, compare
from engines.specs import Component, PartSpec, TensorSpec
from engines.torch_backend import DcaeAutoencoder

logger = logging.getLogger("benchmarks.taesana")
TAESANA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "taesana"
CPU = torch.device("cpu")
ENCODERS = ("taesana", "dcae")
# encodes per timed sample: the tiny encoder's ~0.1 s calls are averaged over ~1 s, so that one burst of the
# machine's other work does not decide a sample (DC-AE's calls take seconds on their own)
CALLS_PER_SAMPLE = {"taesana": 10, "dcae": 1}
RUNTIMES = ("torch", "onnxruntime")


def sample_frame(size: int) -> Tensor:
    """The sample photo resized to (1, 3, size, size) in [-1, 1], as the engine hands frames to an encoder."""
    image = Image.open(TAESANA_DIR / "sample.jpg").convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 127.5 - 1


def encoder_spec(size: int) -> PartSpec:
    return PartSpec(Component.ENCODER, (TensorSpec("images", (1, 3, size, size), "float32"),),
                    (TensorSpec("latents", (1, 32, size // 32, size // 32), "float32"),))


def encoder_flops(size: int) -> dict[str, int]:
    """FLOPs of one encode of each network, counted on weightless copies."""
    with torch.device("meta"):
        taesana, dcae = TinyEncoder(), real_size_dcae()
        image = torch.empty(1, 3, size, size)
        return {"taesana": count_flops(lambda: taesana(image)), "dcae": count_flops(lambda: dcae.encode(image))}


def onnx_runner(codec: Autoencoder, spec: PartSpec, directory: Path) -> tuple[Callable[[Tensor], Tensor], float]:
    """The codec exported and loaded in ONNX Runtime as the server runs it; returns (encode, export seconds)."""
    started = time.perf_counter()
    engine = OrtPart(export_onnx(EncodeGraph(codec), spec, directory), CPU, spec.batch)
    exported = time.perf_counter() - started

    def encode(images: Tensor) -> Tensor:
        rows = engine.buffers.write("images", images)
        engine.execute(rows)
        return engine.buffers.read("latents", rows)

    return encode, exported


def measure(size: int, repetitions: int, directory: Path) -> dict[str, Any]:
    """Median seconds per encode of every (encoder, runtime) side, interleaved, plus export times and parity."""
    frame = sample_frame(size)
    codecs: dict[str, Autoencoder] = {
        "taesana": load_tiny_autoencoder(TAESANA_DIR, device=CPU, dtype=torch.float32, decoder=False),
        "dcae": DcaeAutoencoder(real_size_dcae()),
    }
    spec = encoder_spec(size)
    runners: dict[str, Callable[[Tensor], Tensor]] = {}
    export_s, parity = {}, {}
    for name, codec in codecs.items():
        runners[f"{name} torch"] = codec.encode
        runners[f"{name} onnxruntime"], export_s[name] = onnx_runner(codec, spec, directory / name)
        with torch.inference_mode():
            report = compare(name, runners[f"{name} onnxruntime"](frame).numpy(), codec.encode(frame).numpy(),
                             FP32_TOLERANCE)
        parity[name] = report.relative_error
        logger.info("exported the %s encoder in %.1f s; onnxruntime vs torch: %s", name, export_s[name], report)

    def timed(encode: Callable[[Tensor], Tensor], calls: int) -> Callable[[int], dict[str, float]]:
        def run(_: int) -> dict[str, float]:
            started = time.perf_counter()
            for _ in range(calls):
                encode(frame)
            return {"per_encode": (time.perf_counter() - started) / calls}
        return run

    def run_all() -> dict[str, list[dict[str, float]]]:
        with torch.inference_mode():  # per thread: set in the worker that runs the encodes
            sides = {side: timed(fn, CALLS_PER_SAMPLE[side.split()[0]]) for side, fn in runners.items()}
            return interleave(sides, repetitions, warmup=1)

    start = cpu_snapshot()
    samples = in_worker_thread(run_all)
    share = other_cpu_share(start, cpu_snapshot())
    return {"seconds": {side: median_of(s, "per_encode") for side, s in samples.items()},
            "samples": {side: [x["per_encode"] for x in s] for side, s in samples.items()},
            "calls_per_sample": CALLS_PER_SAMPLE, "export_seconds": export_s, "onnx_relative_error": parity,
            "other_cpu_share": share}


def compare_sides(measured: dict[str, Any], flops: dict[str, int], size: int, repetitions: int) -> list[Comparison]:
    ms = {side: 1000 * s for side, s in measured["seconds"].items()}
    flop_ratio = flops["dcae"] / flops["taesana"]
    comparisons = []
    for runtime in RUNTIMES:
        a, b = ms[f"taesana {runtime}"], ms[f"dcae {runtime}"]
        comparisons.append(Comparison(
            f"encoder_{runtime}", f"DC-AE f32c32 vs TAESANA encoder, {runtime}, {size}px", "TAESANA", a, "DC-AE", b,
            "ms", b / a, "B/A", Target(">=", 8.0),
            note=f"published TAESANA weights vs random DC-AE weights at the published size; medians of "
                 f"{repetitions} interleaved samples (TAESANA: {CALLS_PER_SAMPLE['taesana']} encodes each); "
                 f"FLOP ratio {flop_ratio:.0f}x",
            details={"flops": flops}))
    for name in ENCODERS:
        a, b = ms[f"{name} onnxruntime"], ms[f"{name} torch"]
        comparisons.append(Comparison(
            f"{name}_onnxruntime_vs_torch", f"{name} encoder, onnxruntime vs torch, {size}px", "onnxruntime", a,
            "torch", b, "ms", b / a, "B/A",
            note=f"export {measured['export_seconds'][name]:.1f} s; onnxruntime vs torch relative error "
                 f"{measured['onnx_relative_error'][name]:.2g} on the sample frame"))
    return comparisons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="frame width and height, a multiple of 32")
    parser.add_argument("--repetitions", type=int, default=5, help="timed encodes per side (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="128 px, 2 repetitions: checks that it runs")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size, repetitions = (128, 2) if args.quick else (args.size, args.repetitions)
    if size <= 0 or size % 32:
        parser.error(f"--size must be a positive multiple of 32, got {size}")
    torch.set_flush_denormal(True)  # as the engine does on a CPU: random DC-AE weights hit denormals
    flops = encoder_flops(size)
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure(size, repetitions, Path(tmp))
    comparisons = compare_sides(measured, flops, size, repetitions)
    machine = {**machine_info(), "other_processes_cpu_share": {"timed encodes": measured["other_cpu_share"]}}
    meta = {"machine": machine,
            "settings": {"preset": "published TAESANA encoder vs real-size DC-AE f32c32 encoder", "width": size,
                         "height": size, "frames": repetitions, "batch": 1},
            "flops": flops, "measured": measured}
    write_results(args.output, "taesana", comparisons, meta)
    print(text_table(comparisons))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
