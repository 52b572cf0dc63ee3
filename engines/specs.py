"""Shapes of the compiled parts: what the stream config asks for, turned into named, typed tensors.

Every input and output of a part has a dynamic first dimension, the batch, and static other dimensions:

- the batch: a part runs any number of rows from 1 to the built maximum (``BatchRange``), and the backend
  (``engines.compiled_backend``) runs each part on the rows a call has, never padded. The transformer's
  maximum is ``steps x streams`` (x2 for cfg ``full``, +1 per stream for ``onetime``), the autoencoder's one
  frame per stream; a call with more rows than that runs in chunks. TensorRT tunes its kernels for the
  range's ``opt`` (one stream, see ``BuildSpec.batch_range``); ONNX Runtime takes any batch as it comes;
- the prompt length: K/V inputs hold ``kv_length`` tokens (the stream config's ``max_sequence_length``,
  so every prompt fits); a prompt's real tokens come first and the rest are masked by a -10000 bias, which
  is exact (``exp(-10000)`` is 0 in every float format);
- height and width are static (DC-AE's attention branches on H*W, docs/design.md#dependency-facts).

A ``TensorSpec``'s shape holds the maximum batch (the size of its preallocated buffer); ``PartSpec.describe``
writes the batch as ``B``, since one exported graph serves every batch.

ControlNets: the transformer always takes ``num_blocks - 1`` residual inputs (``control_i``, added after block
``i + 1``, as diffusers adds ``controlnet_block_samples``), zeros when no ControlNet is on. One transformer part
then serves runs with and without ControlNets, and with nets of any depth; its shapes (and so its cache key) do
not depend on the ControlNets. Each ControlNet is a part of its own (``ControlNetPart``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

import torch


class Precision(str, enum.Enum):
    """Dtype of the exported graph. TensorRT builds strongly typed networks, so this is the engine's precision."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.value]


class Component(str, enum.Enum):
    """The parts the stream engine runs, each exported and built on its own."""

    TRANSFORMER = "transformer"  # velocity(x_in, timestep, guidance, K/V)
    ENCODER = "encoder"  # images -> unscaled latents
    DECODER = "decoder"  # unscaled latents -> images


CONTROLNET_KIND = "controlnet"  # the cache-key component of every ControlNet part


@dataclass(frozen=True)
class ControlNetPart:
    """The ControlNet at ``index`` in the backend's list: residuals(x_in, timestep, guidance, control latent,
    scale, its blocks' K/V). Every backend has the three ``Component`` parts, and one of these per ControlNet."""

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"ControlNet index must be a non-negative integer, got {self.index!r}")

    @property
    def value(self) -> str:
        """The part's name in logs, timings and errors, as ``Component.value``: ``controlnet_0``, ..."""
        return f"{CONTROLNET_KIND}_{self.index}"


PartId: TypeAlias = Component | ControlNetPart  # a key of the parts of one backend


def part_kind(part: PartId) -> str:
    """What a part is, for cache keys: its component's name, and ``controlnet`` for every ControlNet. The
    weights' digest tells nets apart, so a net that moves in the list, or serves twice, reuses its entry."""
    return CONTROLNET_KIND if isinstance(part, ControlNetPart) else part.value


DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.int32: "int32", torch.int64: "int64", torch.bool: "bool"}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a compiled part: a shape (the batch, dimension 0, at its maximum) and a dtype
    name (``float32`` ...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype of {self.name!r} must be one of {', '.join(TORCH_DTYPES)}, got {self.dtype!r}")
        if any(not isinstance(d, int) or d <= 0 for d in self.shape):
            raise ValueError(f"{self.name!r} must have a static positive shape, got {self.shape!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    def describe(self) -> str:
        """``name:BxCxHxW:dtype``: the batch, the first dimension, is dynamic and reads ``B``."""
        return f"{self.name}:{'x'.join(['B', *map(str, self.shape[1:])])}:{self.dtype}"

    def with_batch(self, rows: int) -> TensorSpec:
        return TensorSpec(self.name, (rows, *self.shape[1:]), self.dtype)


@dataclass(frozen=True)
class BatchRange:
    """The batches a part runs: any number of rows from ``min`` to ``max``; TensorRT tunes for ``opt``."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        if not integers or not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"a batch range needs integers 1 <= min <= opt <= max, got {values}")

    def describe(self) -> str:
        """``batch=1/2/8``: part of a TensorRT engine's cache key (its optimization profile)."""
        return f"batch={self.min}/{self.opt}/{self.max}"


@dataclass(frozen=True)
class PartSpec:
    """The inputs and outputs of one compiled part. Every tensor's first dimension is the batch: the shapes
    hold its maximum, and ``opt_batch`` is the common case TensorRT tunes for."""

    component: PartId
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opt_batch: int = 1

    @property
    def batch(self) -> int:
        """The maximum batch."""
        return self.inputs[0].shape[0]

    @property
    def batch_range(self) -> BatchRange:
        return BatchRange(1, min(self.opt_batch, self.batch), self.batch)

    def with_batch(self, rows: int) -> PartSpec:
        """The same part with ``rows`` rows in every tensor (the export's example inputs, tests)."""
        return PartSpec(self.component, tuple(t.with_batch(rows) for t in self.inputs),
                        tuple(t.with_batch(rows) for t in self.outputs), self.opt_batch)

    def describe(self) -> str:
        """A canonical one-line description of every tensor, the batch as ``B`` (part of the part cache key)."""
        return ";".join(t.describe() for t in (*self.inputs, *self.outputs))

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.component.value} has no input {name!r}")


@dataclass(frozen=True)
class ModelShapes:
    """What the networks themselves fix: latent channels and compression, the transformer's tokens (hidden
    size, patch size), the per-block K/V layout (the ControlNets' blocks share it) and each ControlNet's depth."""

    latent_channels: int
    spatial_compression: int
    num_blocks: int
    cross_heads: int
    cross_head_dim: int
    hidden_size: int  # D of the (B, N, D) tokens the blocks pass on, and of a ControlNet residual
    patch_size: int
    controlnet_blocks: tuple[int, ...] = ()  # blocks (= residuals) of each ControlNet, in the backend's order

    @property
    def control_inputs(self) -> int:
        """Residual inputs of the transformer: diffusers adds residual ``i`` after block ``i + 1``, so the
        first block never gets one (and a net's residuals past ``num_blocks - 1`` are never used)."""
        return self.num_blocks - 1


CFG_BATCH = {"none": "n", "self": "n", "full": "2n", "onetime": "n+1"}


@dataclass(frozen=True)
class BuildSpec:
    """The shapes a compiled backend is built for. ``streams`` is how many streams one model call serves."""

    width: int = 512
    height: int = 512
    steps: int = 1
    streams: int = 1
    cfg_type: str = "none"
    kv_length: int = 300  # prompt tokens the K/V inputs hold: the stream config's max_sequence_length
    precision: Precision = Precision.FP32

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 32:
                raise ValueError(f"{name} must be a positive multiple of 32, got {value!r}")
        for name, low, high in (("steps", 1, 4), ("streams", 1, 64), ("kv_length", 1, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.cfg_type not in CFG_BATCH:
            raise ValueError(f"cfg_type must be one of {', '.join(CFG_BATCH)}, got {self.cfg_type!r}")
        try:
            object.__setattr__(self, "precision", Precision(self.precision))
        except ValueError:
            raise ValueError(f"precision must be one of {', '.join(p.value for p in Precision)}, "
                             f"got {self.precision!r}") from None

    @property
    def velocity_batch(self) -> int:
        """Transformer batch when every stream's pipe is full: steps x streams, plus the negative passes."""
        n = self.steps
        per_stream = {"none": n, "self": n, "full": 2 * n, "onetime": n + 1}[self.cfg_type]
        return per_stream * self.streams

    @property
    def frame_batch(self) -> int:
        """Autoencoder batch: one new (or finished) frame per stream."""
        return self.streams

    @property
    def stream_velocity_batch(self) -> int:
        """Transformer rows of one stream with a full pipe: TensorRT's ``opt``, as one streamer on one GPU is the
        common case (issue 27); more streams still run, with kernels tuned for one."""
        return self.velocity_batch // self.streams

    def parts(self, model: ModelShapes) -> dict[PartId, PartSpec]:
        """Every part's named, typed inputs and outputs (batch at its maximum): the three components, then each
        ControlNet."""
        f = model.spatial_compression
        if self.width % f or self.height % f:
            raise ValueError(f"width and height must be multiples of the VAE's {f}x compression, "
                             f"got {self.width}x{self.height}")
        dt, c = DTYPE_NAMES[self.precision.dtype], model.latent_channels
        h, w = self.height // f, self.width // f
        b, s = self.velocity_batch, self.frame_batch
        latent = TensorSpec("hidden_states", (b, c, h, w), dt)
        kv_bias = TensorSpec("kv_bias", (b, 1, 1, self.kv_length), dt)  # 0 for real prompt tokens, -10000 for padding
        tokens = (b, (h // model.patch_size) * (w // model.patch_size), model.hidden_size)  # (B, N, D)
        transformer_inputs = (
            latent,
            TensorSpec("timestep", (b,), "float32"),  # the flow time; the timestep embedding runs in fp32
            TensorSpec("guidance", (b,), dt),
            kv_bias,
            *self._kv_inputs(model, model.num_blocks),
            *(TensorSpec(f"control_{i}", tokens, dt) for i in range(model.control_inputs)),
        )
        opt = self.stream_velocity_batch
        parts: dict[PartId, PartSpec] = {
            Component.TRANSFORMER: PartSpec(Component.TRANSFORMER, transformer_inputs,
                                            (TensorSpec("velocity", (b, c, h, w), dt),), opt),
            Component.ENCODER: PartSpec(Component.ENCODER, (TensorSpec("images", (s, 3, self.height, self.width), dt),),
                                        (TensorSpec("latents", (s, c, h, w), dt),), 1),
            Component.DECODER: PartSpec(Component.DECODER, (TensorSpec("latents", (s, c, h, w), dt),),
                                        (TensorSpec("images", (s, 3, self.height, self.width), dt),), 1),
        }
        for index, blocks in enumerate(model.controlnet_blocks):
            part = ControlNetPart(index)
            inputs = (
                latent,
                TensorSpec("timestep", (b,), "float32"),
                TensorSpec("guidance", (b,), dt),
                TensorSpec("control", (b, c, h, w), dt),  # the control latent, in the VAE's scaled space
                TensorSpec("conditioning_scale", (b,), dt),
                kv_bias,
                *self._kv_inputs(model, blocks),
            )
            parts[part] = PartSpec(part, inputs, tuple(TensorSpec(f"residual_{i}", tokens, dt) for i in range(blocks)),
                                   opt)
        return parts

    def _kv_inputs(self, model: ModelShapes, blocks: int) -> tuple[TensorSpec, ...]:
        """``key_i`` for each block, then ``value_i``: (B, heads, kv_length, head_dim)."""
        dt = DTYPE_NAMES[self.precision.dtype]
        kv_shape = (self.velocity_batch, model.cross_heads, self.kv_length, model.cross_head_dim)
        return (*(TensorSpec(f"key_{i}", kv_shape, dt) for i in range(blocks)),
                *(TensorSpec(f"value_{i}", kv_shape, dt) for i in range(blocks)))
