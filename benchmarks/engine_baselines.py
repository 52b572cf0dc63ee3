"""What the engine benchmark measures the StreamEngine against: diffusers' img2img pipeline called once per frame,
and the engine's own work done the textbook way, one batch-1 transformer call per step."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from benchmarks.engine_setup import Setup
from engines.base import ModelBackend
from engines.prompt_kv import KVBatch
from stream import trigflow
from stream.config import StreamConfig
from stream.frames import fit_frame
from stream.image_tensors import to_tensor, to_uint8


def run_pipeline_frame(setup: Setup, frame: np.ndarray) -> np.ndarray:
    """One frame through diffusers' img2img pipeline: the same weights, angle, prompt and resolution, 1 step.

    With 1 step its schedule is [max_timesteps, 0], so ``strength=1.0`` starts at ``max_timesteps`` = t_start
    and the loop runs exactly one transformer call (docs/design.md#img2img: with 1-2 steps it cannot start lower).
    """
    c = setup.config
    out = setup.baseline(
        prompt=c.prompt, image=PIL.Image.fromarray(frame), num_inference_steps=1, max_timesteps=c.t_start,
        intermediate_timesteps=None, strength=1.0, guidance_scale=c.guidance_scale, height=c.height, width=c.width,
        use_resolution_binning=False, output_type="np", generator=torch.Generator().manual_seed(c.seed),
    ).images
    return out


class SequentialSteps:
    """The engine's work at ``t_list`` done the textbook way: per frame, one batch-1 transformer call per step,
    with the same noise (slot i uses row i of the seeded draw), angles, prompt K/V and TrigFlow functions."""

    def __init__(self, backend: ModelBackend, kv: KVBatch, config: StreamConfig, sigma_d: float) -> None:
        geo = backend.geometry
        self.backend, self.kv, self.config, self.sigma_d = backend, kv, config, sigma_d
        n, f = config.num_steps, geo.spatial_compression
        generator = torch.Generator().manual_seed(config.seed)
        noise = torch.randn((n, geo.latent_channels, config.height // f, config.width // f), generator=generator)
        self.noise = noise.to(geo.device)
        self.angles = torch.tensor(config.t_list, dtype=torch.float32, device=geo.device).view(n, 1, 1, 1)
        guidance = torch.full((1,), config.guidance_scale, device=geo.device).to(geo.dtype)
        self.guidance = guidance * geo.guidance_embeds_scale

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        geo, sigma_d = self.backend.geometry, self.sigma_d
        image = to_tensor(fit_frame(frame, self.config.width, self.config.height), geo.device)
        x0 = self.backend.encode(image).float() * geo.scaling_factor * sigma_d
        for i in range(self.config.num_steps):
            t = self.angles[i:i + 1]
            x = trigflow.add_noise(x0, self.noise[i:i + 1], t, sigma_d)
            s = trigflow.flow_time(t)
            x_in = trigflow.model_input(x, s, sigma_d)
            v = self.backend.velocity(x_in, s.flatten(), self.guidance, self.kv).float()
            x0 = trigflow.clean_estimate(x, trigflow.trigflow_output(x_in, v, s, sigma_d), t)
        return to_uint8(self.backend.decode(x0 / sigma_d / geo.scaling_factor))[0]
