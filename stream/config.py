"""Configuration of a stream engine: frozen dataclasses validated on construction."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Sequence

from engines import BackendName, backend_names
from stream.control import ControlNetConfig

SIGMA_DATA = 0.5  # TrigFlow data std (SCMScheduler.config.sigma_data); read from the scheduler when loading
MAX_ANGLE = math.pi / 2  # t = pi/2 is pure noise; every angle must lie strictly below it
# RCFG divides by cos t; sCM's own largest angle, arctan(80 / 0.5), keeps 1 / cos t below 160.
MAX_RCFG_ANGLE = math.atan(80 / 0.5)
# float16 is not offered: it is known to break Sana checkpoints (docs/design.md#dependency-facts)
DTYPES = ("float32", "bfloat16")


class AutoencoderKind(str, enum.Enum):
    """Which autoencoder encodes frames / decodes outputs (~92% of a frame: docs/design.md#where-the-time-goes)."""

    DCAE = "dcae"  # the model's own DC-AE f32c32: best quality, slowest
    TINY = "tiny"  # TAESANA-style tiny autoencoder: ~14x fewer FLOPs to decode, softer detail
    DCAE_LITE = "dcae-lite"  # DC-AE-Lite decoder (decoder only; same latent space)


class CfgType(str, enum.Enum):
    """How classifier-free guidance is applied (docs/design.md#rcfg)."""

    NONE = "none"  # distilled guidance only; batch n
    FULL = "full"  # a real negative-prompt pass at every slot; batch 2n
    SELF = "self"  # virtual negative from the frame's own latent; batch n
    ONETIME = "onetime"  # one real negative pass for the newest slot; batch n + 1


def _require_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def even_t_list(strength: float, steps: int) -> tuple[float, ...]:
    """``steps`` angles from ``strength`` down, evenly spaced: 1.0 with 2 steps gives (1.0, 0.5)."""
    return tuple(strength * (steps - i) / steps for i in range(steps))


def validate_t_list(t_list: Sequence[float], *, name: str = "t_list") -> tuple[float, ...]:
    """Checks TrigFlow angles: 1-4 of them, strictly decreasing, each in (0, pi/2). Returns a tuple."""
    if isinstance(t_list, (str, bytes)) or not isinstance(t_list, Sequence):
        raise ValueError(f"{name} must be a sequence of angles in radians, got {t_list!r}")
    values = tuple(t_list)
    if not 1 <= len(values) <= 4:
        raise ValueError(f"{name} must hold 1 to 4 angles (one per step), got {len(values)}")
    for i, t in enumerate(values):
        _require_finite(f"{name}[{i}]", t)
        if not 0.0 < t < MAX_ANGLE:
            raise ValueError(f"{name}[{i}] must lie in (0, pi/2) radians, got {t!r}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly decreasing, got {values!r}")
    return tuple(float(t) for t in values)


@dataclass(frozen=True)
class StreamConfig:
    """Everything fixed for the lifetime of an engine, plus defaults for each stream's live settings.

    ``t_list`` holds TrigFlow angles in radians (``pi/2`` is pure noise). Its length is the number of
    denoising steps and its first entry is the img2img strength: 1.0 rad keeps the layout and
    restyles firmly; 0.6 stays close to the camera.
    """

    width: int = 512
    height: int = 512
    t_list: tuple[float, ...] = (1.0,)
    guidance_scale: float = 4.5  # Sprint's distilled guidance; it was trained on 4-5
    cfg_type: CfgType = CfgType.NONE
    cfg_scale: float = 1.0  # RCFG gamma; ignored when cfg_type is none
    delta: float = 1.0  # RCFG virtual-negative strength (self / onetime)
    similarity_filter: bool = False
    similarity_threshold: float = 0.98  # eta: frames more similar than this are skipped with rising probability
    max_skip_frames: int = 10  # forced processing after this many skips in a row
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    dtype: str | None = None  # one of DTYPES; None: bfloat16 on cuda, float32 on cpu
    prompt: str = ""
    negative_prompt: str = ""
    max_sequence_length: int = 300  # the pipeline's default; Sprint was trained with it
    encoder: AutoencoderKind = AutoencoderKind.DCAE  # dcae or tiny
    decoder: AutoencoderKind = AutoencoderKind.DCAE  # dcae, tiny or dcae-lite
    tiny_vae: str | None = None  # directory or hub id of taesana_*.pth; None: the model's tiny_autoencoder/
    dcae_lite: str | None = None  # DC-AE-Lite directory or hub id; None: the model's vae_lite/, else the hub's
    controlnets: tuple[ControlNetConfig, ...] = ()  # each with its own preprocessor and scale
    backend: BackendName = BackendName.TORCH  # torch (eager); onnxruntime, tensorrt, torch-compile (static shapes)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 32:
                raise ValueError(f"{name} must be a positive multiple of 32, got {value!r}")
        object.__setattr__(self, "t_list", validate_t_list(self.t_list))
        try:
            object.__setattr__(self, "cfg_type", CfgType(self.cfg_type))
        except ValueError:
            allowed = ", ".join(c.value for c in CfgType)
            raise ValueError(f"cfg_type must be one of {allowed}, got {self.cfg_type!r}") from None
        for name in ("encoder", "decoder"):
            try:
                object.__setattr__(self, name, AutoencoderKind(getattr(self, name)))
            except ValueError:
                allowed = ", ".join(v.value for v in AutoencoderKind)
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}") from None
        try:
            object.__setattr__(self, "backend", BackendName(self.backend))
        except ValueError:
            raise ValueError(f"backend must be one of {', '.join(backend_names())}, got {self.backend!r}") from None
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or None), got {self.dtype!r}")
        object.__setattr__(self, "controlnets", tuple(self.controlnets))
        if not all(isinstance(c, ControlNetConfig) for c in self.controlnets):
            raise ValueError("controlnets must be a sequence of stream.control.ControlNetConfig")
        if self.encoder is AutoencoderKind.DCAE_LITE:
            raise ValueError("encoder must be dcae or tiny: DC-AE-Lite shares DC-AE's encoder, use encoder='dcae'")
        for name in ("guidance_scale", "cfg_scale", "delta", "similarity_threshold"):
            _require_finite(name, getattr(self, name))
        if not 0.0 <= self.similarity_threshold < 1.0:
            raise ValueError(f"similarity_threshold must lie in [0, 1), got {self.similarity_threshold!r}")
        if self.cfg_type is not CfgType.NONE and self.t_list[0] > MAX_RCFG_ANGLE:
            raise ValueError(
                f"t_list[0] must be at most {MAX_RCFG_ANGLE:.5f} with cfg_type={self.cfg_type.value} "
                f"(RCFG divides by cos t), got {self.t_list[0]!r}"
            )
        for name in ("max_skip_frames", "seed", "max_sequence_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.max_sequence_length < 2:
            raise ValueError(f"max_sequence_length must be at least 2, got {self.max_sequence_length}")

    @property
    def num_steps(self) -> int:
        return len(self.t_list)
