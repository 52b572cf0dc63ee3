"""The torch-compile backend on the CPU (Inductor's C++ code): the same images as eager torch, its parts on fixed
buffers, and Inductor's caches under the engine cache. Compiling takes about a minute on 2 cores, so the model is
the tiny demo model and it is compiled once per session (conftest's ``torch_compiled``)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.compile_options import CompileOptions, TorchCompileGraphs
from engines.torch_compile import INDUCTOR_DIR, TorchPart, model_precision
from engines.specs import Precision
from tests.support import camera_frame


def test_torch_compile_matches_eager_torch(torch_compiled, make_engine):
    compiled, cache_dir = torch_compiled
    eager = make_engine(t_list=(1.0,), encoder="tiny", decoder="tiny")
    assert compiled.backend.name == "torch-compile"
    assert all(isinstance(part, TorchPart) for part in compiled.backend.parts.values())
    for i in range(3):
        frame = camera_frame(i, 64, 64)
        a, b = compiled(frame).astype(np.int16), eager(frame).astype(np.int16)
        assert a.shape == b.shape == (64, 64, 3)
        assert np.abs(a - b).max() <= 2, f"frame {i}: torch-compile differs from eager by {np.abs(a - b).max()}"
        assert np.abs(a - b).mean() < 0.05
    assert any((cache_dir / INDUCTOR_DIR).rglob("*")), "Inductor wrote nothing under the engine cache"


def test_torch_compile_runs_the_models_own_dtype():
    import torch

    assert model_precision(torch.float32, None) is Precision.FP32
    assert model_precision(torch.bfloat16, Precision.BF16) is Precision.BF16
    with pytest.raises(ValueError, match="model's own dtype"):
        model_precision(torch.float32, Precision.BF16)


def test_torch_compile_graphs_option_is_validated():
    assert CompileOptions(torch_compile_graphs="reduce-overhead").torch_compile_graphs is \
        TorchCompileGraphs.REDUCE_OVERHEAD
    with pytest.raises(ValueError, match="torch_compile_graphs must be one of own, reduce-overhead, none"):
        CompileOptions(torch_compile_graphs="fast")
