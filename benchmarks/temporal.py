"""Temporal consistency of the trained demo model: the warp error of consecutive outputs on a moving synthetic scene,
for 1 step and Stream Batch 2-4 steps, with the seed fixed (the engine's noise drawn once) and with a new seed every
frame (fresh noise: what flicker looks like without the cached noise).

    python -m benchmarks.temporal [--size 512] [--frames 16] [--prompt "thermal camera"] [--output DIR]

Warp error as StreamV2V reports it (after Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the optical
flow of the *input* from frame k to frame k-1 (OpenCV DIS, medium preset, on grey levels) warps output k-1 onto frame
k; pixels where the forward and backward flows disagree (occlusions, the flow's own failures) are masked out; the
error is the mean squared difference of the rest, in [0, 1] units x 1000. Lower is steadier. The same measure of the
input itself and of the prompt's exact filter bound it: a perfect imitation of the filter scores the filter's value.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from benchmarks.report import Comparison, machine_info, text_table, write_results
from stream import FrameKind, StreamConfig, StreamEngine
from stream.engine import DEFAULT_STREAM
from stream.demo_evaluation import filtered
from stream.demo_filters import DemoStyle
from stream.demo_manifest import TRAINED_DEMO_DIR
from stream.demo_scenes import moving_scene

logger = logging.getLogger("benchmarks.temporal")
RESULTS = Path(__file__).resolve().parent / "results"
STEPS = {1: (1.0,), 2: (1.0, 0.5), 3: (1.0, 0.67, 0.33), 4: (1.0, 0.75, 0.5, 0.25)}
CONSISTENCY_PX = 1.0  # forward-backward flow disagreement above this many pixels marks a pixel occluded
SCALE = 1000  # errors are reported x 1000 (squared error in [0, 1] units)
UNIT = "(MSE x 1000)"


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at (x + flow): with the flow from frame k to frame k-1, frame k-1 seen from frame k."""
    H, W = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).astype(np.float32) + flow
    return cv2.remap(image, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_errors(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> list[float]:
    """One occlusion-masked warp error per consecutive pair of ``outputs``, with the flow of ``inputs``."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    errors = []
    for k in range(1, len(inputs)):
        now, before = _grey(inputs[k]), _grey(inputs[k - 1])
        backward = dis.calc(now, before, None)  # frame k -> k-1
        forward = dis.calc(before, now, None)  # frame k-1 -> k
        round_trip = backward + _warp(forward, backward)  # ~0 where both flows agree
        visible = np.linalg.norm(round_trip, axis=-1) < CONSISTENCY_PX
        warped = _warp(outputs[k - 1], backward).astype(np.float64) / 255
        diff = ((outputs[k].astype(np.float64) / 255 - warped) ** 2).mean(-1)
        errors.append(float(diff[visible].mean()) * SCALE)
    return errors


def run_outputs(size: int, steps: int, frames: list[np.ndarray], prompt: str,
                fixed_seed: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The engine's generated outputs and, aligned with them, the input frames they came from (Stream Batch returns
    frame k n-1 calls later); ``fixed_seed=False`` sets seed 1000 + k before frame k."""
    engine = StreamEngine.from_pretrained(TRAINED_DEMO_DIR, StreamConfig(
        width=size, height=size, t_list=STEPS[steps], prompt=prompt, encoder="tiny", decoder="tiny"))
    sources, outputs = [], []
    for k, frame in enumerate(frames):
        if not fixed_seed:
            engine.set_seed(1000 + k)
        result = engine.process({DEFAULT_STREAM: frame}, {DEFAULT_STREAM: k})[DEFAULT_STREAM]
        if result.kind is FrameKind.GENERATED:
            sources.append(frames[result.tag])
            outputs.append(result.image)
    return sources, outputs


def measure(size: int, count: int, prompt: str) -> tuple[list[Comparison], dict[str, float]]:
    frames = [moving_scene(k, size, size) for k in range(count)]
    reference = {"input": float(np.mean(warp_errors(frames, frames))),
                 "filter": float(np.mean(warp_errors(frames, [filtered(DemoStyle(prompt), f) for f in frames])))}
    errors = {}
    for steps in STEPS:
        for fixed in (True, False):
            errors[steps, fixed] = float(np.mean(warp_errors(*run_outputs(size, steps, frames, prompt, fixed))))
            logger.info("%d step(s), %s seed: warp error %.3f", steps, "fixed" if fixed else "new",
                        errors[steps, fixed])
    comparisons = []
    for steps in STEPS:
        a, b = errors[steps, True], errors[steps, False]
        comparisons.append(Comparison(
            key=f"seed_{steps}", title=f"{steps} step(s): fixed seed vs a new seed per frame", a_label="fixed", a=a,
            b_label="new seed", b=b, unit=UNIT, ratio=b / a, ratio_of="B/A",
            note=f"{count} frames; the input's own warp error {reference['input']:.3f}, the exact filter's "
                 f"{reference['filter']:.3f}"))
    for steps in (2, 3, 4):
        a, b = errors[1, True], errors[steps, True]
        comparisons.append(Comparison(
            key=f"batch_{steps}", title=f"Stream Batch {steps} steps vs 1 step, fixed seed", a_label="1 step", a=a,
            b_label=f"{steps} steps", b=b, unit=UNIT, ratio=b / a, ratio_of="B/A"))
    return comparisons, reference


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.temporal", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--prompt", default=DemoStyle.THERMAL.value, choices=[s.value for s in DemoStyle])
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    comparisons, reference = measure(args.size, args.frames, args.prompt)
    logger.info("\n%s", text_table(comparisons))
    settings = {"preset": "trained demo model (stream/demo_weights)", "width": args.size, "height": args.size,
                "frames": args.frames, "prompt": args.prompt, "scene": "stream.demo_scenes.moving_scene",
                "flow": "OpenCV DIS medium, forward-backward check < 1 px", "unit": "mean squared error x 1000",
                "reference": reference}
    write_results(args.output, "temporal", comparisons, {"settings": settings, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
