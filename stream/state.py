"""Per-stream state of the stream engine: live settings, what is derived from them, and the frames in flight.

Stream Batch (docs/design.md#stream-batch): slot ``i`` holds a frame that finished ``i - 1`` steps. Each call noises
the newest frame to ``t_1``, noises every frame in flight to its next angle, runs one model batch over all
slots, and the oldest frame leaves after its last step. In-flight frames are stored as their clean
prediction ``x0_hat`` and noised at call time, so a change of angles or seed applies to them at once.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from engines.prompt_kv import PromptKV
from stream import trigflow
from stream.config import MAX_RCFG_ANGLE, CfgType, StreamConfig, _require_finite, validate_t_list
from stream.prompt import MAX_PROMPT_CHARS
from stream.similarity_filter import SimilarityFilter


@dataclass(frozen=True)
class StreamSettings:
    """What a stream's owner may change between frames. Always replaced whole, never mutated."""

    prompt: str
    negative_prompt: str
    seed: int
    t_list: tuple[float, ...]
    guidance_scale: float
    cfg_scale: float
    delta: float
    control_scales: tuple[float, ...] = ()  # one conditioning scale per configured ControlNet

    @classmethod
    def from_config(cls, config: StreamConfig) -> StreamSettings:
        return cls(config.prompt, config.negative_prompt, config.seed, config.t_list, config.guidance_scale,
                   config.cfg_scale, config.delta, tuple(float(c.scale) for c in config.controlnets))

    def replace(self, cfg_type: CfgType, **changes: Any) -> StreamSettings:
        """A validated copy with ``changes``; unknown names and bad values raise ValueError naming them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)} - {"strength"}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "strength" in changes:  # t_list[0] becomes the strength; later angles scale by the same factor
            strength = changes.pop("strength")
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength > 0:
                raise ValueError(f"strength must be a positive angle in radians, got {strength!r}")
            base = changes.get("t_list", self.t_list)
            changes["t_list"] = tuple(t * strength / base[0] for t in base)
        for name in ("prompt", "negative_prompt"):
            if name in changes:
                text = changes[name]
                if not isinstance(text, str):
                    raise ValueError(f"{name} must be a string, got {type(text).__name__}")
                if len(text) > MAX_PROMPT_CHARS:
                    raise ValueError(f"{name} must be at most {MAX_PROMPT_CHARS} characters, got {len(text)}")
        if "seed" in changes:
            seed = changes["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
                raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if "t_list" in changes:
            changes["t_list"] = validate_t_list(changes["t_list"])
        if "control_scales" in changes:
            scales = changes["control_scales"]
            if isinstance(scales, (str, bytes)) or not hasattr(scales, "__len__") or len(scales) != len(
                    self.control_scales):
                raise ValueError(f"control_scales must hold {len(self.control_scales)} number(s), one per "
                                 f"ControlNet, got {scales!r}")
            for i, value in enumerate(scales):
                _require_finite(f"control_scales[{i}]", value)
            changes["control_scales"] = tuple(float(v) for v in scales)
        for name in ("guidance_scale", "cfg_scale", "delta"):
            if name in changes:
                _require_finite(name, changes[name])
                changes[name] = float(changes[name])
        new = dataclasses.replace(self, **changes)
        if cfg_type is not CfgType.NONE and new.t_list[0] > MAX_RCFG_ANGLE:
            raise ValueError(f"t_list[0] must be at most {MAX_RCFG_ANGLE:.5f} with cfg_type={cfg_type.value}")
        return new


@dataclass(frozen=True)
class Conditioning:
    """Tensors derived from one StreamSettings, built once per change (never per frame)."""

    settings: StreamSettings
    kv: PromptKV
    negative_kv: PromptKV | None  # only for cfg_type full / onetime
    noise: Tensor  # (n, C, h, w) float32; slot i uses row i, fixed for the stream's life
    angles: Tensor  # (n, 1, 1, 1) float32, t_i
    guidance: Tensor  # (n,) the transformer's guidance input (scale * guidance_embeds_scale)

    @property
    def num_steps(self) -> int:
        return len(self.settings.t_list)


@dataclass
class InFlight:
    """A frame between steps: its latest clean prediction, its RCFG reference latent, and the caller's tag."""

    x0: Tensor  # (C, h, w)
    ref: Tensor | None  # (C, h, w), the clean image the virtual negative assumes (self / onetime)
    tag: object
    controls: tuple[Tensor, ...] = ()  # its own control latents, one (C, h, w) per ControlNet


@dataclass
class StepPlan:
    """One stream's share of a model batch: ``x`` are its noised slots, newest first."""

    cond: Conditioning
    x: Tensor  # (k, C, h, w), k = number of occupied slots
    refs: list[Tensor | None]
    tags: list[object]
    controls: list[tuple[Tensor, ...]]  # per slot


@dataclass
class StreamState:
    """Everything owned by one stream. ``conditioning`` is swapped atomically by setters on any thread;
    the rest is touched only by the thread that runs the engine."""

    stream_id: str
    conditioning: Conditioning
    filter: SimilarityFilter | None
    in_flight: list[InFlight] = field(default_factory=list)  # oldest last; in_flight[j] finished j+1 steps
    last_output: Any = None  # numpy uint8 (H, W, 3) of the last finished frame
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, x0_img: Tensor, tag: object, sigma_d: float, controls: tuple[Tensor, ...] = ()) -> StepPlan:
        """Noises the new frame (slot 1) and every frame in flight to their angles. x0_img: (C, h, w)."""
        cond = self.conditioning  # one read: the whole call sees one consistent set of settings
        if len(self.in_flight) >= cond.num_steps:  # the number of steps changed: restart the pipe
            self.in_flight.clear()
        x0 = torch.stack([x0_img] + [f.x0 for f in self.in_flight])  # (k, C, h, w)
        k = x0.shape[0]
        x = trigflow.add_noise(x0, cond.noise[:k], cond.angles[:k], sigma_d)
        return StepPlan(cond, x, [x0_img] + [f.ref for f in self.in_flight], [tag] + [f.tag for f in self.in_flight],
                        [controls] + [f.controls for f in self.in_flight])

    def advance(self, plan: StepPlan, x0_hat: Tensor, refs: list[Tensor | None]) -> tuple[Tensor, object] | None:
        """Stores the frames still in flight; returns (x0 of the finished frame, its tag) once the pipe is full."""
        k, n = x0_hat.shape[0], plan.cond.num_steps
        slots = [InFlight(x0_hat[i], refs[i], plan.tags[i], plan.controls[i]) for i in range(k)]
        if k == n:
            finished = slots.pop()
            self.in_flight = slots
            return finished.x0, finished.tag
        self.in_flight = slots
        return None

