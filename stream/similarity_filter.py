"""Stochastic similarity filter (docs/design.md#similarity-filter): skip frames close to the last processed one."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class SimilarityFilter:
    """Skip probability ``p = max(0, 1 - (1 - c) / (1 - eta))`` for cosine similarity ``c`` to the last
    *processed* frame; a skip happens when ``u < p`` for ``u ~ U(0, 1)``, except that ``max_skip`` skips in
    a row force the next frame through. Unlike StreamDiffusion it never sleeps and resets its count."""

    def __init__(self, threshold: float, max_skip: int, seed: int) -> None:
        self.threshold = threshold
        self.max_skip = max_skip
        self._rng = np.random.default_rng(seed)
        self._last: Tensor | None = None
        self._skips_in_a_row = 0

    def skip_probability(self, frame: Tensor) -> float:
        if self._last is None:
            return 0.0
        c = torch.nn.functional.cosine_similarity(self._last.flatten(), frame.flatten(), dim=0).item()
        return max(0.0, 1.0 - (1.0 - c) / (1.0 - self.threshold))

    def should_skip(self, frame: Tensor) -> bool:
        """Decides for ``frame`` (preprocessed tensor) and records it when it is to be processed."""
        p = self.skip_probability(frame)
        if self._skips_in_a_row < self.max_skip and self._rng.random() < p:
            self._skips_in_a_row += 1
            return True
        self._skips_in_a_row = 0
        self._last = frame
        return False

    def reset(self) -> None:
        self._last = None
        self._skips_in_a_row = 0
