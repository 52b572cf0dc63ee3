"""Frames between the host and the model's device without stalling the host (docs/gpu.md, "Threads, CUDA streams").

The stream engine uploads each camera frame on one thread, runs the model on another and downloads the image on a
third. A pageable ``.to(device)`` or ``.cpu()`` on torch's legacy default stream synchronises: preparing frame N+1
would wait for all GPU work of frame N, and the download would wait for whatever was queued after its frame.
``CudaTransfer`` instead copies through pinned host memory on a copy stream of its own, ordered by CUDA events:

- ``upload``: the uint8 frame is pinned, copied ``non_blocking`` on the copy stream and converted to [-1, 1]
  there; the model's stream waits for that event (on the device, not the host) before it uses the tensor;
- ``download``: the copy stream waits for an event recorded after the image was computed, converts it to uint8
  and copies it ``non_blocking`` into pinned memory; ``HostImage.result()`` waits for this image's own copy,
  the frame path's one host wait.

``CpuTransfer`` does the same on the CPU, where nothing is asynchronous. ``device_transfer`` picks one.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor


def to_model_range(images: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_pixels(images: Tensor) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounding as diffusers' image processor does."""
    x = (images.float() * 0.5 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


class HostImage(ABC):
    """An image on its way to the host."""

    @abstractmethod
    def result(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; waits for this image's copy only."""


class ReadyImage(HostImage):
    def __init__(self, image: np.ndarray) -> None:
        self._image = image

    def result(self) -> np.ndarray:
        return self._image


class FrameTransfer(ABC):
    """Uploads camera frames to the model's device and downloads its images."""

    @abstractmethod
    def upload(self, frame: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1] on the device, ready for the model's later work."""

    @abstractmethod
    def download(self, pixels: Tensor) -> HostImage:
        """Starts copying (3, H, W) in [-1, 1] to the host as uint8; the model's later work does not wait for it."""


class CpuTransfer(FrameTransfer):
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def upload(self, frame: np.ndarray) -> Tensor:
        return to_model_range(torch.from_numpy(frame)[None].to(self.device))

    def download(self, pixels: Tensor) -> HostImage:
        return ReadyImage(to_pixels(pixels[None])[0].cpu().numpy())


class CudaHostImage(HostImage):
    def __init__(self, pinned: Tensor, done: torch.cuda.Event) -> None:
        self._pinned, self._done = pinned, done

    def result(self) -> np.ndarray:
        self._done.synchronize()  # the frame path's one host wait: this image's copy, nothing queued after it
        return self._pinned.numpy()


class CudaTransfer(FrameTransfer):
    """Pinned staging and a copy stream per device (one per engine). Safe from several threads: each call takes
    the copy stream for its few launches only."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.copy_stream = torch.cuda.Stream(device)
        self._lock = threading.Lock()  # orders one thread's event record and launches against another's

    def upload(self, frame: np.ndarray) -> Tensor:
        pinned = torch.from_numpy(np.ascontiguousarray(frame)).pin_memory()  # torch's caching host allocator
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self.copy_stream):
            image = to_model_range(pinned.to(self.device, non_blocking=True)[None])
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        model_stream = torch.cuda.default_stream(self.device)  # the engine's work runs on it
        model_stream.wait_event(ready)
        image.record_stream(model_stream)  # made on the copy stream, used on the model's
        return image

    def download(self, pixels: Tensor) -> HostImage:
        with self._lock, torch.cuda.device(self.device):
            computed = torch.cuda.Event()
            computed.record(torch.cuda.current_stream(self.device))
            self.copy_stream.wait_event(computed)
            with torch.cuda.stream(self.copy_stream):
                pixels.record_stream(self.copy_stream)  # read here: its memory is not reused before the copy
                image = to_pixels(pixels[None])[0]
                pinned = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
                pinned.copy_(image, non_blocking=True)
                done = torch.cuda.Event()
                done.record(self.copy_stream)
        return CudaHostImage(pinned, done)


def device_transfer(device: torch.device) -> FrameTransfer:
    """``CudaTransfer`` for a CUDA device, else ``CpuTransfer``."""
    return CudaTransfer(device) if device.type == "cuda" else CpuTransfer(device)
