"""A plain, sequential Sana-Sprint img2img written straight from docs/design.md#trigflow with diffusers' own stock
transformer (uncached, padded prompt + mask) and VAE. The engine is tested against it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import SanaSprintPipeline
from torch import Tensor

from stream.frames import fit_frame
from stream.image_tensors import to_tensor, to_uint8
from stream.prompt import default_complex_human_instruction

SIGMA_D = 0.5


@dataclass
class ReferenceSprint:
    pipe: SanaSprintPipeline  # untouched: stock attention processors

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> tuple[Tensor, Tensor]:
        return self.pipe.encode_prompt(prompt, device=torch.device("cpu"), max_sequence_length=300,
                                       complex_human_instruction=default_complex_human_instruction())

    @torch.inference_mode()
    def clean(self, x: Tensor, t: float, prompt: tuple[Tensor, Tensor], guidance_scale: float,
              control: tuple | None = None) -> Tensor:
        """One model call at angle t -> x0_hat, exactly the docs/design.md#trigflow formulas. ``control`` is (a stock
        SprintControlNetModel, its control latent, its scale)."""
        embeds, mask = prompt
        tt = torch.tensor(t)
        s = torch.sin(tt) / (torch.cos(tt) + torch.sin(tt))
        norm = torch.sqrt(s**2 + (1 - s) ** 2)
        x_in = (x / SIGMA_D) * norm
        g = torch.full([1], guidance_scale) * self.pipe.transformer.config.guidance_embeds_scale
        residuals = None
        if control is not None:
            net, cond, scale = control
            residuals = net(x_in, embeds, s.view(1), g, cond, scale, encoder_attention_mask=mask)
        v = self.pipe.transformer(x_in, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                                  guidance=g, timestep=s.view(1), controlnet_block_samples=residuals,
                                  return_dict=False)[0]
        f = SIGMA_D * ((1 - 2 * s) * x_in + (1 - 2 * s + 2 * s**2) * v) / norm
        return math.cos(t) * x - math.sin(t) * f

    @torch.inference_mode()
    def encode(self, frame: np.ndarray, width: int, height: int) -> Tensor:
        image = to_tensor(fit_frame(frame, width, height), torch.device("cpu"))
        return self.pipe.vae.encode(image).latent * self.pipe.vae.config.scaling_factor * SIGMA_D

    @torch.inference_mode()
    def decode(self, x0: Tensor) -> np.ndarray:
        return to_uint8(self.pipe.vae.decode(x0 / SIGMA_D / self.pipe.vae.config.scaling_factor).sample)[0]

    def img2img(self, frame: np.ndarray, *, width: int, height: int, t_list: tuple[float, ...], seed: int,
                prompt: str, negative_prompt: str = "", guidance_scale: float = 4.5, cfg_type: str = "none",
                cfg_scale: float = 1.0, delta: float = 1.0) -> np.ndarray:
        """Sequential img2img of one frame: n model calls (2n for full), then decode."""
        x0_img = self.encode(frame, width, height)
        n = len(t_list)
        eps = torch.randn((n, *x0_img.shape[1:]), generator=torch.Generator().manual_seed(seed))
        cond = self.encode_prompt(prompt)
        neg = self.encode_prompt(negative_prompt) if cfg_type in ("full", "onetime") else None
        x = math.cos(t_list[0]) * x0_img + math.sin(t_list[0]) * SIGMA_D * eps[0:1]
        r = x0_img  # RCFG reference latent (self); onetime replaces it at the first step
        x0_hat = x0_img
        for i, t in enumerate(t_list):
            x0_hat = self.clean(x, t, cond, guidance_scale)
            if cfg_type != "none":
                if cfg_type == "full":
                    z_neg = (x - math.cos(t) * self.clean(x, t, neg, guidance_scale)) / math.sin(t)
                else:
                    if cfg_type == "onetime" and i == 0:
                        r = self.clean(x, t, neg, guidance_scale)
                    z_neg = delta * (x - math.cos(t) * r) / math.sin(t)
                z_cond = (x - math.cos(t) * x0_hat) / math.sin(t)
                z_g = z_neg + cfg_scale * (z_cond - z_neg)
                x0_hat = (x - math.sin(t) * z_g) / math.cos(t)
            if i + 1 < n:
                t_next = t_list[i + 1]
                x = math.cos(t_next) * x0_hat + math.sin(t_next) * SIGMA_D * eps[i + 1:i + 2]
        return self.decode(x0_hat)
