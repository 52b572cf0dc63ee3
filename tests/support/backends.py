"""Wrappers around a real backend for fault and load injection in tests (our own seam, not a mock)."""

from __future__ import annotations

import threading
import time

from engines.base import ModelBackend


class InstrumentedBackend(ModelBackend):
    """Delegates to a real backend; can add a delay to each transformer call, fail chosen calls, and count
    the frames it decoded."""

    def __init__(self, inner: ModelBackend, delay: float = 0.0, fail_calls: frozenset[int] = frozenset()) -> None:
        self.inner, self.geometry = inner, inner.geometry
        self.delay, self.fail_calls = delay, fail_calls
        self.velocity_calls = 0
        self.decoded = 0
        self._lock = threading.Lock()

    def encode(self, images):
        return self.inner.encode(images)

    def decode(self, latents):
        out = self.inner.decode(latents)
        with self._lock:
            self.decoded += latents.shape[0]
        return out

    def prompt_kv(self, embeds):
        return self.inner.prompt_kv(embeds)

    def velocity(self, x_in, timestep, guidance, kv, control=None):
        self.velocity_calls += 1
        if self.velocity_calls in self.fail_calls:
            raise RuntimeError(f"injected failure on transformer call {self.velocity_calls}")
        if self.delay:
            time.sleep(self.delay)
        return self.inner.velocity(x_in, timestep, guidance, kv, control)
