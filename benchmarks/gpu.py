"""Real-size GPU benchmark (issue 19), the benchmark step of ``make gpu-check`` (scripts/gpu_check.sh).

    python -m benchmarks.gpu --model DIR [--cases tensorrt-tiny,torch-tiny,...] [--frames N] [--append]
    python -m benchmarks.gpu --dry-run [--model DIR] [--cases ...]      (a CPU smoke run of everything but TensorRT)

Frames per second and latency of the StreamEngine at 512 px, 1 step, bf16, for each case of the matrix: TensorRT
and torch on CUDA, with the tiny autoencoder (TAESANA plan) or DC-AE, with or without one ControlNet, each at 1
and at 4 streams. Compiled parts are built for 4 streams, as ``serve`` builds them on a GPU for its default 4
peers, so the 1-stream rows run the batch-4 engines with padding rows (what one peer gets from the server). A
"call" is ``StreamEngine.process`` with one new frame per stream (preprocessing, encode, transformer, decode,
and the copy back to the host); with 1 step each frame leaves in the call it entered, so the call time is the
frame's latency through the engine.

Cases run in the order given (priority: TensorRT with the tiny autoencoder first). Results are written after
every measurement (``gpu.json`` and ``gpu.md`` in ``--output-dir``), so a run cut short keeps what it measured;
``--append`` merges into an earlier run's file; a case that cannot start before ``--deadline-s`` is recorded as
skipped, and a case that fails is recorded with its error while the next one runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.frames import camera_frames
from benchmarks.report import machine_info

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BACKENDS = ("tensorrt", "torch", "onnxruntime")  # onnxruntime: the CPU stand-in of --dry-run
AUTOENCODERS = ("tiny", "dcae")
PROMPT = "a watercolor painting of a city street at night, warm golden lighting"
# the targets on an H100-class GPU: (case, streams, frames per second); StreamDiffusion: 91-94 fps
TARGETS = (("tensorrt-tiny", 1, 100.0), ("tensorrt-tiny-cn", 1, 60.0))
# A compiled case's image may differ from torch's by this much on average (uint8 levels) before its row is
# "wrong output": bf16 engines differ by 1-4 levels on the tiny model (tests/test_engines_tensorrt_gpu.py); a NaN or
# garbage engine by tens. Its fps are then not a result.
OUTPUT_LIMIT = 8.0
# statuses written before a step ends, so a step killed by its time limit leaves them, not a missing row
BUILDING, MEASURING = "building", "measuring"


@dataclass(frozen=True)
class Case:
    backend: str
    autoencoder: str
    controlnet: bool

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.autoencoder}" + ("-cn" if self.controlnet else "")

    @classmethod
    def parse(cls, name: str) -> Case:
        parts = name.strip().split("-")
        controlnet = parts[-1] == "cn"
        parts = parts[:-1] if controlnet else parts
        if len(parts) != 2 or parts[0] not in BACKENDS or parts[1] not in AUTOENCODERS:
            raise ValueError(f"case must be BACKEND-AUTOENCODER[-cn] with BACKEND in {BACKENDS} and AUTOENCODER in "
                             f"{AUTOENCODERS}, got {name!r}")
        return cls(parts[0], parts[1], controlnet)


DEFAULT_CASES = tuple(Case(b, a, cn) for a, b in (("tiny", "tensorrt"), ("tiny", "torch"), ("dcae", "tensorrt"),
                                                   ("dcae", "torch")) for cn in (False, True))


@dataclass(frozen=True)
class GpuBenchConfig:
    model: Path
    cases: tuple[Case, ...] = DEFAULT_CASES
    width: int = 512
    height: int = 512
    frames: int = 60  # timed calls per setting
    warmup: int = 3
    streams: tuple[int, ...] = (1, 4)
    built_streams: int = 4  # compiled parts are built for this many streams (serve's default --max-peers)
    device: str = "cuda"
    dtype: str = "bfloat16"
    precision: str = "bf16"
    cache_dir: Path | None = None  # engine cache; None: the default (~/.cache/sana-stream/engines)
    tiny_vae: str | None = None  # taesana_*.pth directory; None: the model's tiny_autoencoder/
    controlnet: str | None = None  # a Sprint ControlNet; None: the model's controlnet/
    deadline_s: float | None = None  # no case starts after this many seconds
    tf32: bool = False  # TensorRT: TF32 for the fp32 islands of the bf16 engines (docs/gpu.md, "Precision")
    output_dir: Path = RESULTS_DIR


@dataclass
class Measurement:
    case: str
    streams: int
    status: str  # "ok", "error" or "skipped"
    fps: float | None = None  # frames per second over all streams
    fps_per_stream: float | None = None
    median_ms: float | None = None  # per call = per frame of each stream (1 step)
    p95_ms: float | None = None
    calls: int = 0
    setup_s: dict[str, float] = field(default_factory=dict)  # export / build / load of the case's parts
    diff_mean: float | None = None  # the output against torch's on the same frame: mean |a - b|, uint8 levels
    diff_max: float | None = None
    error: str = ""


@dataclass
class Loaded:
    """The model, loaded once per run, and what every case shares."""

    path: Path
    pipe: Any
    placement: Any
    prompt_encoder: Any
    controlnets: list[Any] | None = None
    torch_images: dict[tuple[str, bool], Any] = field(default_factory=dict)  # output_check's references


def load(config: GpuBenchConfig) -> Loaded:
    from stream.loading import choose_placement, load_pipeline, resolve_model_dir
    from stream.prompt import PromptEncoder

    placement = choose_placement(config.device, config.dtype)
    path = resolve_model_dir(config.model)
    pipe = load_pipeline(path, placement)
    return Loaded(path, pipe, placement, PromptEncoder(pipe, 300))


def build_engine(case: Case, loaded: Loaded, config: GpuBenchConfig) -> tuple[Any, dict[str, float]]:
    """A StreamEngine for ``case`` over the loaded networks, and its parts' export/build/load times."""
    from engines.compile import CompileOptions, compile_backend
    from engines.specs import BuildSpec
    from engines.torch_backend import TorchBackend
    from stream.config import StreamConfig
    from stream.control import ControlNetConfig
    from stream.engine import StreamEngine
    from stream.loading import load_autoencoders, load_controlnets

    nets = (ControlNetConfig(config.controlnet or str(loaded.path / "controlnet"), "canny", 1.0),) \
        if case.controlnet else ()
    stream_config = StreamConfig(width=config.width, height=config.height, t_list=(1.0,), prompt=PROMPT, seed=0,
                                 device=config.device, dtype=config.dtype, encoder=case.autoencoder,
                                 decoder=case.autoencoder, tiny_vae=config.tiny_vae, controlnets=nets)
    pipe, placement = loaded.pipe, loaded.placement
    encoder, decoder = load_autoencoders(loaded.path, stream_config, placement, int(pipe.vae.config.latent_channels))
    if nets and loaded.controlnets is None:
        loaded.controlnets = load_controlnets(nets, placement)
    torch_backend = TorchBackend(pipe.transformer, pipe.vae, encoder=encoder, decoder=decoder,
                                 controlnets=loaded.controlnets if nets else [])
    backend, seconds = torch_backend, {}
    if case.backend != "torch":
        spec = BuildSpec(width=config.width, height=config.height, steps=1, streams=config.built_streams,
                         kv_length=300)
        options = CompileOptions(streams=config.built_streams, precision=config.precision, tf32=config.tf32,
                                 **({"cache_dir": config.cache_dir} if config.cache_dir else {}))
        parts = compile_backend(torch_backend, spec, options, case.backend)
        backend, seconds = parts.backend, {k: round(v, 2) for k, v in sorted(parts.seconds.items())}
    engine = StreamEngine(backend, loaded.prompt_encoder, stream_config,
                          sigma_d=float(pipe.scheduler.config.sigma_data))
    return engine, seconds


def measure(engine: Any, streams: int, calls: int, warmup: int) -> list[float]:
    """Seconds of each timed call with one new frame for each of ``streams`` streams."""
    ids = ["default", *(f"s{i}" for i in range(1, streams))]
    for i, sid in enumerate(ids[1:], 1):
        if sid not in engine.stream_ids():
            engine.add_stream(sid, seed=i)
    frames = camera_frames(8, engine.config.width, engine.config.height)
    times = []
    for k in range(warmup + calls):
        batch = {sid: frames[(k + j) % len(frames)] for j, sid in enumerate(ids)}
        started = time.perf_counter()
        engine.process(batch)  # returns uint8 images on the host: the GPU work is done
        if k >= warmup:
            times.append(time.perf_counter() - started)
    return times


def output_image(engine: Any) -> Any:
    """The default stream's image of one fixed frame: with 1 step it depends on that frame and the noise only."""
    frame = camera_frames(1, engine.config.width, engine.config.height)[0]
    return engine.process({"default": frame})["default"].image


def output_check(case: Case, engine: Any, loaded: Loaded, config: GpuBenchConfig) -> tuple[float, float]:
    """(mean, max) |a - b| of ``engine``'s image against torch's for the same setting (torch built on the loaded
    networks, once per setting), at the benchmark's real size."""
    import numpy as np

    key = (case.autoencoder, case.controlnet)
    if key not in loaded.torch_images:
        torch_engine, _ = build_engine(Case("torch", case.autoencoder, case.controlnet), loaded, config)
        loaded.torch_images[key] = output_image(torch_engine).astype(np.int16)
    diff = np.abs(output_image(engine).astype(np.int16) - loaded.torch_images[key])
    return round(float(diff.mean()), 3), float(diff.max())


def summarize(case: Case, streams: int, times: list[float], setup: dict[str, float]) -> Measurement:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return Measurement(case.name, streams, "ok", fps=round(streams * len(times) / sum(times), 2),
                       fps_per_stream=round(len(times) / sum(times), 2),
                       median_ms=round(1e3 * statistics.median(times), 2), p95_ms=round(1e3 * p95, 2),
                       calls=len(times), setup_s=setup)


def run_case(case: Case, loaded: Loaded, config: GpuBenchConfig, record: Any) -> None:
    """Measures ``case`` at every stream count, recording each result as it comes (and "building" /
    "measuring" before, which a step killed by its time limit leaves behind). A compiled case's output is checked
    against torch's first: a row whose image is wrong is "wrong output", whatever its speed."""
    for streams in config.streams:
        record(Measurement(case.name, streams, BUILDING, error="the step's time limit ended the build (a rerun "
                           "continues from the engines already in the cache)"))
    try:
        engine, setup = build_engine(case, loaded, config)
    except Exception as exc:  # recorded in the report; the next case runs (a benchmark harness, not the server)
        logger.exception("case %s could not start", case.name)
        for streams in config.streams:
            record(Measurement(case.name, streams, "error", error=f"{type(exc).__name__}: {exc}"))
        return
    try:
        diff: tuple[float | None, float | None] = (None, None)
        for streams in config.streams:
            record(Measurement(case.name, streams, MEASURING, setup_s=setup,
                               error="the step's time limit ended the measurement"))
        if case.backend != "torch":
            diff = output_check(case, engine, loaded, config)
        for streams in config.streams:
            try:
                times = measure(engine, streams, config.frames, config.warmup)
            except Exception as exc:  # as above
                logger.exception("case %s at %d streams failed", case.name, streams)
                record(Measurement(case.name, streams, "error", setup_s=setup, error=f"{type(exc).__name__}: {exc}"))
                continue
            row = summarize(case, streams, times, setup)
            row.diff_mean, row.diff_max = diff
            if row.diff_mean is not None and not row.diff_mean <= OUTPUT_LIMIT:
                row.status, row.error = "wrong output", (f"differs from torch by {row.diff_mean:g} levels on "
                                                         f"average (limit {OUTPUT_LIMIT:g}): not a valid result")
            record(row)
    finally:
        engine.backend.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class Report:
    """The results file: measurements keyed by (case, streams), rewritten after every change."""

    def __init__(self, config: GpuBenchConfig, notes: list[str], append: bool) -> None:
        self.json_path = config.output_dir / "gpu.json"
        self.md_path = config.output_dir / "gpu.md"
        self.results: dict[tuple[str, int], Measurement] = {}
        if append and self.json_path.is_file():
            for item in json.loads(self.json_path.read_text()).get("results", []):
                self.results[(item["case"], item["streams"])] = Measurement(**item)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
        settings["cases"] = [c.name for c in config.cases]
        self.meta = {"machine": gpu_machine_info(), "settings": settings, "notes": notes}

    def record(self, measurement: Measurement) -> None:
        self.results[(measurement.case, measurement.streams)] = measurement
        logger.info("%s", measurement)
        self.save()

    def save(self) -> None:
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        data = {**self.meta, "results": [dataclasses.asdict(m) for m in self.ordered()],
                "targets": [target_verdict(self.results, *t) for t in TARGETS]}
        self.json_path.write_text(json.dumps(data, indent=2) + "\n")
        self.md_path.write_text(render_markdown(data))

    def ordered(self) -> list[Measurement]:
        order = {c.name: i for i, c in enumerate(DEFAULT_CASES)}
        return sorted(self.results.values(), key=lambda m: (order.get(m.case, len(order)), m.case, m.streams))


def target_verdict(results: dict[tuple[str, int], Measurement], case: str, streams: int,
                   fps: float) -> dict[str, Any]:
    m = results.get((case, streams))
    measured = m.fps if m is not None and m.status == "ok" else None
    verdict = "not measured" if measured is None else ("pass" if measured >= fps else "FAIL")
    return {"case": case, "streams": streams, "target_fps": fps, "measured_fps": measured, "verdict": verdict}


def gpu_machine_info() -> dict[str, Any]:
    info = machine_info()
    info["torch_cuda"] = torch.version.cuda
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def render_markdown(data: dict[str, Any]) -> str:
    s, m = data["settings"], data["machine"]
    torch_fps = {(r["case"].replace("tensorrt-", "torch-", 1), r["streams"]): r["fps"]
                 for r in data["results"] if r["case"].startswith("torch-") and r["status"] == "ok"}
    rows = []
    for r in data["results"]:
        vs = ""
        base = torch_fps.get((r["case"].replace("tensorrt-", "torch-", 1), r["streams"]))
        if r["case"].startswith("tensorrt-") and r["status"] == "ok" and base:
            vs = f"{r['fps'] / base:.2f}x"
        builds = sum(v for k, v in r["setup_s"].items() if k.startswith(("export_", "build_")))
        status = {BUILDING: "building / timed out", MEASURING: "measuring / timed out"}.get(r["status"], r["status"])
        if r.get("error"):
            status += f": {r['error'][:160]}"
        diff = "" if r.get("diff_mean") is None else f"{r['diff_mean']:.3g} / {r['diff_max']:.0f}"
        cells = [r["case"], str(r["streams"]), fmt(r["fps"]), fmt(r["fps_per_stream"]), fmt(r["median_ms"]),
                 fmt(r["p95_ms"]), vs, diff, f"{builds:.0f}" if builds else "", status]
        rows.append("| " + " | ".join(cells) + " |")
    targets = "\n".join(f"- {t['case']}, {t['streams']} stream: >= {t['target_fps']:g} fps: **{t['verdict']}**"
                        + (f" ({t['measured_fps']:g} fps)" if t["measured_fps"] is not None else "")
                        for t in data["targets"])
    notes = "\n".join(f"- {n}" for n in data["notes"])
    return (f"# GPU benchmark (make gpu-check)\n\n"
            f"{m.get('cuda') or 'no CUDA device'}; torch {m['torch']} (CUDA {m.get('torch_cuda')}), TensorRT "
            f"{m.get('tensorrt')}; {m['date']}. Model `{s['model']}`, {s['width']}x{s['height']} px, 1 step, "
            f"{s['dtype']}; compiled parts built for {s['built_streams']} streams; {s['frames']} timed calls after "
            f"{s['warmup']} warm-up calls per row.\n\n"
            f"fps = frames per second over all streams; per stream = each stream's frame rate; median / p95 = "
            f"time of one call (one frame per stream), which with 1 step is each frame's latency through the "
            f"engine; vs torch = fps against the torch-on-CUDA row of the same setting; vs torch image = mean / "
            f"max |a - b| of one frame's uint8 image against torch's (a mean above {OUTPUT_LIMIT:g} is \"wrong "
            f"output\"); build = export + TensorRT build seconds of the case's parts (0 when cached).\n\n"
            f"| case | streams | fps | fps per stream | median ms | p95 ms | vs torch | vs torch image | build s | "
            f"status |\n"
            f"| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
            f"## Targets (H100-class GPU)\n\n{targets}\n" + (f"\n## Notes\n\n{notes}\n" if notes else ""))


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, GpuBenchConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="diffusers-format directory (the `real` preset)")
    parser.add_argument("--cases", default=None, help="comma-separated, in the order to run (default: all 8)")
    parser.add_argument("--frames", type=int, default=None, help="timed calls per setting (default 60)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: serve's)")
    parser.add_argument("--tiny-vae", default=None, help="taesana_*.pth directory (default: the model's)")
    parser.add_argument("--controlnet", default=None, help="a Sprint ControlNet (default: the model's)")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no case after this many seconds")
    parser.add_argument("--tf32", action="store_true", help="TensorRT engines with TF32 for their fp32 islands")
    parser.add_argument("--append", action="store_true", help="merge into the existing gpu.json")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes; repeatable")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="default: benchmarks/results (with --dry-run: a new temporary directory, never that one)")
    parser.add_argument("--build-only", action="store_true", help="build (or find in the cache) every case's "
                        "compiled parts and measure nothing: gpu-check's prebuild step")
    parser.add_argument("--report-only", action="store_true", help="write the report (notes, earlier results with "
                        "--append) and measure nothing: for a gpu-check that stopped before the benchmark")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke run: the tiny model at 64 px, 2 calls, float32 (TensorRT cases fail here)")
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    try:
        cases = tuple(Case.parse(c) for c in args.cases.split(",")) if args.cases else DEFAULT_CASES
    except ValueError as exc:
        parser.error(str(exc))
    if args.model is None and not (args.dry_run or args.report_only):
        parser.error("--model is required (write the real-size model with: sana-stream make-tiny-model DIR "
                     "--preset real)")
    if args.output_dir is None:  # a dry run's CPU figures never land where real GPU results live (issue 32)
        args.output_dir = Path(tempfile.mkdtemp(prefix="sana-stream-gpu-dry-run-")) if args.dry_run else RESULTS_DIR
    common = {"cases": cases, "cache_dir": args.cache_dir, "tiny_vae": args.tiny_vae, "controlnet": args.controlnet,
              "deadline_s": args.deadline_s, "output_dir": args.output_dir, "tf32": args.tf32}
    if args.dry_run:
        config = GpuBenchConfig(model=args.model or Path(), width=64, height=64, frames=args.frames or 2, warmup=1,
                                device="cpu", dtype="float32", precision="fp32", **common)
    else:
        config = GpuBenchConfig(model=args.model or Path(), frames=args.frames or 60, **common)
    return args, config


def prebuild(config: GpuBenchConfig) -> int:
    """Builds every compiled case's parts into the engine cache (each finished part stays there, so a prebuild
    cut short by its time limit is continued by the next run); 1 when a case could not be built."""
    loaded, failed = load(config), 0
    for case in (c for c in config.cases if c.backend != "torch"):
        started = time.monotonic()
        try:
            engine, setup = build_engine(case, loaded, config)
        except Exception:  # logged with its cause; the next case still builds (a harness, not the server)
            logger.exception("prebuild: %s could not be built", case.name)
            failed = 1
            continue
        engine.backend.close()
        logger.info("prebuild: %s ready in %.0f s (%s)", case.name, time.monotonic() - started, setup)
    return failed


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sana-stream-gpu-bench-") as tmp:
        if args.dry_run and args.model is None:
            from stream.demo_model import make_demo_model

            config = dataclasses.replace(config, model=make_demo_model(Path(tmp) / "model"))
        if args.build_only:
            return prebuild(config)
        notes = [*args.note, *(["dry run on the CPU: not a GPU measurement"] if args.dry_run else [])]
        report = Report(config, notes, args.append)
        report.save()
        if args.report_only:
            return 0
        loaded = load(config)
        for case in config.cases:
            if config.deadline_s is not None and time.monotonic() - started > config.deadline_s:
                for streams in config.streams:
                    report.record(Measurement(case.name, streams, "skipped", error="out of time"))
                continue
            run_case(case, loaded, config, report.record)
    logger.info("results in %s and %s", report.json_path, report.md_path)
    print(f"results: {report.md_path} and {report.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
