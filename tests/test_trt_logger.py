"""The process's one TensorRT logger (engines.gpu_probe.process_logger): TensorRT keeps a single logger pointer per
process, so every runtime and builder must share one, and each part's errors must still reach that part.

TensorRT is not installed on CPU machines: ``trt`` here is a stand-in with the two names the logger uses
(``ILogger`` and its ``Severity``); on a GPU, tests/test_engines_tensorrt_gpu.py loads real parts through it."""

from __future__ import annotations

import contextlib
import enum
import threading
from types import SimpleNamespace

import pytest

from engines import gpu_probe


class _Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class _ILogger:
    Severity = _Severity

    def __init__(self) -> None:
        pass


TRT = SimpleNamespace(ILogger=_ILogger)


@pytest.fixture(autouse=True)
def fresh_process_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_probe, "_process_logger", None)


def test_every_caller_gets_the_same_logger():
    first = gpu_probe.process_logger(TRT)
    assert gpu_probe.process_logger(TRT) is first
    made: list[object] = []
    threads = [threading.Thread(target=lambda: made.append(gpu_probe.process_logger(TRT))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == [first] * 4


def test_a_later_parts_errors_reach_its_own_list():
    trt_logger = gpu_probe.process_logger(TRT)
    first_part: list[str] = []
    second_part: list[str] = []
    with trt_logger.recording(first_part):
        trt_logger.log(_Severity.ERROR, "first part: bad plan")
    with trt_logger.recording(second_part):
        trt_logger.log(_Severity.INTERNAL_ERROR, "second part: out of memory")
        trt_logger.log(_Severity.WARNING, "a warning is no error")
    trt_logger.log(_Severity.ERROR, "no part asked")
    assert first_part == ["first part: bad plan"]
    assert second_part == ["second part: out of memory"]
    assert list(trt_logger.errors) == ["first part: bad plan", "second part: out of memory", "no part asked"]


def test_recording_is_per_thread():
    trt_logger = gpu_probe.process_logger(TRT)
    mine: list[str] = []
    with trt_logger.recording(mine):
        other = threading.Thread(target=trt_logger.log, args=(_Severity.ERROR, "another thread's error"))
        other.start()
        other.join()
    assert mine == [] and list(trt_logger.errors) == ["another thread's error"]


def test_start_trt_names_the_errors_logged_by_its_own_call(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gpu_probe.torch.cuda, "device", lambda device: contextlib.nullcontext())  # no GPU here
    trt_logger = gpu_probe.process_logger(TRT)
    trt_logger.log(_Severity.ERROR, "an older error of another part")

    def failing_runtime(given: object) -> None:
        assert given is trt_logger
        trt_logger.log(_Severity.ERROR, "CUDA initialization failure with error: 35")
        raise TypeError("__init__(): incompatible constructor arguments")

    trt = SimpleNamespace(ILogger=_ILogger, Runtime=failing_runtime, __version__="11.0")
    with pytest.raises(gpu_probe.BackendUnavailableError) as error:
        gpu_probe.start_trt(trt, "Runtime", trt_logger, gpu_probe.torch.device("cpu"))
    assert "CUDA initialization failure with error: 35" in str(error.value)
    assert "older error" not in str(error.value)
