"""TrigFlow math of Sana-Sprint (docs/design.md#trigflow), as pure functions on tensors.

Angles ``t`` are radians: ``t = pi/2`` is pure noise, ``t = 0`` is clean. Latents live in TrigFlow space,
``x0 = vae_latent * scaling_factor * sigma_d``. Every ``t``/``s`` argument is a tensor that broadcasts
against the latents, normally of shape (B, 1, 1, 1).
"""

from __future__ import annotations

import torch
from torch import Tensor


def flow_time(t: Tensor) -> Tensor:
    """TrigFlow angle -> flow-matching time s in [0, 1], what Sprint's timestep embedder sees."""
    return torch.sin(t) / (torch.cos(t) + torch.sin(t))


def _flow_norm(s: Tensor) -> Tensor:
    return torch.sqrt(s**2 + (1 - s) ** 2)


def model_input(x: Tensor, s: Tensor, sigma_d: float) -> Tensor:
    """The transformer's input for latent ``x`` at flow time ``s``."""
    return (x / sigma_d) * _flow_norm(s)


def trigflow_output(x_in: Tensor, v: Tensor, s: Tensor, sigma_d: float) -> Tensor:
    """Converts the transformer's flow velocity ``v`` into the TrigFlow output F."""
    return sigma_d * ((1 - 2 * s) * x_in + (1 - 2 * s + 2 * s**2) * v) / _flow_norm(s)


def clean_estimate(x: Tensor, f: Tensor, t: Tensor) -> Tensor:
    """x0_hat = cos t * x - sin t * F."""
    return torch.cos(t) * x - torch.sin(t) * f


def add_noise(x0: Tensor, eps: Tensor, t: Tensor, sigma_d: float) -> Tensor:
    """Noises a clean latent to angle t: cos t * x0 + sin t * sigma_d * eps."""
    return torch.cos(t) * x0 + torch.sin(t) * sigma_d * eps


def noise_estimate(x: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    """The noise z a clean prediction implies: z = (x - cos t * x0) / sin t (already scaled by sigma_d)."""
    return (x - torch.cos(t) * x0) / torch.sin(t)


def clean_from_noise(x: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """Inverse of ``noise_estimate``: x0 = (x - sin t * z) / cos t."""
    return (x - torch.sin(t) * z) / torch.cos(t)


def guided_clean(x: Tensor, t: Tensor, x0_cond: Tensor, z_neg: Tensor, scale: Tensor | float) -> Tensor:
    """Classifier-free guidance in noise space: z_g = z_neg + scale * (z_cond - z_neg), back to x0."""
    z_cond = noise_estimate(x, x0_cond, t)
    z_guided = z_neg + scale * (z_cond - z_neg)
    return clean_from_noise(x, z_guided, t)
