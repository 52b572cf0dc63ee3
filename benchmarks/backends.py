"""Backend benchmark (GitHub issue 6): the same StreamEngine on torch eager and on onnxruntime (CPU), in one run.

    python -m benchmarks.backends [--quick] [--frames N] [--preset proportional|tiny] [--width W] [--height H]
    python -m benchmarks.backends --model DIR_OR_HUB_ID --device cuda --compiled tensorrt --precision bf16
    python -m benchmarks.backends --compiled torch-compile      (Inductor; results in backends_torch_compile.*)

By default it writes a randomly initialised Sana-Sprint (the ``proportional`` preset: the real 0.6B's share of
work per part at 1/236 of its FLOPs) to a temporary directory; ``--model`` takes real weights instead. It loads
the model once, exports and builds the compiled parts (onnxruntime by default, or tensorrt on a GPU) into a
fresh engine cache (timed, with the parity check), and then runs the eager and the compiled engine on the same
frames with the sides interleaved (medians): frames per second, each model call, and their ratios.

Results: a table on stdout, ``backends.json`` and ``backends.md`` in ``--output-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.frames import camera_frames, mean_abs_diff
from benchmarks.report import Comparison, machine_info, text_table, write_results
from benchmarks.timing import MODEL_CALLS, TimedBackend, cpu_snapshot, interleave, median_of, other_cpu_share
from engines import BackendName
from engines.compile import compile_backend
from engines.compile_options import CompileOptions
from engines.specs import BuildSpec
from stream.config import StreamConfig
from stream.engine import DEFAULT_STREAM, FrameKind, StreamEngine
from stream.demo_model import DemoPreset, make_demo_model

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BackendBenchConfig:
    preset: str = DemoPreset.PROPORTIONAL.value
    width: int = 512
    height: int = 512
    frames: int = 20  # timed frames per side
    warmup: int = 2
    t_list: tuple[float, ...] = (1.0,)
    prompt: str = "a watercolor painting of a city street at night, warm golden lighting"
    seed: int = 0
    output_dir: Path = RESULTS_DIR
    cache_dir: Path | None = None  # None: a fresh temporary cache, so export and build are timed from scratch
    device: str = "cpu"
    compiled: str = BackendName.ONNXRUNTIME.value
    precision: str | None = None  # None: fp32 for onnxruntime, bf16 for tensorrt
    encoder: str = "dcae"  # dcae or tiny (then tiny_vae names the taesana_*.pth directory)
    decoder: str = "dcae"  # dcae, tiny or dcae-lite
    tiny_vae: str | None = None
    kv_length: int | None = None  # None: all 300 prompt tokens

    def stream_config(self) -> StreamConfig:
        """The eager side runs in float32 against fp32 engines, else in bfloat16 (torch has no fp16 Sana)."""
        precision = self.precision or ("bf16" if self.compiled == BackendName.TENSORRT.value else "fp32")
        dtype = "float32" if precision == "fp32" else "bfloat16"
        return StreamConfig(width=self.width, height=self.height, t_list=self.t_list, prompt=self.prompt,
                            seed=self.seed, device=self.device, dtype=dtype, encoder=self.encoder,
                            decoder=self.decoder, tiny_vae=self.tiny_vae)


def run_benchmark(config: BackendBenchConfig, model: str | Path,
                  cache_dir: Path) -> tuple[list[Comparison], dict[str, Any]]:
    load_started = time.perf_counter()
    eager = StreamEngine.from_pretrained(model, config.stream_config())
    load_s = time.perf_counter() - load_started
    spec = BuildSpec(width=config.width, height=config.height, steps=len(config.t_list), streams=1,
                     kv_length=config.kv_length or eager.config.max_sequence_length)
    build_started = time.perf_counter()
    options = CompileOptions(cache_dir=cache_dir, check=True, precision=config.precision)
    parts = compile_backend(eager.backend, spec, options, config.compiled)
    build_s = time.perf_counter() - build_started
    name = config.compiled
    timed = {"torch": TimedBackend(eager.backend), name: TimedBackend(parts.backend)}
    engines = {label: StreamEngine(backend, eager.prompt_encoder, eager.config, sigma_d=eager.sigma_d)
               for label, backend in timed.items()}
    frames = camera_frames(16, config.width, config.height)
    outputs: dict[str, dict[int, np.ndarray]] = {label: {} for label in engines}

    def side(label: str) -> Callable[[int], Mapping[str, float]]:
        def run(i: int) -> Mapping[str, float]:
            timed[label].reset()
            result = engines[label].process({DEFAULT_STREAM: frames[i % len(frames)]}, {DEFAULT_STREAM: i})
            frame = result[DEFAULT_STREAM]
            if frame.kind is FrameKind.GENERATED:
                outputs[label][frame.tag] = frame.image
            return {part: timed[label].seconds(part) for part in MODEL_CALLS}
        return run

    snapshot = cpu_snapshot()
    device = eager.backend.geometry.device
    samples = interleave({n: side(n) for n in engines}, config.frames, config.warmup, device)
    contention = other_cpu_share(snapshot, cpu_snapshot())
    ort, eag = samples[name], samples["torch"]
    same = sorted(set(outputs["torch"]) & set(outputs[name]))
    diff = float(np.mean([mean_abs_diff(outputs["torch"][i], outputs[name][i]) for i in same])) if same else -1.0
    comparisons = [Comparison(
        key=f"{name}_vs_torch",
        title=f"StreamEngine, {len(config.t_list)} step: {name} vs torch eager ({device.type})",
        a_label=name, a=1 / median_of(ort), b_label="torch", b=1 / median_of(eag), unit="fps",
        ratio=median_of(eag) / median_of(ort), ratio_of="A/B",
        note=(f"{options.resolved_precision(BackendName(name)).value} compiled, "
              f"{eager.backend.geometry.dtype} eager; the frames agree to {diff:.3f} of 255 on average over "
              f"{len(same)} frames; "
              f"parity of the exported parts (relative error): "
              + ", ".join(f"{c.value} {r.relative_error:.1e}" for c, r in parts.parity.items())),
        details={f"{name}_ms": [round(1e3 * s["wall"], 3) for s in ort],
                 "torch_ms": [round(1e3 * s["wall"], 3) for s in eag], "output_mean_abs_diff_uint8": diff},
    )]
    for part in MODEL_CALLS:
        a, b = median_of(ort, part), median_of(eag, part)
        comparisons.append(Comparison(
            key=f"{part}_{name}_vs_torch", title=f"{part} call: {name} vs torch eager", a_label=name,
            a=1e3 * a, b_label="torch", b=1e3 * b, unit="ms", ratio=b / a, ratio_of="B/A"))
    seconds = {k: round(v, 2) for k, v in sorted(parts.seconds.items())}
    meta = {"machine": {**machine_info(), "other_processes_cpu_share": {"whole run": contention}},
            "settings": {**dataclasses.asdict(config), "output_dir": str(config.output_dir),
                         "cache_dir": str(cache_dir)},
            "model_load_s": round(load_s, 2), "export_and_build_s": round(build_s, 2), "build_steps_s": seconds,
            "parity": {c.value: dataclasses.asdict(r) for c, r in parts.parity.items()}}
    return comparisons, meta


def append_build_times(md_path: Path, meta: dict[str, Any]) -> None:
    rows = "\n".join(f"| {name} | {s:.2f} |" for name, s in meta["build_steps_s"].items())
    compiled = meta["settings"]["compiled"]
    md_path.write_text(md_path.read_text() + (
        f"\n## Export and build ({compiled}, with the parity check)\n\n"
        f"Total {meta['export_and_build_s']:.1f} s (model load {meta['model_load_s']:.1f} s, not included). "
        f"`export_*` is torch.export + ONNX + polygraphy folding (+ the fp32 parity check), `build_*` the "
        f"TensorRT build (tensorrt only), `load_*` creating the session or execution context with its "
        f"buffers, `compile` torch.compile of every part with its warm-up runs (torch-compile only, no "
        f"export).\n\n| step | seconds |\n| --- | --- |\n{rows}\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 frames per side, 256 px, for a smoke run")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--preset", default=DemoPreset.PROPORTIONAL.value, choices=[p.value for p in DemoPreset])
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--model", default=None, help="real weights (directory or hub id) instead of a tiny model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compiled", default=BackendName.ONNXRUNTIME.value,
                        choices=[BackendName.ONNXRUNTIME.value, BackendName.TENSORRT.value,
                                 BackendName.TORCH_COMPILE.value],
                        help="the compiled side; torch-compile writes backends_torch_compile.md/.json")
    parser.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--encoder", default="dcae", choices=["dcae", "tiny"])
    parser.add_argument("--decoder", default="dcae", choices=["dcae", "tiny", "dcae-lite"])
    parser.add_argument("--tiny-vae", default=None, help="directory of taesana_*.pth (with --encoder/--decoder tiny)")
    parser.add_argument("--kv-length", type=int, default=None, help="prompt tokens the engines hold (default 300)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: a fresh temporary one)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = 256 if args.quick else 512
    config = BackendBenchConfig(preset=args.preset, width=args.width or size, height=args.height or size,
                                frames=args.frames or (2 if args.quick else 20), warmup=1 if args.quick else 2,
                                output_dir=args.output_dir, cache_dir=args.cache_dir, device=args.device,
                                compiled=args.compiled, precision=args.precision, encoder=args.encoder,
                                decoder=args.decoder, tiny_vae=args.tiny_vae, kv_length=args.kv_length)
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory(prefix="sana-stream-bench-") as tmp:
        model = args.model or make_demo_model(Path(tmp) / "model", preset=config.preset)
        comparisons, meta = run_benchmark(config, model, config.cache_dir or Path(tmp) / "engines")
    meta["settings"]["model"] = str(args.model or f"tiny:{config.preset}")
    meta["settings"]["frames"] = config.frames
    results = "backends_torch_compile" if config.compiled == BackendName.TORCH_COMPILE.value else "backends"
    json_path, md_path = write_results(config.output_dir, results, comparisons, meta)
    append_build_times(md_path, meta)
    logger.info("results:\n%s\nexport and build: %s\nwritten to %s and %s", text_table(comparisons),
                meta["build_steps_s"], json_path, md_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
