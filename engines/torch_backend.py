"""PyTorch eager backend: diffusers' SanaTransformer2DModel and AutoencoderDC, with cached prompt K/V."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderDC, SanaTransformer2DModel
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn

from engines.base import ControlBatch, Autoencoder, ModelBackend, ModelGeometry
from engines.prompt_kv import KVBatch, PromptKV
from engines.models.controlnet import SprintControlNetModel

logger = logging.getLogger(__name__)


class CachedCrossAttnProcessor:
    """Cross-attention that reads precomputed K/V instead of projecting the prompt on every call.

    diffusers' Sana blocks do not pass attention kwargs to their processors, so the K/V of the current
    batch are set on this object before each transformer call (``bind``) and cleared after it.
    """

    def __init__(self) -> None:
        self.key: Tensor | None = None
        self.value: Tensor | None = None
        self.bias: Tensor | None = None

    def bind(self, key: Tensor | None, value: Tensor | None, bias: Tensor | None) -> None:
        self.key, self.value, self.bias = key, value, bias

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        if self.key is None or self.value is None:
            raise RuntimeError("CachedCrossAttnProcessor called without bound prompt K/V")
        B, N, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        query = query.view(B, N, attn.heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(query, self.key, self.value, attn_mask=self.bias)
        out = out.transpose(1, 2).reshape(B, N, -1).to(query.dtype)  # (B, N, heads * head_dim)
        return attn.to_out[1](attn.to_out[0](out))


class DcaeAutoencoder:
    """diffusers' AutoencoderDC (DC-AE or DC-AE-Lite) as an ``Autoencoder``."""

    def __init__(self, vae: AutoencoderDC) -> None:
        self.vae = vae.eval().requires_grad_(False)

    def encode(self, images: Tensor) -> Tensor:
        return self.vae.encode(images.to(self.vae.dtype)).latent

    def decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents.to(self.vae.dtype)).sample


def autoencoder_chunk(device: torch.device) -> int | None:
    """Frames per autoencoder call: one at a time on a CPU, where several frames' full-resolution activations
    outgrow the caches (benchmarks/README.md#measurements-behind-design-choices), all at once elsewhere."""
    return 1 if device.type == "cpu" else None


class TorchBackend(ModelBackend):
    """Eager PyTorch. Installs a ``CachedCrossAttnProcessor`` on every block's ``attn2``.

    ``vae`` (the model's DC-AE) fixes the latent geometry; ``encoder``/``decoder`` replace it for encoding
    or decoding (the tiny autoencoder, DC-AE-Lite) and must share its latent space. Several frames go
    through the autoencoder in chunks of ``autoencoder_chunk(device)``."""

    def __init__(self, transformer: SanaTransformer2DModel, vae: AutoencoderDC, *,
                 encoder: Autoencoder | None = None, decoder: Autoencoder | None = None,
                 controlnets: Sequence[SprintControlNetModel] = ()) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.controlnets = [net.eval().requires_grad_(False) for net in controlnets]
        self._encoder: Autoencoder = encoder or DcaeAutoencoder(vae)
        self._decoder: Autoencoder = decoder or DcaeAutoencoder(vae)
        param = next(self.transformer.parameters())
        self.geometry = ModelGeometry(
            latent_channels=int(vae.config.latent_channels),
            spatial_compression=int(vae.spatial_compression_ratio),
            scaling_factor=float(vae.config.scaling_factor),
            guidance_embeds_scale=float(transformer.config.guidance_embeds_scale),
            cross_attention_heads=int(transformer.config.num_cross_attention_heads),
            device=param.device,
            dtype=param.dtype,
        )
        if not transformer.config.guidance_embeds:
            raise ValueError("transformer must be a Sana-Sprint model (config.guidance_embeds=True)")
        # K/V order: the transformer's blocks, then each ControlNet's blocks
        self._text_models: list[nn.Module] = [self.transformer, *self.controlnets]
        self._blocks = [b for m in self._text_models for b in m.transformer_blocks]
        self._processors = [CachedCrossAttnProcessor() for _ in self._blocks]
        for block, proc in zip(self._blocks, self._processors):
            block.attn2.set_processor(proc)
        self._caption_channels = int(transformer.config.caption_channels)

    @property
    def encoder(self) -> Autoencoder:
        return self._encoder

    @property
    def decoder(self) -> Autoencoder:
        return self._decoder

    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        return self._in_chunks(self._encoder.encode, images)

    @torch.inference_mode()
    def decode(self, latents: Tensor) -> Tensor:
        return self._in_chunks(self._decoder.decode, latents)

    def _in_chunks(self, run: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        chunk = autoencoder_chunk(self.geometry.device)
        if chunk is None or x.shape[0] <= chunk:
            return run(x)
        return torch.cat([run(part) for part in x.split(chunk)])

    @torch.inference_mode()
    def prompt_kv(self, embeds: Tensor) -> PromptKV:
        keys, values = [], []
        for model in self._text_models:  # each has its own caption projection
            hidden = model.caption_norm(model.caption_projection(embeds[None].to(self.geometry.dtype)))  # (1, L, D)
            for block in model.transformer_blocks:
                attn = block.attn2
                key = attn.to_k(hidden)
                if attn.norm_k is not None:
                    key = attn.norm_k(key)
                keys.append(key[0])
                values.append(attn.to_v(hidden)[0])
        return PromptKV(keys=tuple(keys), values=tuple(values))

    def _control_residuals(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, placeholder: Tensor,
                           control: ControlBatch) -> list[Tensor] | None:
        """Each ControlNet's per-block residuals, summed over the nets; None when every scale is 0 (exactly off)."""
        total: list[Tensor] = []
        for i, (net, cond, scale) in enumerate(zip(self.controlnets, control.conds, control.scales)):
            if not control.is_on(i):
                continue
            residuals = net(x_in, placeholder, timestep, guidance, cond.to(self.geometry.dtype), scale)
            for i, r in enumerate(residuals):  # (B, N, D); nets may copy different numbers of blocks
                if i < len(total):
                    total[i] = total[i] + r
                else:
                    total.append(r)
        return total or None

    @torch.inference_mode()
    def velocity(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, kv: KVBatch,
                 control: ControlBatch | None = None) -> Tensor:
        B = x_in.shape[0]
        if kv.batch_size != B:
            raise ValueError(f"kv batch size {kv.batch_size} does not match x_in batch size {B}")
        for proc, key, value in zip(self._processors, kv.keys, kv.values):
            proc.bind(key, value, kv.bias)
        # the prompt lives in the bound K/V; one zero token keeps the caption projection's cost negligible
        placeholder = x_in.new_zeros((B, 1, self._caption_channels), dtype=self.geometry.dtype)
        x, g = x_in.to(self.geometry.dtype), guidance.to(self.geometry.dtype)
        try:
            residuals = None
            if control is not None:
                if len(control.conds) != len(self.controlnets):
                    raise ValueError(f"control has {len(control.conds)} entries for {len(self.controlnets)} ControlNets")
                residuals = self._control_residuals(x, timestep, g, placeholder, control)
            return self.transformer(x, encoder_hidden_states=placeholder, timestep=timestep, guidance=g,
                                    controlnet_block_samples=residuals, return_dict=False)[0]
        finally:
            for proc in self._processors:
                proc.bind(None, None, None)
