"""Judges a demo model's output: how close the engine's restyled frame for each trained prompt lies to every
filter's output of the same frame. The tests and ``sana-stream make-demo-model --train`` use it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from stream.demo_filters import DemoStyle, apply_filter
from stream.engine import DEFAULT_STREAM, FrameKind, StreamEngine
from stream.frames import fit_frame

JUDGE_SIZE = 64  # px: outputs and filters are compared at this size, where the demo's 32 px latent cells resolve


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (JUDGE_SIZE, JUDGE_SIZE), interpolation=cv2.INTER_AREA).astype(np.float64) / 255


def filtered(style: DemoStyle, image: np.ndarray) -> np.ndarray:
    """``style``'s filter of an (H, W, 3) uint8 frame, as uint8."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    y = apply_filter(style, x)[0].permute(1, 2, 0).numpy()
    return (y * 255).round().clip(0, 255).astype(np.uint8)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two uint8 images at ``JUDGE_SIZE`` px, in [0, 1] units."""
    return float(((_small(a) - _small(b)) ** 2).mean())


def generate(engine: StreamEngine, frame: np.ndarray, stream: str = DEFAULT_STREAM) -> np.ndarray:
    """The engine's output for ``frame`` sent once per step: with Stream Batch, the first output whose every step ran
    after the call (so under the settings in force now, not those of frames still in flight)."""
    for _ in range(len(engine.settings(stream).t_list)):
        result = engine.process({stream: frame})[stream]
    if result.kind is not FrameKind.GENERATED:
        raise RuntimeError(f"the pipe was not full after {len(engine.settings(stream).t_list)} calls: {result.kind}")
    return result.image


@dataclass(frozen=True)
class StyleScore:
    """One trained prompt's output against every filter."""

    style: DemoStyle
    distances: dict[DemoStyle, float]  # to each filter's output of the input frame

    @property
    def own(self) -> float:
        return self.distances[self.style]

    @property
    def nearest_other(self) -> DemoStyle:
        return min((s for s in self.distances if s is not self.style), key=self.distances.__getitem__)

    @property
    def margin(self) -> float:
        """Distance to the nearest other filter over the distance to its own: above 1 means closer to its own."""
        return self.distances[self.nearest_other] / max(self.own, 1e-12)


def score_styles(engine: StreamEngine, frame: np.ndarray) -> list[StyleScore]:
    """Every trained prompt's output for ``frame`` (fitted to the engine's size), scored against every filter."""
    fitted = fit_frame(frame, engine.config.width, engine.config.height)
    targets = {s: filtered(s, fitted) for s in DemoStyle}
    scores = []
    for style in DemoStyle:
        engine.set_prompt(style.value)
        output = generate(engine, fitted)
        scores.append(StyleScore(style, {s: distance(output, t) for s, t in targets.items()}))
    return scores
