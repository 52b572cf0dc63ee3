"""A ModelBackend over compiled parts (ONNX Runtime or TensorRT) with a dynamic batch.

The stream engine calls with batches that vary (a stream's warm-up, several streams, negative passes)
and prompts of any length. This class maps those calls onto the parts (``engines.specs``):

- batch: each part runs on exactly the rows a call has (streams with a frame ready x their filled slots, plus
  the negative rows), never padded to the built maximum: one stream on parts built for four streams costs what
  it costs on parts built for one (benchmarks/results/dynamic_batch.md). Only more rows than the maximum run in
  chunks of it;
- prompt length: each block's K/V (B, heads, L, head_dim) fill the first L of ``kv_length`` token slots; the
  rest are zeroed and masked with a -10000 bias, exactly as ``batch_prompt_kv`` masks shorter prompts;
- the K/V buffers are only rewritten when the KVBatch or the chunk changes (the stream engine reuses one
  KVBatch object while its prompts stay the same);
- ControlNets: each net that is on (a scale not all zero) runs on its own part, chunk by chunk like the
  transformer, and its residuals are summed into the transformer's ``control_i`` inputs. Those are zeroed once
  and rewritten only while residuals come; a call with fewer residuals (or none) zeroes the inputs the call
  before it wrote, so a run without ControlNets adds exact zeros: it equals a transformer without them.

``prompt_kv`` still runs in torch (the caption projection and each block's ``to_k``/``to_v``, once per
prompt change), so the torch transformer stays loaded next to the compiled parts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

from engines import batching_pays
from engines.base import CompiledPart, ControlBatch, ModelBackend
from engines.export import KV_MASK
from engines.prompt_kv import KVBatch, PromptKV
from engines.specs import Component, ControlNetPart, PartId
from engines.torch_backend import TorchBackend

logger = logging.getLogger(__name__)


class CompiledBackend(ModelBackend):
    """Encode, decode, velocity and ControlNets on compiled parts; prompt K/V in torch. ``name`` is for logs."""

    def __init__(self, torch_backend: TorchBackend, parts: Mapping[PartId, CompiledPart], kv_length: int,
                 name: str) -> None:
        self._nets = [ControlNetPart(i) for i in range(len(torch_backend.controlnets))]
        missing = {*Component, *self._nets} - set(parts)
        if missing:
            raise ValueError(f"parts must hold every part, missing {sorted(p.value for p in missing)}")
        self.torch_backend, self.parts, self.kv_length, self.name = torch_backend, dict(parts), kv_length, name
        self.geometry = torch_backend.geometry
        self._kv_blocks = self._kv_layout(torch_backend)
        self._kv_total = sum(len(blocks) for blocks in self._kv_blocks.values())
        self._kv_filled: dict[PartId, tuple[KVBatch, int, int]] = {}
        self._warned_chunks: set[PartId] = set()
        num_blocks = len(torch_backend.transformer.transformer_blocks)
        self._control_names = [f"control_{i}" for i in range(num_blocks - 1)]
        self._controls_written = 0  # leading control inputs that may hold residuals; the rest are zero
        tensors = self.parts[Component.TRANSFORMER].buffers.tensors
        for control in self._control_names:
            tensors[control].zero_()

    def _kv_layout(self, torch_backend: TorchBackend) -> dict[PartId, range]:
        """Which blocks of a KVBatch each part reads: the transformer's first, then each ControlNet's in order
        (``TorchBackend.prompt_kv``)."""
        counts = [len(torch_backend.transformer.transformer_blocks),
                  *(len(net.transformer_blocks) for net in torch_backend.controlnets)]
        layout: dict[PartId, range] = {}
        first = 0
        for part, count in zip([Component.TRANSFORMER, *self._nets], counts, strict=True):
            layout[part] = range(first, first + count)
            first += count
        return layout

    def prompt_kv(self, embeds: Tensor) -> PromptKV:
        kv = self.torch_backend.prompt_kv(embeds)
        if kv.length > self.kv_length:
            raise ValueError(f"the prompt has {kv.length} tokens but the {self.name} parts were built for at most "
                             f"{self.kv_length} (max_sequence_length)")
        return kv

    def encode(self, images: Tensor) -> Tensor:
        return self._run_rows(Component.ENCODER, "images", images, "latents")

    def decode(self, latents: Tensor) -> Tensor:
        return self._run_rows(Component.DECODER, "latents", latents, "images")

    def velocity(self, x_in: Tensor, timestep: Tensor, guidance: Tensor, kv: KVBatch,
                 control: ControlBatch | None = None) -> Tensor:
        B = x_in.shape[0]
        if kv.batch_size != B:
            raise ValueError(f"kv batch size {kv.batch_size} does not match x_in batch size {B}")
        if len(kv.keys) != self._kv_total:
            raise ValueError(f"kv holds {len(kv.keys)} blocks, the transformer and ControlNets have {self._kv_total}")
        active = self._active_nets(x_in, control)
        compiled = self.parts[Component.TRANSFORMER]
        buffers, cap = compiled.buffers, compiled.buffers.batch
        self._note_chunks(Component.TRANSFORMER, B, cap)
        out = []
        for start in range(0, B, cap):
            stop = min(start + cap, B)
            self._write_controls(active, x_in, timestep, guidance, kv, start, stop)
            buffers.write("hidden_states", x_in[start:stop])
            buffers.write("timestep", timestep[start:stop])
            buffers.write("guidance", guidance[start:stop])
            self._fill_kv(Component.TRANSFORMER, kv, start, stop)
            compiled.execute(stop - start)
            out.append(buffers.read("velocity", stop - start))
        return out[0] if len(out) == 1 else torch.cat(out)

    def close(self) -> None:
        for compiled in self.parts.values():
            compiled.close()
        self.torch_backend.close()

    # ---- internals -----------------------------------------------------------------------------------

    def _run_rows(self, component: PartId, input_name: str, x: Tensor, output_name: str) -> Tensor:
        compiled = self.parts[component]
        cap = compiled.buffers.batch
        self._note_chunks(component, x.shape[0], cap)
        out = []
        for start in range(0, x.shape[0], cap):
            rows = compiled.buffers.write(input_name, x[start:start + cap])
            compiled.execute(rows)
            out.append(compiled.buffers.read(output_name, rows))
        return out[0] if len(out) == 1 else torch.cat(out)

    def _active_nets(self, x_in: Tensor, control: ControlBatch | None) -> list[tuple[ControlNetPart, Tensor, Tensor]]:
        """(part, control latents, scales) of each ControlNet that is on; a net whose scales are all 0 is off
        exactly and does not run (as in TorchBackend)."""
        if control is None:
            return []
        n = len(self._nets)
        if len(control.conds) != n or len(control.scales) != n:
            raise ValueError(f"control has {len(control.conds)} entries (and {len(control.scales)} scales) for "
                             f"{n} ControlNets")
        active = []
        for part, cond, scale in zip(self._nets, control.conds, control.scales, strict=True):
            if cond.shape != x_in.shape:
                raise ValueError(f"control.conds[{part.index}] has shape {tuple(cond.shape)}, x_in {tuple(x_in.shape)}")
            if scale.shape != x_in.shape[:1]:
                raise ValueError(f"control.scales[{part.index}] has shape {tuple(scale.shape)}, it takes "
                                 f"({x_in.shape[0]},)")
            if control.is_on(part.index):  # host flags: reading the scales would wait for the device
                active.append((part, cond, scale))
        return active

    def _write_controls(self, active: list[tuple[ControlNetPart, Tensor, Tensor]], x_in: Tensor, timestep: Tensor,
                        guidance: Tensor, kv: KVBatch, start: int, stop: int) -> None:
        """Runs each active ControlNet on rows ``start:stop`` and sums its residuals into the transformer's
        ``control_i`` inputs. Residuals past the last input are dropped (diffusers never adds them either);
        inputs no net wrote this time but one did before are zeroed."""
        controls = self.parts[Component.TRANSFORMER].buffers.tensors
        rows, written = stop - start, 0
        for part, cond, scale in active:
            compiled = self.parts[part]
            feeds = {"hidden_states": x_in, "timestep": timestep, "guidance": guidance, "control": cond,
                     "conditioning_scale": scale}
            for name, value in feeds.items():
                compiled.buffers.write(name, value[start:stop])
            self._fill_kv(part, kv, start, stop)
            compiled.execute(rows)
            outputs = compiled.buffers.tensors
            names = self._control_names[:len(self._kv_blocks[part])]  # one residual per block of the net
            for i, name in enumerate(names):
                residual = outputs[f"residual_{i}"][:rows]  # (rows, N, D)
                if i < written:
                    controls[name][:rows].add_(residual)
                else:
                    controls[name][:rows].copy_(residual)
            written = max(written, len(names))
        for name in self._control_names[written:self._controls_written]:
            controls[name].zero_()
        self._controls_written = written

    def _fill_kv(self, part: PartId, kv: KVBatch, start: int, stop: int) -> None:
        """Writes rows ``start:stop`` of the part's blocks of ``kv`` into its K/V buffers, padded to
        ``kv_length`` and masked."""
        filled = self._kv_filled.get(part)
        if filled is not None and filled[0] is kv and filled[1:] == (start, stop):
            return
        rows, length = stop - start, kv.keys[0].shape[2]
        if length > self.kv_length:
            raise ValueError(f"K/V hold {length} tokens, the part {self.kv_length}")
        tensors = self.parts[part].buffers.tensors
        for i, block in enumerate(self._kv_blocks[part]):
            for name, source in ((f"key_{i}", kv.keys[block]), (f"value_{i}", kv.values[block])):
                buf = tensors[name]  # (batch, heads, kv_length, head_dim)
                buf[:rows, :, :length].copy_(source[start:stop])
                buf[:rows, :, length:].zero_()
        bias = tensors["kv_bias"]  # (batch, 1, 1, kv_length)
        bias[:rows].fill_(0.0)
        bias[:rows, ..., length:] = KV_MASK
        if kv.bias is not None:
            bias[:rows, ..., :length].copy_(kv.bias[start:stop])
        self._kv_filled[part] = (kv, start, stop)

    def _note_chunks(self, component: PartId, rows: int, cap: int) -> None:
        if rows > cap and component not in self._warned_chunks:
            self._warned_chunks.add(component)
            on_cpu = not batching_pays(self.torch_backend.transformer.device)
            logger.log(logging.INFO if on_cpu else logging.WARNING, "%s %s was built for batch %d but got %d rows: "
                       "running it in %d calls%s", self.name, component.value, cap, rows, -(-rows // cap),
                       " (on a CPU, as fast as one batch)" if on_cpu else " (build for more streams to avoid this)")
