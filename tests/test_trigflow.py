"""TrigFlow helpers (docs/design.md#trigflow) on known values and round trips."""

from __future__ import annotations

import math

import torch

from stream import trigflow

SIGMA_D = 0.5


def test_flow_time_known_values():
    t = torch.tensor([1e-6, math.pi / 4, math.pi / 2 - 1e-6])
    assert torch.allclose(trigflow.flow_time(t), torch.tensor([0.0, 0.5, 1.0]), atol=1e-5)


def test_noise_and_clean_estimates_invert_each_other():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    t = torch.tensor([0.4, 1.3]).view(2, 1, 1, 1)
    x = trigflow.add_noise(x0, eps, t, SIGMA_D)
    assert torch.allclose(trigflow.noise_estimate(x, x0, t), SIGMA_D * eps, atol=1e-5)
    assert torch.allclose(trigflow.clean_from_noise(x, SIGMA_D * eps, t), x0, atol=1e-5)


def test_exact_velocity_recovers_the_clean_latent():
    """If the model predicts the true TrigFlow velocity F = cos t * eps * sigma_d - sin t * x0, x0_hat = x0."""
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 4, 2, 2, generator=gen), torch.randn(1, 4, 2, 2, generator=gen)
    t = torch.tensor(0.9).view(1, 1, 1, 1)
    x = trigflow.add_noise(x0, eps, t, SIGMA_D)
    f = torch.cos(t) * SIGMA_D * eps - torch.sin(t) * x0
    assert torch.allclose(trigflow.clean_estimate(x, f, t), x0, atol=1e-5)


def test_model_input_and_output_conversions_are_consistent():
    """trigflow_output inverts the flow-matching parametrisation the transformer was trained with."""
    gen = torch.Generator().manual_seed(2)
    x, f_true = torch.randn(1, 4, 2, 2, generator=gen), torch.randn(1, 4, 2, 2, generator=gen)
    s = trigflow.flow_time(torch.tensor(0.7)).view(1, 1, 1, 1)
    x_in = trigflow.model_input(x, s, SIGMA_D)
    norm = torch.sqrt(s**2 + (1 - s) ** 2)
    v = (f_true * norm / SIGMA_D - (1 - 2 * s) * x_in) / (1 - 2 * s + 2 * s**2)
    assert torch.allclose(trigflow.trigflow_output(x_in, v, s, SIGMA_D), f_true, atol=1e-5)


def test_guidance_scale_one_and_zero():
    gen = torch.Generator().manual_seed(3)
    x, x0c, x0n = (torch.randn(1, 4, 2, 2, generator=gen) for _ in range(3))
    t = torch.tensor(0.8).view(1, 1, 1, 1)
    z_neg = trigflow.noise_estimate(x, x0n, t)
    assert torch.allclose(trigflow.guided_clean(x, t, x0c, z_neg, 1.0), x0c, atol=1e-5)
    assert torch.allclose(trigflow.guided_clean(x, t, x0c, z_neg, 0.0), x0n, atol=1e-5)
