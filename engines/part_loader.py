"""The last step of compiling a part, one implementation per runtime: from an exported ONNX graph to a part
that runs (an ONNX Runtime session on the graph itself, or a TensorRT plan built from it and cached)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from engines.base import CompiledPart
from engines.cache import CacheKey
from engines.specs import BatchRange, PartId, Precision


@dataclass(frozen=True)
class ExportedPart:
    """One part's exported graph, as ``engines.compile`` hands it to a loader."""

    part: PartId
    onnx_path: Path
    onnx_key: CacheKey  # identifies the graph; a runtime's own cache key extends it
    precision: Precision
    device: torch.device
    batch: BatchRange  # the rows the part runs: 1 to the built maximum (TensorRT's optimization profile)


@dataclass
class LoadedPart:
    path: Path  # the file the part runs: the ONNX graph itself, or the plan built from it
    compiled: CompiledPart
    build_seconds: float = 0.0  # of the load, the time spent building (TensorRT)


class PartLoader(ABC):
    """One runtime's way from an exported graph to a runnable part."""

    @abstractmethod
    def load(self, exported: ExportedPart) -> LoadedPart:
        """The runnable part of ``exported`` (built first, where the runtime builds)."""
