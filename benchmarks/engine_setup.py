"""What every engine-benchmark comparison shares: the settings, one loaded model and its timed backend, the stock
pipeline, and the camera frames."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import SanaSprintImg2ImgPipeline

from benchmarks.frames import camera_frames
from benchmarks.timing import TimedBackend
from engines.base import ModelBackend
from engines.prompt_kv import KVBatch, batch_prompt_kv
from stream.config import CfgType, StreamConfig, VaeKind
from stream.engine import DEFAULT_STREAM, FrameKind, StreamEngine
from stream.prompt import PromptEncoder
from stream.tiny_model import TinyPreset

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PIPELINE_PARTS = ("text_encoder", "encode", "velocity", "decode")  # the stock pipeline's timed networks


@dataclass(frozen=True)
class BenchConfig:
    preset: str = TinyPreset.PROPORTIONAL.value
    width: int = 512
    height: int = 512
    frames: int = 30  # timed frames (or calls) per side of each comparison
    warmup: int = 2  # untimed repetitions per side before timing
    output_dir: Path = RESULTS_DIR
    prompt: str = "a watercolor painting of a city street at night, warm golden lighting"
    negative_prompt: str = "blurry, dark, low quality"
    t_start: float = 1.0  # the 1-step angle (radians); the stock pipeline gets it as max_timesteps
    batch_t_list: tuple[float, ...] = (1.2, 0.8, 0.4)  # stream batch vs sequential
    rcfg_t_list: tuple[float, ...] = (1.2, 0.9, 0.6, 0.3)  # RCFG self vs full
    cfg_scale: float = 1.5
    guidance_scale: float = 4.5
    seed: int = 0
    retries: int = 0  # repeat a comparison that other processes disturbed, keeping the least disturbed attempt
    wait_quiet_s: float = 0.0  # before each comparison, wait up to this long for the other processes to calm

    @property
    def kv_calls(self) -> int:
        return 4 * self.frames  # transformer calls are short; more of them steady the median

    def stream_config(self, t_list: Sequence[float], cfg_type: CfgType = CfgType.NONE) -> StreamConfig:
        return StreamConfig(width=self.width, height=self.height, t_list=tuple(t_list), cfg_type=cfg_type,
                            cfg_scale=self.cfg_scale, guidance_scale=self.guidance_scale, seed=self.seed,
                            prompt=self.prompt, negative_prompt=self.negative_prompt,
                            encoder=VaeKind.DCAE, decoder=VaeKind.DCAE)  # the model's own DC-AE, as the pipeline

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["kv_calls"] = self.kv_calls
        data["autoencoder"] = VaeKind.DCAE.value  # both sides encode and decode with the model's DC-AE
        return data


QUICK = {"frames": 2, "warmup": 1}


@dataclass
class Setup:
    """What every comparison shares: one loaded model, one (timed) backend over it, and the stock pipeline."""

    config: BenchConfig
    engine: StreamEngine  # from StreamEngine.from_pretrained: 1 step, cfg none, untimed
    timed: TimedBackend  # wraps engine.backend; every other engine here runs on it
    encoder: PromptEncoder
    baseline: SanaSprintImg2ImgPipeline  # loaded separately: its transformer keeps the stock processors
    frames: list[np.ndarray]

    @property
    def device(self) -> torch.device:
        return self.timed.geometry.device

    def frame(self, i: int) -> np.ndarray:
        return self.frames[i % len(self.frames)]

    def timed_engine(self, t_list: Sequence[float], cfg_type: CfgType = CfgType.NONE) -> StreamEngine:
        return StreamEngine(self.timed, self.encoder, self.config.stream_config(t_list, cfg_type),
                            sigma_d=self.engine.sigma_d)

    def kv_batch(self, backend: ModelBackend) -> KVBatch:
        kv = backend.prompt_kv(self.encoder.encode(self.config.prompt))
        return batch_prompt_kv([kv], backend.geometry.cross_attention_heads)


def load_setup(config: BenchConfig, model_dir: Path) -> Setup:
    engine = StreamEngine.from_pretrained(model_dir, config.stream_config((config.t_start,)), local_files_only=True)
    pipe = engine.pipeline
    timed = TimedBackend(engine.backend)
    baseline = SanaSprintImg2ImgPipeline.from_pretrained(model_dir, dtype=pipe.transformer.dtype, local_files_only=True)
    baseline.to(timed.geometry.device)
    baseline.set_progress_bar_config(disable=True)
    frames = camera_frames(16, config.width, config.height)
    return Setup(config, engine, timed, PromptEncoder(pipe, engine.config.max_sequence_length), baseline, frames)


def fill_pipe(engine: StreamEngine, setup: Setup) -> None:
    """Runs frames until the engine emits generated frames (its first n-1 frames are warm-up frames)."""
    for i in range(engine.config.num_steps):
        result = engine.process({DEFAULT_STREAM: setup.frame(i)})[DEFAULT_STREAM]
    if result.kind is not FrameKind.GENERATED:
        raise RuntimeError(f"the engine still warms up after {engine.config.num_steps} frames")
