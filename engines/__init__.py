"""Model runtimes behind one small interface (``engines.base.ModelBackend``), chosen by ``create_backend``.

Nothing heavy is imported here: onnxruntime and tensorrt load only when their backend is asked for.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    from engines.base import ImageCodec, ModelBackend
    from engines.compile import CompileOptions
    from engines.specs import BuildSpec
    from stream.models.controlnet import SprintControlNetModel


class BackendName(str, enum.Enum):
    TORCH = "torch"  # eager PyTorch
    ONNXRUNTIME = "onnxruntime"  # exported ONNX graphs on ONNX Runtime (CPU, or its CUDA provider)
    TENSORRT = "tensorrt"  # TensorRT engines built from the same graphs (NVIDIA GPUs)


def backend_names() -> list[str]:
    return [b.value for b in BackendName]


def create_backend(name: BackendName | str, transformer: SanaTransformer2DModel, vae: AutoencoderDC, *,
                   encoder: ImageCodec | None = None, decoder: ImageCodec | None = None,
                   build: BuildSpec | None = None, options: CompileOptions | None = None,
                   controlnets: Sequence[SprintControlNetModel] = ()) -> ModelBackend:
    """The backend called ``name`` over loaded torch modules. Compiled backends export and build their parts
    for ``build``'s shapes into ``options.cache_dir`` (or load them from there): one transformer (with ControlNet
    residual inputs, zeros when no net is on), the encoder, the decoder, and one part per ControlNet."""
    try:
        name = BackendName(name)
    except ValueError:
        raise ValueError(f"backend must be one of {', '.join(backend_names())}, got {name!r}") from None
    from engines.torch_backend import TorchBackend

    torch_backend = TorchBackend(transformer, vae, encoder=encoder, decoder=decoder, controlnets=controlnets)
    if name is BackendName.TORCH:
        return torch_backend
    from engines.compile import CompileOptions, compile_backend
    from engines.specs import BuildSpec

    return compile_backend(torch_backend, build or BuildSpec(), options or CompileOptions(), name).backend
