"""StreamEngine: Sana-Sprint img2img for live video, one model batch per call over all steps and streams."""

from __future__ import annotations

import enum
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from engines.base import ControlBatch, ModelBackend
from engines.prompt_kv import KVBatch, PromptKV, batch_prompt_kv
from engines.transfer import HostImage, device_transfer
from stream import trigflow
from stream.config import CfgType, StreamConfig
from stream.control import get_preprocessor
from stream.exceptions import UnknownStreamError
from stream.frames import fit_frame, validate_frame
from stream.image_tensors import to_tensor
from stream.prompt import PromptEncoder
from stream.similarity_filter import SimilarityFilter
from stream.state import Conditioning, StepPlan, StreamSettings, StreamState

logger = logging.getLogger(__name__)

DEFAULT_STREAM = "default"


class FrameKind(str, enum.Enum):
    GENERATED = "generated"  # a finished generation
    WARMUP = "warmup"  # the pipe is not full yet: the (resized, cropped) input frame itself
    SKIPPED = "skipped"  # the similarity filter skipped it: the last finished frame again


@dataclass(frozen=True)
class FrameResult:
    image: np.ndarray  # (height, width, 3) uint8 RGB
    kind: FrameKind
    tag: Any  # the tag of the input frame this image came from (a timestamp, say)


@dataclass
class PreparedFrame:
    """A frame after preprocessing (``StreamEngine.prepare``): fitted to the output size, as a tensor,
    with the similarity filter's verdict."""

    stream_id: str
    state: StreamState
    fitted: np.ndarray  # (height, width, 3) uint8
    image: Tensor  # (1, 3, height, width) in [-1, 1] on the model's device
    tag: Any
    skipped: bool
    controls: tuple[Tensor, ...] = ()  # one control image (1, 3, height, width) in [-1, 1] per ControlNet


@dataclass
class PendingResult:
    """A result before postprocessing (``StreamEngine.finish``); ``image`` (on its way to the host) only when
    generated."""

    prepared: PreparedFrame
    kind: FrameKind
    tag: Any
    image: HostImage | None = None

    @classmethod
    def skipped_frame(cls, prepared: PreparedFrame) -> PendingResult:
        """The result of a frame the similarity filter skipped: ``finish`` shows the stream's last output."""
        return cls(prepared, FrameKind.SKIPPED, prepared.tag)


class StreamEngine:
    """Restyles frames of one or more streams. Each stream has its own prompt K/V, noise, frames in flight
    and similarity filter; ``process`` runs every stream that has a frame in one model batch.

    While a stream's pipe fills (the first ``len(t_list) - 1`` frames) it returns the input frame, resized
    and cropped, marked ``FrameKind.WARMUP``: never a half-denoised image.
    """

    def __init__(self, backend: ModelBackend, prompt_encoder: PromptEncoder, config: StreamConfig,
                 sigma_d: float = 0.5) -> None:
        geo = backend.geometry
        for name in ("width", "height"):
            if getattr(config, name) % geo.spatial_compression:
                raise ValueError(f"{name} must be a multiple of the VAE's {geo.spatial_compression}x compression")
        self.backend = backend
        self.config = config
        self.sigma_d = float(sigma_d)
        self.prompt_encoder = prompt_encoder
        self._latent_shape = (geo.latent_channels, config.height // geo.spatial_compression,
                              config.width // geo.spatial_compression)
        self._defaults = StreamSettings.from_config(config)
        self._streams: dict[str, StreamState] = {}
        self._registry_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._kv_cache: tuple[tuple[tuple[PromptKV, int], ...], KVBatch] | None = None
        self.pipeline: Any = None  # the diffusers pipeline the weights came from, when loaded by from_pretrained
        self._preprocessors = [get_preprocessor(c.preprocessor) for c in config.controlnets]
        # uploads and downloads that never wait on the host for the model's work (engines.transfer)
        self.transfer = device_transfer(geo.device)
        self.add_stream(DEFAULT_STREAM)
        logger.info("stream engine ready: %dx%d, %d step(s), cfg %s, %s %s", config.width, config.height,
                    config.num_steps, config.cfg_type.value, geo.device, geo.dtype)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike[str], config: StreamConfig | None = None, *,
                        local_files_only: bool | None = None, compile_options: Any = None) -> StreamEngine:
        """Loads a diffusers-format Sana-Sprint directory or hub id (see ``stream.loading``) and runs it on
        ``config.backend``. Compiled backends (onnxruntime, tensorrt) are built for this config's size, steps
        and cfg type, with ``compile_options`` (an ``engines.compile.CompileOptions``: streams, precision,
        cache directory, parity check) or its defaults; each of ``config.controlnets`` becomes a part of its own
        next to one transformer that serves with and without them."""
        from engines import BackendName
        from stream.loading import build_spec, load_model

        config = config or StreamConfig()
        loaded = load_model(model, config, local_files_only)
        pipe = loaded.pipeline
        backend: ModelBackend = loaded.torch_backend
        if config.backend is not BackendName.TORCH:
            from engines.compile import compile_backend
            from engines.compile_options import CompileOptions

            options = compile_options or CompileOptions()
            backend = compile_backend(backend, build_spec(config, options), options, config.backend).backend
        engine = cls(backend, PromptEncoder(pipe, config.max_sequence_length), config,
                     sigma_d=float(pipe.scheduler.config.sigma_data))
        engine.pipeline = pipe
        return engine

    # ---- streams and live settings -------------------------------------------------------------------

    def add_stream(self, stream_id: str, **settings: Any) -> StreamSettings:
        """Registers a stream with the engine's default settings, overridden by ``settings``."""
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"stream_id must be a non-empty string, got {stream_id!r}")
        new = self._defaults.replace(self.config.cfg_type, **settings)
        state = StreamState(stream_id, self._condition(new, None), self._make_filter(new.seed))
        with self._registry_lock:
            if stream_id in self._streams:
                raise ValueError(f"stream_id {stream_id!r} is already registered")
            self._streams[stream_id] = state
        return new

    def remove_stream(self, stream_id: str) -> None:
        with self._registry_lock:
            if self._streams.pop(stream_id, None) is None:
                raise UnknownStreamError(stream_id)

    def stream_ids(self) -> list[str]:
        with self._registry_lock:
            return list(self._streams)

    def settings(self, stream_id: str = DEFAULT_STREAM) -> StreamSettings:
        return self._stream(stream_id).conditioning.settings

    def update(self, stream: str | None = None, **changes: Any) -> dict[str, StreamSettings]:
        """Changes live settings of one stream, or of every stream (and the defaults) when ``stream`` is None.

        Safe from any thread: everything is validated first and derived tensors are built before the swap,
        so a frame sees either the old settings or the new ones, never half of each.
        """
        with self._registry_lock:
            states = list(self._streams.values()) if stream is None else [self._stream_locked(stream)]
        if stream is None:
            self._defaults.replace(self.config.cfg_type, **changes)  # validate even when no stream exists
        applied = {}
        for state in states:
            with state.lock:
                old = state.conditioning
                new = old.settings.replace(self.config.cfg_type, **changes)
                state.conditioning = self._condition(new, old)
            applied[state.stream_id] = new
        if stream is None:
            self._defaults = self._defaults.replace(self.config.cfg_type, **changes)
        return applied

    def set_prompt(self, prompt: str, negative_prompt: str | None = None, stream: str | None = None) -> None:
        changes: dict[str, Any] = {"prompt": prompt}
        if negative_prompt is not None:
            changes["negative_prompt"] = negative_prompt
        self.update(stream, **changes)

    def set_seed(self, seed: int, stream: str | None = None) -> None:
        self.update(stream, seed=seed)

    def set_t_list(self, t_list: tuple[float, ...], stream: str | None = None) -> None:
        """New angles. With the same number of steps, frames in flight continue at the new angles; with
        another number the stream's pipe restarts (its next outputs are warm-up frames)."""
        self.update(stream, t_list=tuple(t_list))

    def set_strength(self, strength: float, stream: str | None = None) -> None:
        """Sets ``t_list[0]`` to ``strength`` (radians) and scales the later angles by the same factor."""
        self.update(stream, strength=strength)

    def set_guidance_scale(self, guidance_scale: float, stream: str | None = None) -> None:
        self.update(stream, guidance_scale=guidance_scale)

    def set_cfg_scale(self, cfg_scale: float, stream: str | None = None) -> None:
        self.update(stream, cfg_scale=cfg_scale)

    # ---- frames --------------------------------------------------------------------------------------

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Restyles one frame of the default stream: uint8 (H, W, 3) RGB in, uint8 (height, width, 3) out."""
        return self.process({DEFAULT_STREAM: frame})[DEFAULT_STREAM].image

    def process(self, frames: Mapping[str, np.ndarray],
                tags: Mapping[str, Any] | None = None) -> dict[str, FrameResult]:
        """One engine call: at most one new frame per stream, all of them in one model batch.
        It is ``prepare``, ``run`` and ``finish`` in a row; a threaded pipeline calls them on three threads."""
        tags = tags or {}
        prepared = [self.prepare(sid, frame, tags.get(sid)) for sid, frame in frames.items()]
        return {p.prepared.stream_id: self.finish(p) for p in self.run(prepared)}

    def prepare(self, stream_id: str, frame: np.ndarray, tag: Any = None) -> PreparedFrame:
        """Validates, resizes and crops a frame, asks the stream's similarity filter about it (on the host: its
        verdict is a host decision) and starts the uploads."""
        validate_frame(frame, f"frames[{stream_id!r}]")
        state = self._stream(stream_id)
        fitted = fit_frame(frame, self.config.width, self.config.height)
        image = self.transfer.upload(fitted)
        skipped = False
        if state.filter is not None:  # its verdict is a host decision: it reads a host copy, never the device's
            on_host = image if image.device.type == "cpu" else to_tensor(fitted, torch.device("cpu"))
            skipped = state.filter.should_skip(on_host)
        controls = () if skipped else tuple(self.transfer.upload(pre(fitted)) for pre in self._preprocessors)
        return PreparedFrame(stream_id, state, fitted, image, tag, skipped, controls)

    def run(self, prepared: list[PreparedFrame]) -> list[PendingResult]:
        """The model work for at most one prepared frame per stream: encode, one batch, decode."""
        if len({p.stream_id for p in prepared}) != len(prepared):
            raise ValueError("prepared must hold at most one frame per stream")
        work = [p for p in prepared if not p.skipped]
        results = {id(p): PendingResult.skipped_frame(p) for p in prepared if p.skipped}
        if work:
            with self._run_lock:
                results.update({id(r.prepared): r for r in self._denoise(work)})
        return [results[id(p)] for p in prepared]

    def finish(self, pending: PendingResult) -> FrameResult:
        """Postprocessing: pixels to uint8, and the stream's last output for skipped frames."""
        state = pending.prepared.state
        if pending.kind is FrameKind.GENERATED:
            assert pending.image is not None
            state.last_output = pending.image.result()  # the frame path's one wait on the device
            return FrameResult(state.last_output, pending.kind, pending.tag)
        if pending.kind is FrameKind.SKIPPED and state.last_output is not None:
            return FrameResult(state.last_output, pending.kind, pending.tag)
        return FrameResult(pending.prepared.fitted, pending.kind, pending.tag)

    # ---- internals -----------------------------------------------------------------------------------

    def _denoise(self, work: list[PreparedFrame]) -> list[PendingResult]:
        sigma_d, geo = self.sigma_d, self.backend.geometry
        # 1. encode the new frames and their control images in one batch: (S * (1 + K), 3, H, W) -> latents
        S, K = len(work), len(self._preprocessors)
        images = torch.cat([w.image for w in work] + [c for w in work for c in w.controls])
        latents = self.backend.encode(images).float() * geo.scaling_factor
        x0_img = latents[:S] * sigma_d  # (S, C, h, w) in TrigFlow space
        controls = latents[S:].view(S, K, *latents.shape[1:])  # (S, K, C, h, w), the VAE's scaled space
        # 2. every stream's slots (and negative passes) in one batch
        plans = [w.state.plan(x0_img[i], w.tag, sigma_d, tuple(controls[i])) for i, w in enumerate(work)]
        x, angles, guidance, kv = self._assemble(plans)
        s = trigflow.flow_time(angles)  # (B, 1, 1, 1)
        x_in = trigflow.model_input(x, s, sigma_d)
        v = self.backend.velocity(x_in, s.flatten(), guidance, kv, self._control_batch(plans)).float()
        x0_all = trigflow.clean_estimate(x, trigflow.trigflow_output(x_in, v, s, sigma_d), angles)
        # 3. guidance per stream, then move the slots along
        results = [PendingResult(w, FrameKind.WARMUP, w.tag) for w in work]
        finished: list[tuple[PendingResult, Tensor]] = []
        offset = 0
        for result, plan in zip(results, plans):
            size = self._batch_items(plan)
            x0_hat, refs = self._guide(plan, x0_all[offset:offset + size])
            offset += size
            done = result.prepared.state.advance(plan, x0_hat, refs)
            if done is not None:
                result.kind, result.tag = FrameKind.GENERATED, done[1]
                finished.append((result, done[0]))
        # 4. decode the finished frames in one batch
        if finished:
            latents = torch.stack([x0 for _, x0 in finished]) / sigma_d / geo.scaling_factor
            images = self.backend.decode(latents)  # (F, 3, H, W)
            for (result, _), image in zip(finished, images):
                result.image = self.transfer.download(image)
        return results

    def _negative_items(self, plan: StepPlan) -> int:
        cfg = self.config.cfg_type
        return plan.x.shape[0] if cfg is CfgType.FULL else 1 if cfg is CfgType.ONETIME else 0

    def _batch_items(self, plan: StepPlan) -> int:
        return plan.x.shape[0] + self._negative_items(plan)

    def _assemble(self, plans: list[StepPlan]) -> tuple[Tensor, Tensor, Tensor, KVBatch]:
        """Batch layout, per stream: its k conditional slots, then its negative items (full: k, onetime: 1)."""
        xs, angles, guidance, rows = [], [], [], []
        for plan in plans:
            k, neg, cond = plan.x.shape[0], self._negative_items(plan), plan.cond
            xs += [plan.x, plan.x[:neg]]
            angles += [cond.angles[:k], cond.angles[:neg]]
            guidance += [cond.guidance[:k], cond.guidance[:neg]]
            rows += [(cond.kv, k)] + ([(cond.negative_kv, neg)] if neg else [])
        return torch.cat(xs), torch.cat(angles), torch.cat(guidance), self._kv_batch(tuple(rows))

    def _control_batch(self, plans: list[StepPlan]) -> ControlBatch | None:
        """Each ControlNet's control latent for every batch item: a slot uses the control map of the frame it
        holds (buffered with it), not the newest frame's; negative items reuse their slot's."""
        if not self._preprocessors:
            return None
        conds, scales = [], []
        for j in range(len(self._preprocessors)):
            per_item, per_scale = [], []
            for plan in plans:
                slots = torch.stack([c[j] for c in plan.controls])  # (k, C, h, w)
                neg = self._negative_items(plan)
                per_item += [slots, slots[:neg]]
                per_scale.append(slots.new_full((len(plan.controls) + neg,), plan.cond.settings.control_scales[j]))
            conds.append(torch.cat(per_item))
            scales.append(torch.cat(per_scale))
        on = tuple(any(plan.cond.settings.control_scales[j] != 0 for plan in plans) for j in range(len(conds)))
        return ControlBatch(tuple(conds), tuple(scales), on)

    def _kv_batch(self, rows: tuple[tuple[Any, int], ...]) -> KVBatch:
        cached = self._kv_cache
        if cached is not None and len(cached[0]) == len(rows) and all(
                a is c and n == m for (a, n), (c, m) in zip(rows, cached[0])):
            return cached[1]
        expanded = [kv for kv, count in rows for _ in range(count)]
        batch = batch_prompt_kv(expanded, self.backend.geometry.cross_attention_heads)
        self._kv_cache = (rows, batch)
        return batch

    def _guide(self, plan: StepPlan, x0: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """RCFG (docs/design.md#rcfg) on one stream's model outputs; returns x0_hat and the reference per slot."""
        cfg, cond = self.config.cfg_type, plan.cond
        k = plan.x.shape[0]
        x0_cond, x0_neg = x0[:k], x0[k:]
        if cfg is CfgType.NONE:
            return x0_cond, plan.refs
        t, x, scale = cond.angles[:k], plan.x, cond.settings.cfg_scale
        refs = list(plan.refs)
        if cfg is CfgType.FULL:
            z_neg = trigflow.noise_estimate(x, x0_neg, t)
        else:
            if cfg is CfgType.ONETIME:
                refs[0] = x0_neg[0]  # the real negative's clean prediction at slot 1
            r = torch.stack([ref for ref in refs if ref is not None])  # (k, C, h, w)
            z_neg = cond.settings.delta * trigflow.noise_estimate(x, r, t)
        return trigflow.guided_clean(x, t, x0_cond, z_neg, scale), refs

    def _condition(self, settings: StreamSettings, previous: Conditioning | None) -> Conditioning:
        """Builds the tensors for ``settings``, reusing the parts of ``previous`` that did not change."""
        geo, n = self.backend.geometry, len(settings.t_list)
        same = previous.settings if previous is not None else None
        kv = previous.kv if same and same.prompt == settings.prompt else self._prompt_kv(settings.prompt)
        negative_kv = None
        if self.config.cfg_type in (CfgType.FULL, CfgType.ONETIME):
            reuse = same and same.negative_prompt == settings.negative_prompt and previous.negative_kv is not None
            negative_kv = previous.negative_kv if reuse else self._prompt_kv(settings.negative_prompt)
        if same and same.seed == settings.seed and len(same.t_list) == n:
            noise = previous.noise
        else:  # the reproducibility contract: drawn on the CPU, slot i uses row i
            generator = torch.Generator().manual_seed(settings.seed)
            noise = torch.randn((n, *self._latent_shape), generator=generator).to(geo.device)
        angles = torch.tensor(settings.t_list, dtype=torch.float32, device=geo.device).view(n, 1, 1, 1)
        # as SanaSprintPipeline: cast to the model dtype, then scale
        guidance = torch.full((n,), settings.guidance_scale, device=geo.device).to(geo.dtype)
        guidance = guidance * geo.guidance_embeds_scale
        return Conditioning(settings, kv, negative_kv, noise, angles, guidance)

    def _prompt_kv(self, prompt: str) -> PromptKV:
        return self.backend.prompt_kv(self.prompt_encoder.encode(prompt))

    def _make_filter(self, seed: int) -> SimilarityFilter | None:
        if not self.config.similarity_filter:
            return None
        return SimilarityFilter(self.config.similarity_threshold, self.config.max_skip_frames, seed)

    def _stream(self, stream_id: str) -> StreamState:
        with self._registry_lock:
            return self._stream_locked(stream_id)

    def _stream_locked(self, stream_id: str) -> StreamState:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise UnknownStreamError(stream_id) from None
