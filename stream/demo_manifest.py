"""``demo_model.json``: what a trained demo model is (its prompts, the autoencoder it was trained with, how it was
trained), written beside its weights so the server can label it honestly and load it the way it was trained."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "demo_model.json"


@dataclass(frozen=True)
class DemoManifest:
    prompts: tuple[str, ...]  # the trained prompts, each imitating one filter (stream.demo_filters)
    encoder: str = "tiny"  # the autoencoder trained with it (a StreamConfig encoder / decoder value)
    decoder: str = "tiny"
    training: dict[str, Any] = field(default_factory=dict)  # the DemoTrainingConfig it was trained with
    seconds: float = 0.0  # training time
    autoencoder_loss: float = 0.0
    transformer_loss: float = 0.0
    other_prompts: tuple[str, ...] = ()  # untrained-style prompts taught to keep the camera picture

    def label(self) -> str:
        """The honest one-line description the page and the log show."""
        return (f"demo model: imitates {len(self.prompts)} simple filters ({', '.join(self.prompts)}); "
                "real styles need Sana-Sprint weights (a GPU)")

    def write(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> DemoManifest | None:
        """The manifest of a model directory; None for any model without one (real weights, the random demo)."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "prompts": tuple(data["prompts"]), "other_prompts": tuple(data["other_prompts"])})


TRAINED_DEMO_DIR = Path(__file__).parent / "demo_weights"  # the committed trained demo model (package data)
