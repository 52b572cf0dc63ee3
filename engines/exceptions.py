"""Errors of the compiled backends, each carrying what went wrong."""

from __future__ import annotations

from pathlib import Path


class EngineError(RuntimeError):
    """Base class of the errors below."""


class BackendUnavailableError(EngineError):
    """A backend's runtime (a package, a provider, a GPU) is not present."""

    def __init__(self, backend: str, missing: str, hint: str = "") -> None:
        self.backend, self.missing, self.hint = backend, missing, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"backend {self.backend!r} needs {self.missing}" + (f": {self.hint}" if self.hint else "")

    def __repr__(self) -> str:
        return f"BackendUnavailableError(backend={self.backend!r}, missing={self.missing!r})"


class ExportError(EngineError):
    """An ONNX export produced a graph we must not use."""

    def __init__(self, component: str, reason: str) -> None:
        self.component, self.reason = component, reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"ONNX export of the {self.component} failed: {self.reason}"

    def __repr__(self) -> str:
        return f"ExportError(component={self.component!r}, reason={self.reason!r})"


class ParityError(EngineError):
    """An exported part disagrees with torch beyond the tolerance."""

    def __init__(self, component: str, relative_error: float, tolerance: float) -> None:
        self.component, self.relative_error, self.tolerance = component, relative_error, tolerance
        super().__init__(str(self))

    def __str__(self) -> str:
        return (f"{self.component}: ONNX Runtime differs from torch by a relative error of "
                f"{self.relative_error:.3g}, above the tolerance {self.tolerance:g}")

    def __repr__(self) -> str:
        return (f"ParityError(component={self.component!r}, relative_error={self.relative_error!r}, "
                f"tolerance={self.tolerance!r})")


class EngineLoadError(EngineError):
    """A built engine file could not be loaded by its runtime."""

    def __init__(self, path: Path, backend: str, reason: str) -> None:
        self.path, self.backend, self.reason = path, backend, reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.backend} could not load {self.path}: {self.reason}"

    def __repr__(self) -> str:
        return f"EngineLoadError(path={str(self.path)!r}, backend={self.backend!r})"


class EngineBuildError(EngineError):
    """TensorRT (through polygraphy) could not build an engine from an ONNX graph."""

    def __init__(self, path: Path, reason: str, hint: str) -> None:
        self.path, self.reason, self.hint = path, reason, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"TensorRT could not build an engine from {self.path}: {self.reason}. {self.hint}"

    def __repr__(self) -> str:
        return f"EngineBuildError(path={str(self.path)!r}, reason={self.reason!r})"
