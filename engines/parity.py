"""Parity of an exported part: ONNX Runtime (CPU) against torch on the same random inputs.

The relative error is ``max |onnx - torch| / max |torch|`` over every element of an output; a part with several
outputs (a ControlNet's residuals) reports its worst output. A part passes at ``<= 1e-3`` in fp32 (issue 6).
NaN or Inf anywhere in the ONNX outputs fails it whatever the error. The torch reference runs in true fp32:
on a GPU torch convolves with TF32 by default, which alone reads ~1.8e-3 on the fp32 decoder (``true_fp32``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.exceptions import ParityError
from engines.export import example_inputs
from engines.specs import PartSpec

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-3


@contextlib.contextmanager
def true_fp32() -> Iterator[None]:
    """TF32 off for cuBLAS matmuls and cuDNN convolutions, restored afterwards. Process-wide flags: parity checks
    run while parts are built, before any pipeline thread runs the model."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@dataclass(frozen=True)
class ParityReport:
    component: str
    max_abs_error: float
    max_abs_reference: float
    relative_error: float
    finite: bool
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.finite and self.relative_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (f"{self.component}: relative error {self.relative_error:.3g} (max |diff| {self.max_abs_error:.3g}, "
                f"max |torch| {self.max_abs_reference:.3g}), {'finite' if self.finite else 'NaN/Inf'}, "
                f"tolerance {self.tolerance:g}: {verdict}")


def compare(component: str, got: np.ndarray, reference: np.ndarray, tolerance: float) -> ParityReport:
    """One output against its reference."""
    got64, ref64 = got.astype(np.float64), reference.astype(np.float64)
    finite = bool(np.isfinite(got64).all())
    max_err = float(np.abs(got64 - ref64).max()) if finite else math.inf
    max_ref = float(np.abs(ref64).max())
    relative = max_err / max(max_ref, 1e-12)
    return ParityReport(component, max_err, max_ref, relative, finite, tolerance)


def compare_outputs(component: str, got: list[np.ndarray], reference: list[np.ndarray],
                    tolerance: float) -> ParityReport:
    """Every output against its reference: the report of the worst one (NaN/Inf anywhere is the worst)."""
    reports = [compare(component, g, r, tolerance) for g, r in zip(got, reference, strict=True)]
    return max(reports, key=lambda r: (not r.finite, r.relative_error))


def check_parity(module: nn.Module, onnx_path: Path, spec: PartSpec, *, tolerance: float = FP32_TOLERANCE,
                 seed: int = 1, raise_on_failure: bool = True) -> ParityReport:
    """Runs ``module`` (fp32) and the fp32 ONNX graph at ``onnx_path`` on the same inputs and compares."""
    import onnxruntime as ort

    if spec.outputs[0].dtype != "float32":
        raise ValueError(f"parity is checked on fp32 graphs, got {spec.outputs[0].dtype} for {spec.component.value}")
    param = next(module.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"parity needs the fp32 torch module, got {param.dtype}")
    inputs = example_inputs(spec, param.device, seed=seed)
    with torch.inference_mode(), true_fp32():
        outputs = module.eval()(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)  # a ControlNet returns one per residual
    reference = [x.float().cpu().numpy() for x in outputs]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feeds = {t.name: x.cpu().numpy() for t, x in zip(spec.inputs, inputs)}
    got = session.run([t.name for t in spec.outputs], feeds)
    report = compare_outputs(spec.component.value, got, reference, tolerance)
    (logger.info if report.passed else logger.error)("parity %s", report)
    if raise_on_failure and not report.passed:
        raise ParityError(report.component, report.relative_error, tolerance)
    return report
