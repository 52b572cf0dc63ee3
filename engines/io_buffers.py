"""Buffer bookkeeping of a compiled engine: one tensor per input and output, allocated once.

ONNX Runtime (IO binding) and TensorRT (``set_tensor_address``, CUDA graphs) both run on fixed addresses,
so every input and output gets one buffer of its maximum shape for the engine's lifetime. Callers write the
rows they have into the inputs (``write``), the part runs on those first rows only (``CompiledPart.execute(rows)``:
the buffers are contiguous with the batch first, so the first ``rows`` rows of every buffer are a tensor of
``rows`` rows at the same address), and they read the rows back (``read``). Rows past the ones a call runs are
neither computed nor read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engines.specs import TensorSpec

# ONNX TensorProto element types -> our dtype names
ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 6: "int32", 7: "int64", 9: "bool"}

Allocator = Callable[[TensorSpec, torch.device], Tensor]


def zeros(spec: TensorSpec, device: torch.device) -> Tensor:
    return torch.zeros(spec.shape, dtype=spec.torch_dtype, device=device)


def _value_infos(values: Iterable[Any], batch: int) -> tuple[TensorSpec, ...]:
    specs = []
    for v in values:
        tensor_type = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        if tensor_type.elem_type not in ONNX_DTYPES:
            raise ValueError(f"tensor {v.name!r} has ONNX element type {tensor_type.elem_type}, which we do not run")
        if not dims or dims[0] != -1:
            raise ValueError(f"tensor {v.name!r} has a static batch {dims[:1]}; compiled parts take a dynamic "
                             "batch")
        if any(d <= 0 for d in dims[1:]):
            raise ValueError(f"tensor {v.name!r} has a dynamic shape {dims} past the batch; only the batch may vary")
        specs.append(TensorSpec(v.name, (batch, *dims[1:]), ONNX_DTYPES[tensor_type.elem_type]))
    return tuple(specs)


def specs_from_onnx(model: Any, *, batch: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of an ONNX model (a ModelProto or a path; weights are not loaded from a path) whose
    first dimension, the batch, is dynamic, with ``batch`` (the most rows a part runs) in its place."""
    if isinstance(model, (str, Path)):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return _value_infos(inputs, batch), _value_infos(model.graph.output, batch)


class IOBuffers:
    """One preallocated tensor per input and output; every tensor's first dimension is the batch."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], device: torch.device,
                 allocate: Allocator = zeros) -> None:
        names = [t.name for t in (*inputs, *outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"input and output names must be unique, got {names}")
        if not inputs or not outputs:
            raise ValueError("an engine needs at least one input and one output")
        batches = {t.shape[0] for t in (*inputs, *outputs)}
        if len(batches) != 1:
            raise ValueError(f"every tensor must share the batch dimension, got {sorted(batches)}")
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self.batch = batches.pop()
        self.tensors: dict[str, Tensor] = {t.name: allocate(t, device) for t in (*inputs, *outputs)}
        for t in (*inputs, *outputs):
            buf = self.tensors[t.name]
            if tuple(buf.shape) != t.shape or buf.dtype != t.torch_dtype or not buf.is_contiguous():
                raise ValueError(f"the allocator returned {tuple(buf.shape)} {buf.dtype} for {t.describe()}")
        self._input_names = frozenset(t.name for t in inputs)
        self._output_names = frozenset(t.name for t in outputs)

    def check_rows(self, rows: int) -> int:
        """``rows`` when a part can run that many rows of these buffers, else ValueError."""
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= self.batch:
            raise ValueError(f"rows must be an integer in [1, {self.batch}], got {rows!r}")
        return rows

    def addresses(self) -> dict[str, int]:
        """Device address of every buffer; fixed for the lifetime of this object."""
        return {name: t.data_ptr() for name, t in self.tensors.items()}

    def write(self, name: str, value: Tensor, start: int = 0) -> int:
        """Copies ``value`` (rows, ...) into rows ``start:start + rows`` of input ``name`` (casting dtype and
        device); returns the number of rows written."""
        if name not in self._input_names:
            raise KeyError(f"no input named {name!r}; inputs: {sorted(self._input_names)}")
        buf = self.tensors[name]
        rows = int(value.shape[0]) if value.ndim else 0
        if value.ndim != buf.ndim or tuple(value.shape[1:]) != tuple(buf.shape[1:]):
            raise ValueError(f"input {name!r} takes (rows, {', '.join(map(str, buf.shape[1:]))}), "
                             f"got {tuple(value.shape)}")
        if not 0 < rows <= self.batch - start or start < 0:
            raise ValueError(f"input {name!r} holds {self.batch} rows; cannot write {rows} at row {start}")
        buf[start:start + rows].copy_(value)
        return rows

    def write_all(self, feeds: Mapping[str, Tensor]) -> int:
        """Writes every input from ``feeds`` (each with the same number of rows); returns that number."""
        missing = self._input_names - set(feeds)
        unknown = set(feeds) - self._input_names
        if missing or unknown:
            raise KeyError(f"feeds must name exactly the inputs: missing {sorted(missing)}, unknown {sorted(unknown)}")
        rows = {self.write(name, value) for name, value in feeds.items()}
        if len(rows) != 1:
            raise ValueError(f"every feed must have the same number of rows, got {sorted(rows)}")
        return rows.pop()

    def read(self, name: str, rows: int | None = None) -> Tensor:
        """A copy of the first ``rows`` rows (default: all) of output ``name``, safe to keep past the next run."""
        if name not in self._output_names:
            raise KeyError(f"no output named {name!r}; outputs: {sorted(self._output_names)}")
        rows = self.batch if rows is None else rows
        if not 0 < rows <= self.batch:
            raise ValueError(f"output {name!r} holds {self.batch} rows, cannot read {rows}")
        return self.tensors[name][:rows].clone()
