"""Timing tools for benchmarks: a ModelBackend that records how long each call took, forward hooks that time
a diffusers pipeline's networks, and a runner that interleaves the sides of a comparison."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import psutil
import torch
from torch import Tensor, nn

from engines.base import ControlBatch, ModelBackend
from engines.prompt_kv import KVBatch, PromptKV

MODEL_CALLS = ("encode", "velocity", "decode")


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work, so wall-clock times cover it. A no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedBackend(ModelBackend):
    """Delegates every call to ``inner`` and records its duration (seconds) under the method's name."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.geometry = inner.geometry
        self.durations: dict[str, list[float]] = defaultdict(list)

    def reset(self) -> None:
        self.durations.clear()

    def seconds(self, *names: str) -> float:
        """Total time recorded since the last ``reset`` in the named calls (all calls when none are named)."""
        return sum(sum(self.durations[n]) for n in (names or tuple(self.durations)))

    def _timed(self, name: str, fn: Callable[..., Tensor | PromptKV], *args: object) -> Tensor | PromptKV:
        synchronize(self.geometry.device)
        start = time.perf_counter()
        out = fn(*args)
        synchronize(self.geometry.device)
        self.durations[name].append(time.perf_counter() - start)
        return out

    def encode(self, images: Tensor) -> Tensor:
        return self._timed("encode", self.inner.encode, images)

    def decode(self, latents: Tensor) -> Tensor:
        return self._timed("decode", self.inner.decode, latents)

    def velocity(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, kv: KVBatch,
                 control: ControlBatch | None = None) -> Tensor:
        return self._timed("velocity", self.inner.velocity, x_in, timestep, guidance, kv, control)

    def prompt_kv(self, embeds: Tensor) -> PromptKV:
        return self._timed("prompt_kv", self.inner.prompt_kv, embeds)

    def close(self) -> None:
        self.inner.close()


class ModuleTimer:
    """Times the forward calls of named modules with hooks (for networks called inside code we do not own,
    such as a diffusers pipeline's ``__call__``). Use as a context manager; hooks are removed on exit."""

    def __init__(self, modules: Mapping[str, nn.Module], device: torch.device) -> None:
        self._modules = dict(modules)
        self._device = device
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._started: dict[str, float] = {}
        self.durations: dict[str, list[float]] = defaultdict(list)

    def __enter__(self) -> ModuleTimer:
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            self._handles.append(module.register_forward_hook(self._post_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        self.durations.clear()

    def seconds(self, *names: str) -> float:
        return sum(sum(self.durations[n]) for n in (names or tuple(self.durations)))

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object) -> None:
            synchronize(self._device)
            self._started[name] = time.perf_counter()
        return hook

    def _post_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            synchronize(self._device)
            self.durations[name].append(time.perf_counter() - self._started.pop(name))
        return hook


Sample = dict[str, float]  # "wall" (seconds) plus whatever the side reports (e.g. "velocity")
Side = Callable[[int], Mapping[str, float] | None]  # runs item i; may return extra timings (seconds)


def interleave(sides: Mapping[str, Side], repetitions: int, warmup: int = 1,
               device: torch.device = torch.device("cpu")) -> dict[str, list[Sample]]:
    """Runs every side once per repetition, alternating their order each time, so that slow spells of the
    machine hit all sides alike. The first ``warmup`` repetitions are run but not recorded."""
    names = list(sides)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for rep in range(warmup + repetitions):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            synchronize(device)
            start = time.perf_counter()
            extra = sides[name](rep)
            synchronize(device)
            wall = time.perf_counter() - start
            if rep >= warmup:
                samples[name].append({"wall": wall, **(extra or {})})
    return samples


def median_of(samples: list[Sample], key: str = "wall") -> float:
    return statistics.median(s[key] for s in samples)


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float  # seconds (monotonic)
    busy: float  # CPU seconds the whole machine spent busy (all cores, steal included)
    own: float  # CPU seconds this process spent


def cpu_snapshot() -> CpuSnapshot:
    """Busy time of the machine and of this process (psutil)."""
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    guest = getattr(machine, "guest", 0.0) + getattr(machine, "guest_nice", 0.0)  # Linux counts these in user, nice
    own = psutil.Process().cpu_times()
    return CpuSnapshot(wall=time.monotonic(), busy=sum(machine) - idle - guest, own=own.user + own.system)


def other_cpu_share(start: CpuSnapshot | None, end: CpuSnapshot | None) -> float | None:
    """The share of all cores that other processes (and the hypervisor) used between two snapshots: 0 on a
    quiet machine. Benchmarks report it, because a second busy process slows multi-threaded torch far more
    than its share of the cores."""
    if start is None or end is None or end.wall <= start.wall:
        return None
    others = (end.busy - start.busy) - (end.own - start.own)
    return max(0.0, others / ((os.cpu_count() or 1) * (end.wall - start.wall)))


def in_worker_thread(fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` on a worker thread, as the pipeline runs the engine: on this machine torch's intra-op
    threads ran several times slower under the main thread while the CPU was contended."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(fn()), name="benchmark")
    worker.start()
    worker.join()
    return result[0]
