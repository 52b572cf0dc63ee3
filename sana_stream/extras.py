"""Which optional extra a command needs (pyproject.toml's ``[project.optional-dependencies]``), checked before the
command's own modules load, so a bridge-only install answers ``sana-stream serve`` with one line naming the extra
instead of a traceback from deep inside an import."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from engines.install_hint import install_hint


@dataclass(frozen=True)
class Extra:
    name: str  # as in `pip install '.[NAME]'`
    modules: tuple[str, ...]  # top-level modules of its requirements that its commands import


# the server extra's requirements that serve, build and make-tiny-model cannot start without (tests check each is one)
SERVER = Extra("server", ("torch", "diffusers", "transformers", "huggingface_hub", "safetensors", "fastapi",
                          "uvicorn"))


class MissingExtra(RuntimeError):
    def __init__(self, command: str, extra: Extra, missing: list[str]) -> None:
        super().__init__(f"`sana-stream {command}` needs the {extra.name} extra, which is not installed here (no "
                         f"{', '.join(missing)}): {install_hint(extra.name)} (the onnx and tensorrt extras include it)")
        self.command, self.extra, self.missing = command, extra, missing


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a meta-path finder that hides it says so this way
        return False


def require(command: str, extra: Extra) -> None:
    """Raises MissingExtra when a module of ``extra`` cannot be found."""
    missing = [name for name in extra.modules if not installed(name)]
    if missing:
        raise MissingExtra(command, extra, missing)
