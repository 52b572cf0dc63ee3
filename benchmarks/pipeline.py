"""Frame pipeline benchmark (issue 3): a 30 fps synthetic camera per stream into FramePipeline, 1/2/4 streams,
DC-AE vs the tiny autoencoder, the engine alone in the same run, and both autoencoders at their real sizes.

    python -m benchmarks.pipeline [--quick] [--preset proportional|tiny] [--seconds S] [--output DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.frames import scrolling_gradient
from benchmarks.real_size import real_size_dcae
from benchmarks.report import Comparison, Target, machine_info, text_table, write_results
from benchmarks.timing import in_worker_thread
from stream import FrameKind, StreamConfig, StreamEngine
from stream.models.tiny_autoencoder import TinyAutoencoder, TinyDecoder, TinyEncoder
from stream.pipeline import FramePipeline
from stream.tiny_model import make_tiny_model

logger = logging.getLogger("benchmarks.pipeline")
CAMERA_FPS = 30.0
STREAM_COUNTS = (1, 2, 4)


@dataclass
class Run:
    streams: int
    vae: str
    fps: float  # aggregate generated frames per second over all streams, in the steady state
    latencies: list[float]  # seconds, input timestamp to published output


def camera_loop(size: int) -> list[np.ndarray]:
    """One second of camera frames, made before timing starts: drawing a 512 px frame 30 times a second would
    take a noticeable share of 2 cores, a cost a real camera does not put on the machine running the model."""
    return [scrolling_gradient(k, size) for k in range(int(CAMERA_FPS))]


def run_pipeline(engine: StreamEngine, streams: int, seconds: float, vae: str) -> Run:
    """Feeds every stream at 30 fps for ``seconds`` and records each newly published generated frame."""
    ids = [f"s{i}" for i in range(streams)]
    frames = camera_loop(engine.config.width)
    latencies: list[float] = []
    seen: dict[str, list[float]] = {sid: [] for sid in ids}  # when each generated output was first seen
    with FramePipeline(engine) as pipe:
        for i, sid in enumerate(ids):
            pipe.open_stream(sid, seed=i)
        last = dict.fromkeys(ids, -1)
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < seconds:
            for sid in ids:
                pipe.submit(sid, frames[k % len(frames)], time.monotonic())
                out = pipe.latest(sid)
                if out is not None and out.sequence > last[sid]:
                    last[sid] = out.sequence
                    if out.kind is FrameKind.GENERATED:
                        now = time.monotonic()
                        seen[sid].append(now)
                        latencies.append(now - out.timestamp)
            k += 1
            time.sleep(max(0.0, start + k / CAMERA_FPS - time.monotonic()))
        for sid in ids:
            pipe.close_stream(sid)
    return Run(streams, vae, sum(steady_rate(times) for times in seen.values()), latencies)


def steady_rate(times: list[float]) -> float:
    """Outputs per second between the first and the last output, so the pipe filling at the start (one engine
    call before the first output) does not count against the pipeline; the engine-alone loop is measured
    from call boundary to call boundary the same way."""
    if len(times) < 2:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def run_engine_alone(engine: StreamEngine, seconds: float) -> float:
    """Frames per second of ``engine(frame)`` called back to back on one stream, from a worker thread as the
    pipeline calls it (torch's intra-op threads behave differently under the main thread)."""
    frames = camera_loop(engine.config.width)

    def loop() -> float:
        engine(frames[0])  # warm up
        count, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            engine(frames[count % len(frames)])
            count += 1
        return count / (time.monotonic() - start)

    return float(in_worker_thread(loop))


def interleaved(engine: StreamEngine, seconds: float, vae: str, rounds: int = 3) -> tuple[float, list[Run]]:
    """The engine alone and the pipeline with 1, 2 and 4 streams in interleaved slices of ``seconds / rounds``,
    so the drift of this machine's speed (often 20-40% within minutes) hits every configuration alike."""
    alone: list[float] = []
    slices: dict[int, list[Run]] = {n: [] for n in STREAM_COUNTS}
    for _ in range(rounds):
        alone.append(run_engine_alone(engine, seconds / rounds))
        for streams in STREAM_COUNTS:
            slices[streams].append(run_pipeline(engine, streams, seconds / rounds, vae))
    runs = [Run(n, vae, float(np.mean([r.fps for r in rs])), [x for r in rs for x in r.latencies])
            for n, rs in slices.items()]
    return float(np.mean(alone)), runs


def autoencoders_head_to_head(size: int, repetitions: int) -> Comparison:
    """The published DC-AE f32c32 configuration vs the real tiny-autoencoder plan (random weights)."""
    dcae = real_size_dcae()
    tiny = TinyAutoencoder(TinyEncoder(), TinyDecoder()).eval()
    image = torch.rand(1, 3, size, size) * 2 - 1

    def dcae_frame() -> None:
        dcae.decode(dcae.encode(image).latent)

    def tiny_frame() -> None:
        tiny.decode(tiny.encode(image))

    times: dict[str, list[float]] = {"dcae": [], "tiny": []}
    with torch.inference_mode():
        for fn in (dcae_frame, tiny_frame):
            fn()  # warm up
        for _ in range(repetitions):  # alternate, so machine noise hits both sides
            for name, fn in (("dcae", dcae_frame), ("tiny", tiny_frame)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    dcae_ms, tiny_ms = (1000 * float(np.median(times[k])) for k in ("dcae", "tiny"))
    return Comparison("autoencoders", f"DC-AE f32c32 vs tiny autoencoder, real sizes, {size}px encode+decode",
                      "tiny", tiny_ms, "DC-AE", dcae_ms, "ms", dcae_ms / tiny_ms, "B/A", Target(">=", 8.0),
                      note=f"random weights, medians of {repetitions} alternating repetitions; FLOP ratio ~22x")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def compare(runs: list[Run], alone: dict[str, float]) -> list[Comparison]:
    by = {(r.vae, r.streams): r for r in runs}
    out = []
    for vae in alone:
        one, four = by[(vae, 1)], by[(vae, max(STREAM_COUNTS))]
        out.append(Comparison(f"pipeline_vs_engine_{vae}", f"pipeline vs engine alone, 1 stream, {vae}",
                              "pipeline", one.fps, "engine", alone[vae], "fps", one.fps / alone[vae], "A/B",
                              Target(">=", 0.9), note=f"p50/p95 latency {percentile(one.latencies, 50) * 1000:.0f}/"
                              f"{percentile(one.latencies, 95) * 1000:.0f} ms"))
        out.append(Comparison(f"batching_{vae}", f"{four.streams} streams vs 1 stream, aggregate fps, {vae}",
                              f"{four.streams} streams", four.fps, "1 stream", one.fps, "fps", four.fps / one.fps,
                              "A/B", Target(">=", 1.0)))
    return out


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for vae in sorted({r.vae for r in runs}):
        rs = sorted((r for r in runs if r.vae == vae), key=lambda r: r.streams)
        ax1.plot([r.streams for r in rs], [r.fps for r in rs], marker="o", label=vae)
        ax2.plot([r.streams for r in rs], [percentile(r.latencies, 95) * 1000 for r in rs], marker="o", label=vae)
    ax1.set(xlabel="streams", ylabel="aggregate fps", title="throughput")
    ax2.set(xlabel="streams", ylabel="p95 latency (ms)", title="latency")
    for ax in (ax1, ax2):
        ax.set_xticks(list(STREAM_COUNTS))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="proportional", choices=["proportional", "tiny"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=36.0, help="per configuration, in 3 interleaved slices")
    parser.add_argument("--quick", action="store_true", help="a few seconds per configuration, small sizes")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds = 6.0 if args.quick else args.seconds
    size = 128 if args.quick else args.size
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "model", preset=args.preset)
        runs, alone = [], {}
        for vae in ("dcae", "tiny"):
            config = StreamConfig(width=size, height=size, t_list=(1.0,), encoder=vae, decoder=vae)
            engine = StreamEngine.from_pretrained(model, config)
            alone[vae], measured = interleaved(engine, seconds, vae)
            runs.extend(measured)
            for run in runs[-len(STREAM_COUNTS):]:
                logger.info("%s, %d stream(s): %.2f fps", vae, run.streams, run.fps)
    comparisons = compare(runs, alone)
    comparisons.append(autoencoders_head_to_head(64 if args.quick else 256, 2 if args.quick else 10))
    table = [{"vae": r.vae, "streams": r.streams, "fps": r.fps, "p50_ms": percentile(r.latencies, 50) * 1000,
              "p95_ms": percentile(r.latencies, 95) * 1000, "frames": len(r.latencies)} for r in runs]
    meta = {"machine": machine_info(), "settings": {"preset": args.preset, "width": size, "height": size,
                                                    "frames": f"{seconds:g} s per configuration",
                                                    "camera_fps": CAMERA_FPS, "engine_alone_fps": alone},
            "runs": table}
    write_results(args.output, "pipeline", comparisons, meta)
    plot(runs, args.output / "pipeline.png")
    print(text_table(comparisons))
    for row in table:
        print(f"{row['vae']:5s} {row['streams']} stream(s): {row['fps']:6.2f} fps, "
              f"p50 {row['p50_ms']:6.0f} ms, p95 {row['p95_ms']:6.0f} ms")
    return {"comparisons": comparisons, "runs": table}


if __name__ == "__main__":
    main()
