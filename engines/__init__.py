"""Model runtimes behind one small interface (``engines.base.ModelBackend``): torch eager (``engines.torch_backend``)
and compiled parts (``engines.compile``) on onnxruntime, tensorrt or torch.compile, with the model definitions they run
(``engines.models``).

Only the backend's name and its choice for this machine live here, and nothing heavy is imported: the command
line reads them without torch, and onnxruntime and tensorrt load only when their backend is asked for.
"""

from __future__ import annotations

import enum
import importlib.util
import logging
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class BackendName(str, enum.Enum):
    TORCH = "torch"  # eager PyTorch
    ONNXRUNTIME = "onnxruntime"  # exported ONNX graphs on ONNX Runtime (CPU, or its CUDA provider)
    TENSORRT = "tensorrt"  # TensorRT engines built from the same graphs (NVIDIA GPUs)
    TORCH_COMPILE = "torch-compile"  # the torch parts compiled by torch.compile (Inductor), on static buffers


AUTO = "auto"  # resolve_backend's choice for this machine


def backend_names() -> list[str]:
    return [b.value for b in BackendName]


def batching_pays(device: torch.device) -> bool:
    """Whether one model call for several streams costs about what one stream's call costs (a GPU), so the
    streams should share each call. On a CPU a batch costs what its calls one by one cost
    (benchmarks/results/pipeline.md, 4 vs 1 streams): compiled parts are built for one stream there, and the
    server's streams take turns, one per call."""
    return device.type == "cuda"


def resolve_backend(name: BackendName | str, *, cuda: bool | None = None,
                    installed: Callable[[str], bool] | None = None) -> BackendName:
    """``name`` validated, with ``auto`` resolved for this machine (``cuda``: whether torch sees a GPU;
    ``installed``: whether a module can be imported). On an NVIDIA GPU: TensorRT when installed, else torch.
    On a CPU: onnxruntime when installed (faster than torch eager: benchmarks/results/backends.md; and one
    call per part releases the GIL the server's event loop needs, where eager torch takes it back between
    ops), else torch. The choice is logged; a missing compiled backend is logged as a warning."""
    if name != AUTO:
        try:
            return BackendName(name)
        except ValueError:
            raise ValueError(f"backend must be {AUTO} or one of {', '.join(backend_names())}, got {name!r}") from None
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
        if not cuda and torch.version.cuda is not None:  # a CUDA build that cannot start CUDA: say why
            from engines.gpu_probe import cuda_problem

            logger.warning("backend auto: %s; choosing a CPU backend", cuda_problem())
    installed = installed or (lambda module: importlib.util.find_spec(module) is not None)
    best, module = (BackendName.TENSORRT, "tensorrt") if cuda else (BackendName.ONNXRUNTIME, "onnxruntime")
    where = "an NVIDIA GPU" if cuda else "a CPU"
    if installed(module):
        logger.info("backend auto: %s on %s", best.value, where)
        return best
    logger.warning("backend auto: %s is not installed, so %s runs torch eager (slower; install the %s extra%s)",
                   module, where, "tensorrt" if cuda else "onnx", ", or choose --backend torch-compile" if cuda else "")
    return BackendName.TORCH
