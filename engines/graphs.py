"""The modules that get exported: each part the stream engine runs, with flat, named tensor inputs.

Export safety (docs/design.md#dependency-facts): the dynamo exporter's optimizer deletes ``x + 1e-15`` (as 0),
which turns Sana's linear attention (and DC-AE's) into 0/0 = NaN where a ReLU'd query is all zero. While
exporting, ``export_safe`` swaps in versions that guard the denominator with ``clamp_min(1e-15)``, which
the optimizer keeps. The denominators are sums of non-negative products, so ``max(d, eps)`` equals
``d + eps`` to float precision; the live modules get their own processors back afterwards.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers import SanaTransformer2DModel
from diffusers.models.attention_processor import Attention, SanaLinearAttnProcessor2_0, SanaMultiscaleLinearAttention
from torch import Tensor, nn

from engines.base import ImageCodec
from engines.torch_backend import CachedCrossAttnProcessor, DcaeCodec
from stream.models.controlnet import SprintControlNetModel

EPS = 1e-15  # the epsilon of diffusers' Sana linear attention and DC-AE's SanaMultiscaleLinearAttention


class GuardedLinearAttnProcessor:
    """diffusers' ``SanaLinearAttnProcessor2_0`` with ``clamp_min`` instead of ``+ 1e-15``."""

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None) -> Tensor:
        original_dtype = hidden_states.dtype
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        query = query.transpose(1, 2).unflatten(1, (attn.heads, -1))  # (B, heads, head_dim, N)
        key = key.transpose(1, 2).unflatten(1, (attn.heads, -1)).transpose(2, 3)  # (B, heads, N, head_dim)
        value = value.transpose(1, 2).unflatten(1, (attn.heads, -1))  # (B, heads, head_dim, N)
        query, key = F.relu(query).float(), F.relu(key).float()
        value = F.pad(value.float(), (0, 0, 0, 1), mode="constant", value=1.0)  # (B, heads, head_dim + 1, N)
        out = torch.matmul(torch.matmul(value, key), query)  # (B, heads, head_dim + 1, N)
        out = out[:, :, :-1] / out[:, :, -1:].clamp_min(EPS)
        out = out.flatten(1, 2).transpose(1, 2).to(original_dtype)  # (B, N, heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if original_dtype == torch.float16:
            out = out.clip(-65504, 65504)
        return out


def _guarded_linear(self: SanaMultiscaleLinearAttention, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    value = F.pad(value, (0, 0, 0, 1), mode="constant", value=1)
    out = torch.matmul(torch.matmul(value, key.transpose(-1, -2)), query).to(dtype=torch.float32)
    return out[:, :, :-1] / out[:, :, -1:].clamp_min(self.eps)


def _guarded_quadratic(self: SanaMultiscaleLinearAttention, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    scores = torch.matmul(key.transpose(-1, -2), query).to(dtype=torch.float32)
    scores = scores / torch.sum(scores, dim=2, keepdim=True).clamp_min(self.eps)
    return torch.matmul(value, scores.to(value.dtype))


@contextlib.contextmanager
def export_safe(module: nn.Module) -> Iterator[None]:
    """Swaps every epsilon-guarded division under ``module`` for a ``clamp_min`` one, and back afterwards."""
    swapped: list[tuple[Attention, object]] = []
    patched: list[SanaMultiscaleLinearAttention] = []
    try:
        for sub in module.modules():
            if isinstance(sub, Attention) and isinstance(sub.processor, SanaLinearAttnProcessor2_0):
                swapped.append((sub, sub.processor))
                sub.processor = GuardedLinearAttnProcessor()  # type: ignore[assignment]
            elif isinstance(sub, SanaMultiscaleLinearAttention):
                patched.append(sub)
                sub.apply_linear_attention = types.MethodType(_guarded_linear, sub)  # type: ignore[method-assign]
                sub.apply_quadratic_attention = types.MethodType(_guarded_quadratic, sub)  # type: ignore[method-assign]
        yield
    finally:
        for attn, processor in swapped:
            attn.processor = processor  # type: ignore[assignment]
        for sub in patched:
            del sub.apply_linear_attention, sub.apply_quadratic_attention


def cached_kv_processors(blocks: nn.ModuleList) -> list[CachedCrossAttnProcessor]:
    """Each block's ``CachedCrossAttnProcessor`` (the TorchBackend's own where it set one, else a new one)."""
    processors = []
    for block in blocks:
        proc = block.attn2.processor
        if not isinstance(proc, CachedCrossAttnProcessor):
            proc = CachedCrossAttnProcessor()
            block.attn2.set_processor(proc)
        processors.append(proc)
    return processors


@contextlib.contextmanager
def bound_kv(processors: list[CachedCrossAttnProcessor], kv: tuple[Tensor, ...], kv_bias: Tensor) -> Iterator[None]:
    """Binds ``kv`` (every block's key, then every block's value) to ``processors`` for one call."""
    n = len(processors)
    if len(kv) != 2 * n:
        raise ValueError(f"expected {n} keys and {n} values, got {len(kv)} tensors")
    for i, proc in enumerate(processors):
        proc.bind(kv[i], kv[n + i], kv_bias)
    try:
        yield
    finally:
        for proc in processors:
            proc.bind(None, None, None)


class VelocityGraph(nn.Module):
    """The transformer with each block's cross-attention K/V as inputs (``key_i``, ``value_i``: (B, heads, L,
    head_dim)), an additive mask ``kv_bias`` (B, 1, 1, L) and ControlNet residuals ``control_i`` (B, N, D),
    one per block but the last. The prompt itself is not an input.

    ``control_i`` is added after block ``i + 1`` (diffusers' ``controlnet_block_samples``); zeros add nothing,
    so one graph serves runs with ControlNets, without them, and with nets of any depth (the inputs past a
    net's last residual stay zero)."""

    def __init__(self, transformer: SanaTransformer2DModel) -> None:
        super().__init__()
        self.transformer = transformer
        self.processors = cached_kv_processors(transformer.transformer_blocks)
        self.caption_channels = int(transformer.config.caption_channels)

    def forward(self, hidden_states: Tensor, timestep: Tensor, guidance: Tensor, kv_bias: Tensor,
                *kv_and_control: Tensor) -> Tensor:
        n = len(self.processors)
        kv, control = kv_and_control[:2 * n], kv_and_control[2 * n:]
        if len(control) != n - 1:
            raise ValueError(f"expected {n - 1} control residuals, got {len(control)}")
        # one zero caption token: the bound K/V replace the prompt (the caption projection is folded away)
        placeholder = hidden_states.new_zeros((hidden_states.shape[0], 1, self.caption_channels))
        with bound_kv(self.processors, kv, kv_bias):
            return self.transformer(hidden_states, encoder_hidden_states=placeholder, timestep=timestep,
                                    guidance=guidance, controlnet_block_samples=control or None,
                                    return_dict=False)[0]


class ControlNetGraph(nn.Module):
    """A ControlNet with its blocks' K/V as inputs (as ``VelocityGraph``): hidden_states and control (B, C, h, w),
    timestep and guidance (B,), conditioning_scale (B,), kv_bias, key_i, value_i -> one residual (B, N, D) per
    block, already scaled."""

    def __init__(self, net: SprintControlNetModel) -> None:
        super().__init__()
        self.net = net
        self.processors = cached_kv_processors(net.transformer_blocks)
        self.caption_channels = int(net.config.caption_channels)

    def forward(self, hidden_states: Tensor, timestep: Tensor, guidance: Tensor, control: Tensor,
                conditioning_scale: Tensor, kv_bias: Tensor, *kv: Tensor) -> tuple[Tensor, ...]:
        # as in VelocityGraph: the bound K/V replace the prompt, one zero caption token stands in for it
        placeholder = hidden_states.new_zeros((hidden_states.shape[0], 1, self.caption_channels))
        with bound_kv(self.processors, kv, kv_bias):
            return self.net(hidden_states, placeholder, timestep, guidance, control, conditioning_scale)


def codec_module(codec: ImageCodec) -> nn.Module:
    """The nn.Module holding an ImageCodec's weights (DcaeCodec keeps its AutoencoderDC in ``vae``)."""
    if isinstance(codec, nn.Module):
        return codec
    if isinstance(codec, DcaeCodec):
        return codec.vae
    raise TypeError(f"cannot export a {type(codec).__name__}: it is neither an nn.Module nor a DcaeCodec")


class EncodeGraph(nn.Module):
    """``codec.encode``: images (B, 3, H, W) in [-1, 1] -> unscaled latents (B, C, H/f, W/f)."""

    def __init__(self, codec: ImageCodec) -> None:
        super().__init__()
        self.codec = codec
        self.weights = codec_module(codec)  # registered, so digests and dtype casts see the weights

    def forward(self, images: Tensor) -> Tensor:
        return self.codec.encode(images)


class DecodeGraph(nn.Module):
    """``codec.decode``: unscaled latents (B, C, h, w) -> images (B, 3, f*h, f*w) in about [-1, 1]."""

    def __init__(self, codec: ImageCodec) -> None:
        super().__init__()
        self.codec = codec
        self.weights = codec_module(codec)

    def forward(self, latents: Tensor) -> Tensor:
        return self.codec.decode(latents)
