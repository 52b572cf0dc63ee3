"""CUDA and TensorRT checks that fail in the first second with the actual cause (docs/gpu.md, "CUDA versions").

A CUDA 13 build of torch or TensorRT on a driver older than R580 does not say so by itself: torch reports
``torch.cuda.is_available() == False`` (the model then lands on the CPU and TensorRT complains it "needs a CUDA
GPU"), and ``trt.Runtime`` raises a bare ``TypeError`` from pybind11. ``probe_tensorrt`` asks torch for its own
error text and records what TensorRT logs, so a broken install names its cause before minutes of export.
``import tensorrt`` happens only here, lazily.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

import torch

from engines.exceptions import BackendUnavailableError, EngineLoadError
from engines.install_hint import install_hint

logger = logging.getLogger(__name__)

MAX_KEPT_ERRORS = 100  # the process logger's memory of TensorRT errors, for messages

# The oldest Linux driver each CUDA major runs on (NVIDIA's CUDA toolkit release notes, table 3).
MIN_DRIVER = {12: "525.60.13", 13: "580.65.06"}
_TRT_DIST = re.compile(r"^tensorrt[-_]cu(\d+)(?:[-_](?:bindings|libs))?$", re.IGNORECASE)


def driver_hint(cuda_version: str | None) -> str:
    """What driver a CUDA ``major.minor`` build needs, in words."""
    major = int(cuda_version.split(".")[0]) if cuda_version else None
    if major not in MIN_DRIVER:
        return "check the NVIDIA driver with nvidia-smi"
    return (f"CUDA {major} needs NVIDIA driver {MIN_DRIVER[major]} or newer (nvidia-smi shows the driver version and "
            "the highest CUDA it runs)")


def tensorrt_cuda_major(distributions: Iterable[str] | None = None) -> int | None:
    """The CUDA major TensorRT was built for, from its installed distributions' names (``tensorrt-cu13``,
    ``tensorrt_cu13_bindings``); None when no such distribution is installed."""
    if distributions is None:
        distributions = (d.metadata["Name"] or "" for d in importlib.metadata.distributions())
    majors = {int(m.group(1)) for name in distributions if (m := _TRT_DIST.match(name))}
    return max(majors) if majors else None


def cuda_problem() -> str | None:
    """Why torch cannot run CUDA here, in torch's own words, or None when it can."""
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build; on a machine with an NVIDIA GPU `make serve` "
                "installs the CUDA build (scripts/setup_venv.sh)")
    try:
        torch.cuda.init()  # raises with the driver's own message where is_available() only says False
    except RuntimeError as exc:
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot start CUDA: {exc}; " + \
            driver_hint(torch.version.cuda)
    if torch.cuda.device_count() == 0:
        return "torch sees no CUDA device (is CUDA_VISIBLE_DEVICES empty?)"
    return None


def cuda_device(device: torch.device | str | None) -> torch.device:
    """``device`` as ``cuda:N`` with its index resolved (``cuda`` is the current device); raises when it is not
    a CUDA device this process can use."""
    problem = cuda_problem()
    if problem is not None:
        raise BackendUnavailableError("tensorrt", "a working CUDA GPU", problem)
    dev = torch.device(device if device is not None else "cuda")
    if dev.type != "cuda":
        raise BackendUnavailableError("tensorrt", "a CUDA GPU",
                                      f"the model is on {dev}; TensorRT engines only run on NVIDIA GPUs")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < torch.cuda.device_count():
        raise BackendUnavailableError("tensorrt", f"GPU {index}",
                                      f"torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or BackendUnavailableError saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError("tensorrt", "the tensorrt package",
                                      f"install the extra on a machine with an NVIDIA GPU: "
                                      f"{install_hint('tensorrt')} ({exc})") from exc
    return tensorrt


_process_logger: Any = None
_process_logger_lock = threading.Lock()


def process_logger(trt: ModuleType) -> Any:
    """The process's one ``trt.ILogger``: it forwards to ``logging``, keeps the last errors of the process
    (``.errors``) and copies each error into every list this thread ``recording()`` into.

    TensorRT keeps a single logger pointer per process (the first one a runtime or builder got): a second logger
    never hears a word, and freeing the first while others live can crash. So every runtime and builder gets this
    one, and polygraphy's builds too (its ``TRT_LOGGER``). Errors reach the part that caused them through
    ``recording``: TensorRT logs on the thread that made the call."""
    global _process_logger
    with _process_logger_lock:
        if _process_logger is None:
            _process_logger = _make_recording_logger(trt)
            _adopt_in_polygraphy(_process_logger)
        return _process_logger


def _make_recording_logger(trt: ModuleType) -> Any:
    severity = trt.ILogger.Severity

    class RecordingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=MAX_KEPT_ERRORS)
            self._local = threading.local()

        @contextlib.contextmanager
        def recording(self, into: list[str]) -> Iterator[list[str]]:
            """Appends every error this thread's TensorRT calls log inside the block to ``into``."""
            scopes = self._local.__dict__.setdefault("scopes", [])
            scopes.append(into)
            try:
                yield into
            finally:
                scopes.remove(into)

        def log(self, level: Any, msg: str) -> None:  # TensorRT calls this from C++: it must not raise
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
                for scope in self._local.__dict__.get("scopes", ()):
                    scope.append(msg)
                logger.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                logger.warning("TensorRT: %s", msg)
            elif level == severity.INFO:
                logger.debug("TensorRT: %s", msg)

    return RecordingLogger()


def _adopt_in_polygraphy(trt_logger: Any) -> None:
    """polygraphy makes its own process logger for the builders it creates; it gets ours instead."""
    try:
        from polygraphy.backend.trt import util as polygraphy_trt
    except ImportError:  # the build path imports polygraphy; a runtime-only install has none
        return
    polygraphy_trt.TRT_LOGGER = trt_logger


def install_summary(trt: ModuleType) -> str:
    return (f"TensorRT {trt.__version__} (CUDA {tensorrt_cuda_major() or '?'}), torch {torch.__version__} "
            f"(CUDA {torch.version.cuda})")


def start_trt(trt: ModuleType, kind: str, trt_logger: Any, device: torch.device, advice: str = "") -> Any:
    """``trt.Runtime`` or ``trt.Builder`` (``kind``) on ``device``; its failure (a ``TypeError`` from pybind11, or
    None) becomes an EngineError carrying what TensorRT logged and what to do."""
    errors: list[str] = []
    try:
        with torch.cuda.device(device), trt_logger.recording(errors):
            made = getattr(trt, kind)(trt_logger)
    except TypeError as exc:
        made, cause = None, str(exc)
    else:
        cause = f"trt.{kind} returned None"
    if made is None:
        logged = "; ".join(errors) or cause
        raise BackendUnavailableError("tensorrt", f"a TensorRT {kind.lower()} that starts",
                                      f"trt.{kind} failed on {device}: {logged}. {install_summary(trt)}: "
                                      f"{driver_hint(torch.version.cuda)}{advice}")
    return made


def create_runtime(trt: ModuleType, trt_logger: Any, device: torch.device) -> Any:
    return start_trt(trt, "Runtime", trt_logger, device,
                     "; TensorRT and torch should be built for the same CUDA major (docs/gpu.md)")


def probe_tensorrt(device: torch.device | str | None = None) -> torch.device:
    """Imports TensorRT and starts CUDA and a ``trt.Runtime`` on ``device``: the whole GPU stack, in about a
    second, before any model is loaded. Returns the resolved ``cuda:N``."""
    trt = import_tensorrt()
    dev = cuda_device(device)
    create_runtime(trt, process_logger(trt), dev)
    logger.info("TensorRT probe on %s (%s): %s", dev, torch.cuda.get_device_name(dev), install_summary(trt))
    return dev


def engine_load_error(path: Any, what: str, errors: list[str]) -> EngineLoadError:
    """An EngineLoadError for a TensorRT call that returned None, with the errors TensorRT logged for it."""
    logged = "; ".join(errors)
    return EngineLoadError(path, "tensorrt", f"{what}" + (f": {logged}" if logged else ""))
