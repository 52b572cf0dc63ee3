"""Model runtimes behind one small interface (``engines.base.ModelBackend``)."""

from __future__ import annotations

import enum


class BackendName(str, enum.Enum):
    TORCH = "torch"


def backend_names() -> list[str]:
    return [b.value for b in BackendName]
