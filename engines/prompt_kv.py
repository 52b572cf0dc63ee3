"""Cached cross-attention keys and values of a prompt, and their batched form.

Each Sana block's cross-attention projects the (fixed) prompt embeddings to K and V on every call.
For a fixed prompt these never change, so they are computed once per prompt (docs/design.md#prompt-kv) and fed to
attention directly; padding tokens are dropped beforehand, which is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class PromptKV:
    """One prompt's per-block keys and values, each (L, heads * head_dim), after ``norm_k``."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[0])


@dataclass(frozen=True)
class KVBatch:
    """Per-block keys/values for one model batch: each (B, heads, L, head_dim). ``bias`` (B, 1, 1, L) is
    an additive attention mask where prompts of different lengths were padded, else None."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    bias: Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.keys[0].shape[0])


def _heads_first(x: Tensor, heads: int) -> Tensor:
    B, L, D = x.shape
    return x.view(B, L, heads, D // heads).transpose(1, 2)  # (B, heads, L, head_dim)


def batch_prompt_kv(rows: Sequence[PromptKV], heads: int) -> KVBatch:
    """Stacks one PromptKV per batch item; shorter prompts are zero-padded and masked out."""
    if not rows:
        raise ValueError("rows must name at least one prompt")
    max_len = max(r.length for r in rows)
    num_blocks = len(rows[0].keys)

    def stack(block: int, attr: str) -> Tensor:
        padded = []
        for r in rows:
            t = getattr(r, attr)[block]
            padded.append(torch.nn.functional.pad(t, (0, 0, 0, max_len - t.shape[0])))
        return _heads_first(torch.stack(padded), heads)

    keys = tuple(stack(b, "keys") for b in range(num_blocks))
    values = tuple(stack(b, "values") for b in range(num_blocks))
    bias = None
    if any(r.length != max_len for r in rows):
        ref = rows[0].keys[0]
        lengths = torch.tensor([r.length for r in rows], device=ref.device)
        masked = torch.arange(max_len, device=ref.device)[None, :] >= lengths[:, None]  # (B, L)
        # the same -10000 bias diffusers uses for masked text tokens
        bias = (masked.to(ref.dtype) * -10000.0)[:, None, None, :]
    return KVBatch(keys=keys, values=values, bias=bias)
