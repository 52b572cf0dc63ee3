"""Synthetic webcam-like pictures, made in code and seeded: the demo model's training data, and the moving scene of
the temporal-consistency benchmark. A picture is a lit gradient background with a few shapes, mostly a head and
shoulders in front, and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Person:
    """A head and shoulders, in fractions of the picture's size."""

    cx: float = 0.5
    cy: float = 0.45
    size: float = 0.28  # the head's half-height
    skin: tuple[int, int, int] = (224, 172, 138)
    hair: tuple[int, int, int] = (60, 40, 30)
    shirt: tuple[int, int, int] = (40, 80, 160)


def _rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A two-colour gradient at a random angle plus blotchy low-frequency light."""
    a, b = np.array(_rgb(rng), np.float32), np.array(_rgb(rng), np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = a * (1 - ramp[..., None]) + b * ramp[..., None]
    blotches = cv2.resize(rng.normal(0, 25, (4, 4, 3)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    return image + blotches


def _shapes(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    height, width = image.shape[:2]
    for _ in range(count):
        colour = _rgb(rng)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (int(v) for v in rng.integers(min(height, width) // 16, min(height, width) // 3, 2))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x - w, y - h), (x + w, y + h), colour, -1, cv2.LINE_AA)
        else:
            cv2.ellipse(image, (x, y), (w, h), float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def draw_person(image: np.ndarray, person: Person) -> None:
    """Shoulders, hair, face, eyes and mouth, drawn in place (anti-aliased)."""
    height, width = image.shape[:2]
    s = person.size * height
    cx, cy = person.cx * width, person.cy * height

    def ellipse(x: float, y: float, ax: float, ay: float, colour: tuple[int, int, int]) -> None:
        cv2.ellipse(image, (int(x), int(y)), (max(1, int(ax)), max(1, int(ay))), 0, 0, 360, colour, -1,
                    cv2.LINE_AA)

    ellipse(cx, cy + 2.3 * s, 1.9 * s, 1.2 * s, person.shirt)
    ellipse(cx, cy + 1.0 * s, 0.32 * s, 0.5 * s, person.skin)  # neck
    ellipse(cx, cy - 0.12 * s, 0.82 * s, 1.02 * s, person.hair)
    ellipse(cx, cy + 0.05 * s, 0.7 * s, 0.95 * s, person.skin)
    for side in (-1, 1):
        ellipse(cx + side * 0.3 * s, cy - 0.1 * s, 0.16 * s, 0.09 * s, (245, 245, 245))
        ellipse(cx + side * 0.3 * s, cy - 0.1 * s, 0.07 * s, 0.07 * s, (40, 30, 25))
        ellipse(cx + side * 0.3 * s, cy - 0.3 * s, 0.18 * s, 0.03 * s, person.hair)  # eyebrow
    ellipse(cx, cy + 0.12 * s, 0.07 * s, 0.16 * s, tuple(int(c * 0.85) for c in person.skin))  # nose
    ellipse(cx, cy + 0.5 * s, 0.28 * s, 0.08 * s, (150, 50, 60))


def random_person(rng: np.random.Generator) -> Person:
    tone = rng.uniform(0.35, 1.0)
    skin = tuple(int(c * tone + 20) for c in (224, 172, 138))
    return Person(cx=rng.uniform(0.3, 0.7), cy=rng.uniform(0.35, 0.55), size=rng.uniform(0.15, 0.32),
                  skin=skin, hair=_rgb(rng) if rng.random() < 0.3 else tuple(int(v) for v in rng.integers(10, 120, 3)),
                  shirt=_rgb(rng))


def _finish(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    image = image + rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def webcam_picture(seed: int, height: int = 512, width: int = 512) -> np.ndarray:
    """One picture (height, width, 3) uint8 RGB: background, 0-5 shapes, a person in 80% of them, noise."""
    rng = np.random.default_rng(seed)
    image = _background(rng, height, width)
    _shapes(image, rng, int(rng.integers(0, 6)))
    if rng.random() < 0.8:
        draw_person(image, random_person(rng))
    return _finish(image, rng, rng.uniform(0, 6))


def moving_scene(index: int, height: int = 512, width: int = 512, seed: int = 7) -> np.ndarray:
    """Frame ``index`` of a scene whose person sways and nods in front of a fixed background, with fresh sensor
    noise per frame: a webcam's typical motion, for the temporal-consistency benchmark."""
    rng = np.random.default_rng(seed)
    image = _background(rng, height, width)
    _shapes(image, rng, 3)
    person = Person(cx=0.5 + 0.08 * np.sin(index / 6), cy=0.45 + 0.02 * np.sin(index / 4), size=0.27)
    draw_person(image, person)
    return _finish(image, np.random.default_rng(seed * 1000 + index), 2.0)
