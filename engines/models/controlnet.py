"""A ControlNet for Sana-Sprint (the Sana ControlNet-Transformer design).

Why our own class: diffusers' ``SanaControlNetModel`` is made for non-Sprint Sana. It always embeds the
timestep with ``AdaLayerNormSingle`` (no guidance embedding) and builds its blocks without qk-norm, so the
blocks of a Sprint transformer (``guidance_embeds=True``, ``qk_norm="rms_norm_across_heads"``) cannot be
copied into it and its time conditioning does not match Sprint's. This class is the same design with
Sprint's time/guidance embedding and qk-norm: copies of the first N transformer blocks, a zero-initialised
projection of the control latent added after the patch embedding, and a zero-initialised projection of
each block's output. The base transformer adds output ``i`` after its block ``i + 1`` (diffusers'
``controlnet_block_samples``), so a fresh ControlNet changes nothing until it is trained.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import ModelMixin, SanaTransformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.normalization import AdaLayerNormSingle, RMSNorm
from diffusers.models.transformers.sana_transformer import (
    SanaCombinedTimestepGuidanceEmbeddings,
    SanaTransformerBlock,
)
from torch import Tensor, nn

NON_SPRINT_CLASS = "SanaControlNetModel"


class SprintControlNetModel(ModelMixin, ConfigMixin):
    """Returns one residual per copied block, each (B, N, D) and scaled by ``conditioning_scale``."""

    @register_to_config
    def __init__(self, in_channels: int = 32, num_attention_heads: int = 36, attention_head_dim: int = 32,
                 num_layers: int = 7, num_cross_attention_heads: int = 16, cross_attention_head_dim: int = 72,
                 cross_attention_dim: int = 1152, caption_channels: int = 2304, mlp_ratio: float = 2.5,
                 attention_bias: bool = False, sample_size: int = 32, patch_size: int = 1,
                 norm_elementwise_affine: bool = False, norm_eps: float = 1e-6, interpolation_scale: int | None = None,
                 guidance_embeds: bool = True, guidance_embeds_scale: float = 0.1,
                 qk_norm: str | None = "rms_norm_across_heads") -> None:
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.patch_embed = PatchEmbed(height=sample_size, width=sample_size, patch_size=patch_size,
                                      in_channels=in_channels, embed_dim=inner, interpolation_scale=interpolation_scale,
                                      pos_embed_type="sincos" if interpolation_scale is not None else None)
        self.time_embed: nn.Module = (SanaCombinedTimestepGuidanceEmbeddings(inner) if guidance_embeds
                                      else AdaLayerNormSingle(inner))
        self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=inner)
        self.caption_norm = RMSNorm(inner, eps=1e-5, elementwise_affine=True)
        self.transformer_blocks = nn.ModuleList([
            SanaTransformerBlock(inner, num_attention_heads, attention_head_dim,
                                 num_cross_attention_heads=num_cross_attention_heads,
                                 cross_attention_head_dim=cross_attention_head_dim,
                                 cross_attention_dim=cross_attention_dim, attention_bias=attention_bias,
                                 norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
                                 mlp_ratio=mlp_ratio, qk_norm=qk_norm)
            for _ in range(num_layers)
        ])
        self.input_block = nn.Linear(inner, inner)
        self.controlnet_blocks = nn.ModuleList([nn.Linear(inner, inner) for _ in range(num_layers)])
        for layer in (self.input_block, *self.controlnet_blocks):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def from_transformer(cls, transformer: SanaTransformer2DModel, num_layers: int = 7) -> SprintControlNetModel:
        """A ControlNet initialised from a Sprint transformer's embeddings and first ``num_layers`` blocks
        (the starting point for training one); its zero projections make it a no-op until trained."""
        c = transformer.config
        if not c.guidance_embeds:
            raise ValueError("transformer must be a Sana-Sprint transformer (config.guidance_embeds=True)")
        if not 1 <= num_layers <= c.num_layers:
            raise ValueError(f"num_layers must lie in 1..{c.num_layers}, got {num_layers}")
        net = cls(in_channels=c.in_channels, num_attention_heads=c.num_attention_heads,
                  attention_head_dim=c.attention_head_dim, num_layers=num_layers,
                  num_cross_attention_heads=c.num_cross_attention_heads,
                  cross_attention_head_dim=c.cross_attention_head_dim, cross_attention_dim=c.cross_attention_dim,
                  caption_channels=c.caption_channels, mlp_ratio=c.mlp_ratio, attention_bias=c.attention_bias,
                  sample_size=c.sample_size, patch_size=c.patch_size,
                  norm_elementwise_affine=c.norm_elementwise_affine, norm_eps=c.norm_eps,
                  interpolation_scale=c.interpolation_scale, guidance_embeds=True,
                  guidance_embeds_scale=c.guidance_embeds_scale, qk_norm=c.qk_norm)
        for name in ("patch_embed", "time_embed", "caption_projection", "caption_norm"):
            getattr(net, name).load_state_dict(getattr(transformer, name).state_dict())
        for mine, theirs in zip(net.transformer_blocks, transformer.transformer_blocks):
            mine.load_state_dict(copy.deepcopy(theirs.state_dict()))
        return net.to(dtype=next(transformer.parameters()).dtype)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """diffusers' loader, after refusing non-Sprint ``SanaControlNetModel`` checkpoints with the reason."""
        config_file = Path(pretrained_model_name_or_path) / kwargs.get("subfolder", "") / "config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            if config.get("_class_name") == NON_SPRINT_CLASS or not config.get("guidance_embeds", False):
                raise ValueError(
                    f"{pretrained_model_name_or_path} is a ControlNet for non-Sprint Sana ({NON_SPRINT_CLASS}): it has "
                    "no guidance embedding and no qk-norm, and was trained on flow-matching timesteps Sprint does not "
                    "use, so its residuals would not fit a Sana-Sprint transformer. Use a Sprint ControlNet "
                    "(SprintControlNetModel) or train one with SprintControlNetModel.from_transformer.")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def cross_attention_heads(self) -> int:
        return int(self.config.num_cross_attention_heads)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Tensor, guidance: Tensor,
                controlnet_cond: Tensor, conditioning_scale: Tensor | float = 1.0,
                encoder_attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """hidden_states / controlnet_cond (B, C, h, w) in the transformer's input space; timestep (B,) flow
        time; guidance (B,) already multiplied by guidance_embeds_scale; conditioning_scale a number or (B,)."""
        if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
        B, _, h, w = hidden_states.shape
        p = self.config.patch_size
        x = self.patch_embed(hidden_states)  # (B, N, D)
        x = x + self.input_block(self.patch_embed(controlnet_cond.to(x.dtype)))
        if self.config.guidance_embeds:
            temb, _ = self.time_embed(timestep, guidance=guidance, hidden_dtype=x.dtype)
        else:
            temb, _ = self.time_embed(timestep, batch_size=B, hidden_dtype=x.dtype)
        text = self.caption_norm(self.caption_projection(encoder_hidden_states).view(B, -1, x.shape[-1]))
        scale = torch.as_tensor(conditioning_scale, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        residuals = []
        for block, out in zip(self.transformer_blocks, self.controlnet_blocks):
            x = block(x, None, text, encoder_attention_mask, temb, h // p, w // p)
            residuals.append(out(x) * scale)  # (B, N, D)
        return tuple(residuals)
