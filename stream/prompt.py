"""Prompt encoding exactly as ``SanaSprintPipeline.encode_prompt`` does it with the pipeline's defaults."""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict

import torch
from diffusers import SanaSprintPipeline
from torch import Tensor

from stream.live_settings import MAX_PROMPT_CHARS


def default_complex_human_instruction() -> list[str]:
    """The instruction prefix ``SanaSprintPipeline.__call__`` uses by default; Sprint was trained with it."""
    default = inspect.signature(SanaSprintPipeline.__call__).parameters["complex_human_instruction"].default
    return list(default)


class PromptEncoder:
    """Runs the tokenizer and Gemma-2 through the pipeline's own ``encode_prompt``, then drops the padding.

    Dropping masked padding tokens is the only change, and it is exact. A small LRU cache means
    switching back to a recent prompt does not run Gemma again.
    """

    def __init__(self, pipe: SanaSprintPipeline, max_sequence_length: int = 300, cache_size: int = 16) -> None:
        self._pipe = pipe
        self._max_sequence_length = max_sequence_length
        self._instruction = default_complex_human_instruction()
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the tokenizer's padding side is shared state

    def encode_padded(self, prompt: str) -> tuple[Tensor, Tensor]:
        """The pipeline's exact output: embeds (1, max_sequence_length, C) and mask (1, max_sequence_length)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
        device = next(self._pipe.text_encoder.parameters()).device
        with self._lock, torch.inference_mode():
            embeds, mask = self._pipe.encode_prompt(
                prompt,
                device=device,
                max_sequence_length=self._max_sequence_length,
                complex_human_instruction=self._instruction,
            )
        return embeds, mask

    def encode(self, prompt: str) -> Tensor:
        """(L, C) hidden states of the real (unmasked) tokens only."""
        with self._lock:
            cached = self._cache.get(prompt)
            if cached is not None:
                self._cache.move_to_end(prompt)
                return cached
        embeds, mask = self.encode_padded(prompt)
        trimmed = embeds[0][mask[0].bool()]  # (L, C)
        with self._lock:
            self._cache[prompt] = trimmed
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return trimmed
