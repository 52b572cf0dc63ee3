"""`make device-check`: one prepared run for an offline GPU machine with PyTorch alone (docs/gpu.md).

    python3 -m benchmarks.device_check [--budget-s 450] [--cases eager-tiny,...] [--output-dir DIR]
    python3 -m benchmarks.device_check --dry-run --output-dir DIR      (the same steps on the CPU, demo model)

The ``real`` preset's networks (Sana-Sprint 0.6B, DC-AE f32c32, TAESANA's plan; random weights) are created
directly on the GPU in bf16, nothing is read from or written to disk but the results and Inductor's cache. Each
case runs the StreamEngine at 512 px, 1 step, at 1 and at 4 streams, with one autoencoder (tiny or DC-AE) on one
variant: torch eager, torch with CUDA graphs (the eager parts on fixed buffers, captured once), torch-compile with
our CUDA graph capture, or torch-compile with Inductor's (``mode="reduce-overhead"``). Compiled variants build
their parts for the row's stream count. Per row: frames per second over all streams, p50 and p95 of one call
(``StreamEngine.process``, host frame in, host image out), peak GPU memory, and the output's difference from eager
(mean and max |a - b| of the uint8 image, the same input frame and noise).

Each case runs in a child process with its own time limit (a slow compile costs its own case, not the run); a case
that cannot finish is a "timed out" row. ``device_check.md`` and ``.json`` are rewritten after every case, so a run
cut short keeps what it measured; the table is printed at the end. ``--dry-run`` writes nowhere near
benchmarks/results/ unless told: its figures are CPU figures of a toy model.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROMPT = "a watercolor painting of a city street at night, warm golden lighting"
STREAMS = (1, 4)  # the default; --streams


class Variant(str, enum.Enum):
    EAGER = "eager"  # TorchBackend: diffusers' modules, eager
    GRAPHS = "graphs"  # the same modules on fixed buffers, each part captured in a CUDA graph
    COMPILE = "compile"  # torch-compile, our CUDA graph capture (TorchCompileGraphs.OWN)
    COMPILE_RO = "compile-ro"  # torch-compile, mode="reduce-overhead" (Inductor's CUDA graph trees)


class Autoencoder(str, enum.Enum):
    TINY = "tiny"
    DCAE = "dcae"


@dataclass(frozen=True)
class Case:
    variant: Variant
    autoencoder: Autoencoder
    limit_s: int  # this case's own time limit (less when the run has less left)

    @property
    def name(self) -> str:
        return f"{self.variant.value}-{self.autoencoder.value}"


# most important first: the tiny autoencoder (the fast path), eager first (every difference is against it)
CASES = (Case(Variant.EAGER, Autoencoder.TINY, 60), Case(Variant.GRAPHS, Autoencoder.TINY, 60),
         Case(Variant.COMPILE, Autoencoder.TINY, 150), Case(Variant.EAGER, Autoencoder.DCAE, 60),
         Case(Variant.GRAPHS, Autoencoder.DCAE, 60), Case(Variant.COMPILE, Autoencoder.DCAE, 150),
         Case(Variant.COMPILE_RO, Autoencoder.TINY, 120), Case(Variant.COMPILE_RO, Autoencoder.DCAE, 120))


@dataclass
class Row:
    case: str
    streams: int
    status: str  # "ok", "error", "timed out", "skipped"
    fps: float | None = None  # frames per second over all streams
    p50_ms: float | None = None  # one call: one new frame per stream, host to host
    p95_ms: float | None = None
    peak_gpu_mb: float | None = None
    diff_mean: float | None = None  # |this - eager| on the uint8 image, levels of 255
    diff_max: float | None = None
    setup_s: float | None = None  # building (and compiling) the row's backend
    compiled: int | None = None  # Inductor graphs compiled for the row (0: all from the cache)
    cached: int | None = None  # Inductor graphs loaded from the cache
    error: str = ""  # why the row failed, or what it ran without (a part whose CUDA graph capture failed)


@dataclass(frozen=True)
class Settings:
    dry_run: bool
    width: int
    height: int
    frames: int  # timed calls per row
    warmup: int
    device: str
    dtype: str
    cache_dir: str  # engine cache root: Inductor's caches live under it
    streams: tuple[int, ...] = STREAMS


def settings_for(dry_run: bool, frames: int | None, cache_dir: Path | None, streams: tuple[int, ...]) -> Settings:
    from engines.cache import default_cache_dir

    cache = str(cache_dir or default_cache_dir())
    if dry_run:  # the tiny demo model at 64 px in float32: checks every step, measures nothing real
        return Settings(True, 64, 64, frames or 3, 1, "cpu", "float32", cache, streams)
    return Settings(False, 512, 512, frames or 60, 3, "cuda", "bfloat16", cache, streams)


# ---- the child: one case -------------------------------------------------------------------------------


@dataclass
class Model:
    pipe: Any
    tiny: Any


def make_model(settings: Settings) -> Model:
    """The networks, created where they run: the ``real`` preset on the GPU in bf16 (each network made on the GPU
    and cast at once, as ``make-tiny-model`` does; nothing goes through the disk), or the tiny preset on the CPU.
    Same seed, same device: every case gets the same weights."""
    import torch

    from engines.models.tiny_autoencoder import TinyAutoencoder, TinyAutoencoderConfig, TinyDecoder, TinyEncoder
    from stream.demo_extras import TINY_PRESET_AUTOENCODER
    from stream.demo_model import PRESETS, REAL_SPEC, DemoPreset, build_demo_pipeline

    spec = PRESETS[DemoPreset.TINY] if settings.dry_run else REAL_SPEC
    dtype = getattr(torch, settings.dtype)
    with torch.device(settings.device):
        pipe = build_demo_pipeline(dataclasses.replace(spec, dtype=settings.dtype))
        if settings.device == "cpu":
            torch.set_flush_denormal(True)  # as stream.loading does: random small weights hit denormals
        plan = TINY_PRESET_AUTOENCODER if settings.dry_run else TinyAutoencoderConfig()
        plan = dataclasses.replace(plan, latent_channels=int(pipe.vae.config.latent_channels))
        torch.manual_seed(1)
        tiny = TinyAutoencoder(TinyEncoder(plan), TinyDecoder(plan)).to(dtype).eval()
    return Model(pipe, tiny)


def make_engine(model: Model, case: Case, settings: Settings, streams: int) -> Any:
    from engines import BackendName
    from engines.compile import compile_backend, compile_with_torch
    from engines.compile_options import CompileOptions, TorchCompileGraphs
    from engines.specs import BuildSpec
    from engines.torch_backend import TorchBackend
    from stream.config import StreamConfig
    from stream.engine import StreamEngine
    from stream.prompt import PromptEncoder

    ae = case.autoencoder.value
    config = StreamConfig(width=settings.width, height=settings.height, t_list=(1.0,), prompt=PROMPT, seed=0,
                          device=settings.device, dtype=settings.dtype, encoder=ae, decoder=ae)
    tiny = model.tiny if case.autoencoder is Autoencoder.TINY else None
    backend: Any = TorchBackend(model.pipe.transformer, model.pipe.vae, encoder=tiny, decoder=tiny)
    if case.variant is not Variant.EAGER:
        graphs = TorchCompileGraphs.REDUCE_OVERHEAD if case.variant is Variant.COMPILE_RO else TorchCompileGraphs.OWN
        options = CompileOptions(streams=streams, cache_dir=Path(settings.cache_dir), torch_compile_graphs=graphs)
        spec = BuildSpec(width=settings.width, height=settings.height, steps=1, streams=streams, kv_length=300)
        if case.variant is Variant.GRAPHS:
            backend = compile_with_torch(backend, spec, options, compile=False).backend
        else:
            backend = compile_backend(backend, spec, options, BackendName.TORCH_COMPILE).backend
    return StreamEngine(backend, PromptEncoder(model.pipe, 300), config,
                        sigma_d=float(model.pipe.scheduler.config.sigma_data))


def time_calls(engine: Any, streams: int, settings: Settings) -> tuple[list[float], np.ndarray]:
    """Seconds of each timed call (one new frame per stream), and the default stream's image of a fixed frame."""
    from benchmarks.frames import camera_frames

    ids = ["default", *(f"s{i}" for i in range(1, streams))]
    for i, sid in enumerate(ids[1:], 1):
        engine.add_stream(sid, seed=i)
    frames = camera_frames(8, settings.width, settings.height)
    times = []
    for k in range(settings.warmup + settings.frames):
        batch = {sid: frames[(k + j) % len(frames)] for j, sid in enumerate(ids)}
        started = time.perf_counter()
        engine.process(batch)  # uint8 images on the host: the device work is done
        if k >= settings.warmup:
            times.append(time.perf_counter() - started)
    reference = engine.process({sid: frames[0] for sid in ids})["default"].image  # 1 step: no earlier frame in it
    return times, reference


def run_row(model: Model, case: Case, settings: Settings, streams: int, work: Path) -> Row:
    import torch

    from engines.torch_compile import compiled_graphs

    cuda = settings.device == "cuda"
    started, graphs = time.perf_counter(), compiled_graphs()
    engine = make_engine(model, case, settings, streams)
    setup, graphs_after = time.perf_counter() - started, compiled_graphs()
    parts = getattr(engine.backend, "parts", {})
    no_graph = "; ".join(f"{p.value} ran without a CUDA graph: {part.graph_error}" for p, part in parts.items()
                         if getattr(part, "graph_error", None))
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times, image = time_calls(engine, streams, settings)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    finally:
        engine.backend.close()
    np.save(work / f"{case.name}-{streams}.npy", image)
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Row(case.name, streams, "ok", fps=round(streams * len(times) / sum(times), 2),
               p50_ms=round(1e3 * statistics.median(times), 3), p95_ms=round(1e3 * p95, 3),
               peak_gpu_mb=None if peak is None else round(peak, 1), setup_s=round(setup, 1),
               compiled=graphs_after["miss"] - graphs["miss"], cached=graphs_after["hit"] - graphs["hit"],
               error=no_graph[:400])


def run_child(case: Case, settings: Settings, work: Path) -> None:
    """Measures ``case`` at each stream count, appending each row to ``work/CASE.jsonl`` as it is measured."""
    model = make_model(settings)
    for streams in settings.streams:
        try:
            row = run_row(model, case, settings, streams, work)
        except Exception as exc:  # recorded as the row's error; the next stream count still runs (a harness)
            logger.exception("%s at %d streams failed", case.name, streams)
            row = Row(case.name, streams, "error", error=f"{type(exc).__name__}: {exc}"[:400])
        with open(work / f"{case.name}.jsonl", "a") as out:
            out.write(json.dumps(dataclasses.asdict(row)) + "\n")
        logger.info("%s", row)


# ---- the parent: every case, each in its own process -------------------------------------------------------


class Report:
    """device_check.json and .md, rewritten after every case."""

    def __init__(self, output_dir: Path, settings: Settings, machine: dict[str, Any]) -> None:
        self.json_path, self.md_path = output_dir / "device_check.json", output_dir / "device_check.md"
        self.meta = {"machine": machine, "settings": dataclasses.asdict(settings)}
        self.rows: list[Row] = []

    def add(self, rows: list[Row]) -> None:
        self.rows += rows
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps({**self.meta, "rows": [dataclasses.asdict(r) for r in self.rows]},
                                             indent=2) + "\n")
        self.md_path.write_text(self.markdown())

    def table(self) -> str:
        head = ("| case | streams | fps | p50 ms | p95 ms | peak GPU MB | vs eager fps | diff mean / max | setup s | "
                "graphs compiled / cached | status |")
        lines = [head, "|" + " --- |" * 11]
        eager = {(r.case.split("-", 1)[1], r.streams): r.fps for r in self.rows
                 if r.case.startswith("eager-") and r.fps}
        for r in self.rows:
            base = eager.get((r.case.split("-")[-1], r.streams))
            ratio = f"{r.fps / base:.2f}x" if r.fps and base else ""
            diff = "" if r.diff_mean is None else f"{r.diff_mean:.3f} / {r.diff_max:.0f}"
            status = r.status + (f": {r.error[:160]}" if r.error else "")
            graphs = "" if not r.compiled and not r.cached else f"{r.compiled} / {r.cached}"
            cells = [r.case, str(r.streams), _fmt(r.fps), _fmt(r.p50_ms), _fmt(r.p95_ms), _fmt(r.peak_gpu_mb), ratio,
                     diff, _fmt(r.setup_s), graphs, status]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self) -> str:
        s, m = self.meta["settings"], self.meta["machine"]
        kind = "DRY RUN on the CPU (tiny demo model, not a measurement)" if s["dry_run"] else "measured"
        return (f"# Device check (make device-check): {kind}\n\n"
                f"{m.get('gpu') or 'no GPU'}; torch {m['torch']} (CUDA {m.get('torch_cuda')}); {m['date']}. The "
                f"`real` preset's networks with random weights, {s['width']}x{s['height']} px, 1 step, {s['dtype']}; "
                f"{s['frames']} timed calls after {s['warmup']} warm-up calls per row. fps: frames per second over "
                f"all streams; p50 / p95: one call (one new frame per stream, host frame in, host image out); "
                f"diff: mean / max |a - b| against eager on the uint8 image (levels of 255); setup: building the "
                f"row's backend, compiling included (0 compile time when Inductor's cache has it).\n\n"
                f"{self.table()}\n")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def machine_summary(settings: Settings) -> dict[str, Any]:
    import datetime
    import platform

    import torch

    cuda = settings.device == "cuda" and torch.cuda.is_available()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "python": platform.python_version(), "cpu_count": os.cpu_count()}


def collect(case: Case, work: Path, outcome: str, streams_list: tuple[int, ...] = STREAMS) -> list[Row]:
    """The case's rows from its child, a row per missing stream count (timed out / error), diffs against eager."""
    path = work / f"{case.name}.jsonl"
    rows = {r["streams"]: Row(**r) for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}
    for streams in streams_list:
        if streams not in rows:
            status = "timed out" if outcome.startswith("timed out") else "error"
            rows[streams] = Row(case.name, streams, status, error=outcome)
        row = rows[streams]
        mine, eager = work / f"{case.name}-{streams}.npy", work / f"eager-{case.autoencoder.value}-{streams}.npy"
        if row.status == "ok" and mine.is_file() and eager.is_file():
            a, b = np.load(mine).astype(np.int16), np.load(eager).astype(np.int16)
            row.diff_mean, row.diff_max = round(float(np.abs(a - b).mean()), 4), float(np.abs(a - b).max())
    return [rows[s] for s in streams_list]


def run_case(case: Case, args: argparse.Namespace, work: Path, limit: float) -> str:
    """Runs one case's child process for at most ``limit`` seconds; '' when it exited cleanly, else why not."""
    command = [sys.executable, "-m", "benchmarks.device_check", "--child", case.name, "--work", str(work),
               "--cache-dir", args.settings.cache_dir, "--frames", str(args.settings.frames),
               "--streams", ",".join(map(str, args.settings.streams))]
    command += ["--dry-run"] if args.settings.dry_run else []
    log = work / f"{case.name}.log"
    started = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child and Inductor's compile workers (its own session)
            child.wait()
            return f"timed out after {time.monotonic() - started:.0f} s (its limit)"
    if code == 0:
        return ""
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
    return f"exit status {code}: {tail[0][:300] if tail else 'no output'}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with the tiny demo model")
    parser.add_argument("--budget-s", type=float, default=450, help="the whole run, in seconds (default 450)")
    parser.add_argument("--cases", default=None, help=f"comma-separated, in order (default: {','.join(c.name for c in CASES)})")
    parser.add_argument("--frames", type=int, default=None, help="timed calls per row (default 60; dry run 3)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="default: benchmarks/results (a dry run: a temporary directory, named in the log)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache (Inductor's under it)")
    parser.add_argument("--streams", default="1,4", help="stream counts, comma-separated (default 1,4)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in CASES}
    names = args.cases.split(",") if args.cases else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases: {', '.join(by_name)}")
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    try:
        streams = tuple(int(n) for n in args.streams.split(","))
    except ValueError:
        parser.error(f"--streams must be whole numbers separated by commas, got {args.streams!r}")
    if not streams or min(streams) < 1:
        parser.error(f"--streams must be at least 1, got {args.streams!r}")
    args.case_list = [by_name[n] for n in names]
    args.settings = settings_for(args.dry_run, args.frames, args.cache_dir, streams)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        run_child(next(c for c in CASES if c.name == args.child), args.settings, args.work)
        return 0
    started = time.monotonic()
    if args.output_dir is None:
        args.output_dir = Path(tempfile.mkdtemp(prefix="sana-stream-device-check-")) if args.dry_run else RESULTS_DIR
    report = Report(args.output_dir, args.settings, machine_summary(args.settings))
    with tempfile.TemporaryDirectory(prefix="sana-stream-device-check-work-") as tmp:
        work = Path(tmp)
        for case in args.case_list:
            left = args.budget_s - (time.monotonic() - started)
            if left < 15:
                report.add([Row(case.name, s, "skipped", error="the run's budget was spent")
                            for s in args.settings.streams])
                continue
            # a dry run on a shared 2-core machine has no time to promise: only the whole budget limits it
            outcome = run_case(case, args, work, left if args.dry_run else min(case.limit_s, left))
            report.add(collect(case, work, outcome, args.settings.streams))
            logger.info("%s: %s (%.0f s into the run)", case.name, outcome or "done", time.monotonic() - started)
    print(report.table())
    print(f"results: {report.md_path} and {report.json_path}")
    return 0 if all(r.status == "ok" for r in report.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
