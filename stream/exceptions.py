"""Errors of the stream engine. Each carries the data that explains it."""

from __future__ import annotations


class ModelNotFoundError(FileNotFoundError):
    """The weights named by ``model`` could not be found; ``missing`` lists what is absent."""

    def __init__(self, model: str, missing: list[str], hint: str) -> None:
        self.model = model
        self.missing = missing
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"model {self.model!r} is missing {', '.join(self.missing)}: {self.hint}"

    def __repr__(self) -> str:
        return f"ModelNotFoundError(model={self.model!r}, missing={self.missing!r})"


class UnknownStreamError(KeyError):
    """No stream with this id is registered on the engine."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(stream_id)

    def __str__(self) -> str:
        return f"unknown stream {self.stream_id!r}"


class IncompatibleWeightsError(ValueError):
    """The weights file at ``path`` does not load into ``target`` (a network of a known layer plan); ``reason`` is
    what torch said (missing or unexpected keys, shape mismatches) or why the file could not be read."""

    def __init__(self, path: str, target: str, reason: str) -> None:
        self.path = path
        self.target = target
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path} does not load into {self.target}: {self.reason}"

    def __repr__(self) -> str:
        return f"IncompatibleWeightsError(path={self.path!r}, target={self.target!r})"
