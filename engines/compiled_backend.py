"""A ModelBackend over compiled parts (ONNX Runtime or TensorRT) with static shapes.

The stream engine calls with batches that vary (a stream's warm-up, several streams, negative passes)
and prompts of any length. This class maps those calls onto the fixed shapes (``engines.specs``):

- batch: rows are written into the part's buffers in chunks of its built batch; a short chunk leaves the
  padding rows as they were (batch items never interact), and only the real rows are read back;
- prompt length: each block's K/V (B, heads, L, head_dim) fill the first L of ``kv_length`` token slots; the
  rest are zeroed and masked with a -10000 bias, exactly as ``batch_prompt_kv`` masks shorter prompts;
- the K/V buffers are only rewritten when the KVBatch or the chunk changes (the stream engine reuses one
  KVBatch object while its prompts stay the same).

``prompt_kv`` still runs in torch (the caption projection and each block's ``to_k``/``to_v``, once per
prompt change), so the torch transformer stays loaded next to the compiled parts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

from engines.base import ControlBatch, CompiledEngine, ModelBackend
from engines.export import KV_MASK
from engines.prompt_kv import KVBatch, PromptKV
from engines.specs import Component
from engines.torch_backend import TorchBackend

logger = logging.getLogger(__name__)


class CompiledBackend(ModelBackend):
    """Encode, decode and velocity on compiled parts; prompt K/V in torch. ``name`` is for logs."""

    def __init__(self, torch_backend: TorchBackend, engines: Mapping[Component, CompiledEngine], kv_length: int,
                 name: str) -> None:
        missing = set(Component) - set(engines)
        if missing:
            raise ValueError(f"engines must hold every component, missing {sorted(c.value for c in missing)}")
        self.torch_backend, self.engines, self.kv_length, self.name = torch_backend, dict(engines), kv_length, name
        self.geometry = torch_backend.geometry
        self._num_blocks = len(torch_backend.transformer.transformer_blocks)
        self._kv_filled: tuple[KVBatch, int, int] | None = None
        self._warned_chunks: set[Component] = set()

    def prompt_kv(self, embeds: Tensor) -> PromptKV:
        kv = self.torch_backend.prompt_kv(embeds)
        if kv.length > self.kv_length:
            raise ValueError(f"the prompt has {kv.length} tokens but the {self.name} engines were built for at most "
                             f"{self.kv_length} (max_sequence_length)")
        return kv

    def encode(self, images: Tensor) -> Tensor:
        return self._run_rows(Component.ENCODER, "images", images, "latents")

    def decode(self, latents: Tensor) -> Tensor:
        return self._run_rows(Component.DECODER, "latents", latents, "images")

    def velocity(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, kv: KVBatch,
                 control: ControlBatch | None = None) -> Tensor:
        if control is not None:
            raise ValueError(f"ControlNets run on the torch backend only; the {self.name} engines have no "
                             "ControlNet residual inputs yet")
        B = x_in.shape[0]
        if kv.batch_size != B:
            raise ValueError(f"kv batch size {kv.batch_size} does not match x_in batch size {B}")
        engine = self.engines[Component.TRANSFORMER]
        buffers, cap = engine.buffers, engine.buffers.batch
        self._note_chunks(Component.TRANSFORMER, B, cap)
        out = []
        for start in range(0, B, cap):
            stop = min(start + cap, B)
            buffers.write("hidden_states", x_in[start:stop])
            buffers.write("timestep", timestep[start:stop])
            buffers.write("guidance", guidance[start:stop])
            self._fill_kv(engine, kv, start, stop)
            engine.execute()
            out.append(buffers.read("velocity", stop - start))
        return out[0] if len(out) == 1 else torch.cat(out)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.torch_backend.close()

    # ---- internals -----------------------------------------------------------------------------------

    def _run_rows(self, component: Component, input_name: str, x: Tensor, output_name: str) -> Tensor:
        engine = self.engines[component]
        cap = engine.buffers.batch
        self._note_chunks(component, x.shape[0], cap)
        out = []
        for start in range(0, x.shape[0], cap):
            rows = engine.buffers.write(input_name, x[start:start + cap])
            engine.execute()
            out.append(engine.buffers.read(output_name, rows))
        return out[0] if len(out) == 1 else torch.cat(out)

    def _fill_kv(self, engine: CompiledEngine, kv: KVBatch, start: int, stop: int) -> None:
        """Writes rows ``start:stop`` of ``kv`` into the K/V buffers, padded to ``kv_length`` and masked."""
        filled = self._kv_filled
        if filled is not None and filled[0] is kv and filled[1:] == (start, stop):
            return
        rows, length = stop - start, kv.keys[0].shape[2]
        if length > self.kv_length:
            raise ValueError(f"K/V hold {length} tokens, the engine {self.kv_length}")
        tensors = engine.buffers.tensors
        for i in range(self._num_blocks):
            for name, source in ((f"key_{i}", kv.keys[i]), (f"value_{i}", kv.values[i])):
                buf = tensors[name]  # (batch, heads, kv_length, head_dim)
                buf[:rows, :, :length].copy_(source[start:stop])
                buf[:rows, :, length:].zero_()
        bias = tensors["kv_bias"]  # (batch, 1, 1, kv_length)
        bias[:rows].fill_(0.0)
        bias[:rows, ..., length:] = KV_MASK
        if kv.bias is not None:
            bias[:rows, ..., :length].copy_(kv.bias[start:stop])
        self._kv_filled = (kv, start, stop)

    def _note_chunks(self, component: Component, rows: int, cap: int) -> None:
        if rows > cap and component not in self._warned_chunks:
            self._warned_chunks.add(component)
            logger.warning("%s %s was built for batch %d but got %d rows: running it in %d calls (build for more "
                           "streams to avoid this)", self.name, component.value, cap, rows, -(-rows // cap))
