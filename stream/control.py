"""Control maps for ControlNets: what structure (edges, a rendered pose) each frame hands the ControlNet.

Preprocessors run on the pipeline's preprocessing thread, on the frame already fitted to the output size.
Model-based ones (pose, depth, HED) need weights this project does not ship: register a factory for them
with ``register_preprocessor``; asking for one that is not registered is a clear error.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

MODEL_BASED = ("pose", "depth", "hed", "lineart")  # known names that need a registered, weight-backed factory


class ControlPreprocessor(ABC):
    @abstractmethod
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 control image."""


class Passthrough(ControlPreprocessor):
    """For sources that already render a control image (a VTuber app drawing a pose skeleton, depth or lines)."""

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return frame


@dataclass
class Canny(ControlPreprocessor):
    """OpenCV Canny edges, white on black, three channels (what Canny ControlNets are trained on)."""

    low: int = 100
    high: int = 200

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        edges = cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), self.low, self.high)
        return np.repeat(edges[:, :, None], 3, axis=2)


_REGISTRY: dict[str, Callable[[], ControlPreprocessor]] = {"canny": Canny, "passthrough": Passthrough}


def register_preprocessor(name: str, factory: Callable[[], ControlPreprocessor]) -> None:
    """Makes ``name`` available to ``ControlNetConfig(preprocessor=name)``."""
    if not name or not name.isidentifier():
        raise ValueError(f"name must be an identifier, got {name!r}")
    _REGISTRY[name] = factory


def get_preprocessor(name: str) -> ControlPreprocessor:
    try:
        return _REGISTRY[name]()
    except KeyError:
        hint = (f"; {name!r} needs model weights: register a factory with stream.control.register_preprocessor"
                if name in MODEL_BASED else "")
        raise ValueError(f"preprocessor must be one of {', '.join(sorted(_REGISTRY))}, got {name!r}{hint}") from None


@dataclass(frozen=True)
class ControlNetConfig:
    """One ControlNet: its weights (a diffusers-format SprintControlNetModel directory or hub id), the
    preprocessor that makes its control image, and its default conditioning scale (live-changeable)."""

    model: str
    preprocessor: str = "canny"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"controlnet model must be a path or hub id, got {self.model!r}")
        get_preprocessor(self.preprocessor)  # validates the name
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale):
            raise ValueError(f"controlnet scale must be a finite number, got {self.scale!r}")

    @classmethod
    def from_option(cls, text: str) -> ControlNetConfig:
        """The ``--controlnet PATH[:PREPROCESSOR[:SCALE]]`` option of ``serve`` and ``build``, e.g.
        ``nets/pose:passthrough:0.8``."""
        if text.count(":") > 2:
            raise ValueError(f"--controlnet must be PATH[:PREPROCESSOR[:SCALE]], got {text!r}")
        model, preprocessor, scale = (text.split(":") + ["", ""])[:3]
        try:
            value = float(scale) if scale else 1.0
        except ValueError:
            raise ValueError(f"--controlnet scale must be a number, got {scale!r}") from None
        return cls(model, preprocessor or "canny", value)
