"""Results of a benchmark: comparisons with targets, rendered as a plain-text table, markdown and JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Target:
    """``ratio op value``, e.g. ``>= 1.5``."""

    op: str  # ">=" or "<="
    value: float

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"op must be '>=' or '<=', got {self.op!r}")

    def met_by(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class Comparison:
    """Two measured values (A, B) and their ratio. ``ratio_of`` says how the ratio is formed."""

    key: str
    title: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str  # of a and b
    ratio: float
    ratio_of: str  # "A/B", "B/A", or the formula spelt out, e.g. "(A-B)/output interval"
    target: Target | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met_by(self.ratio)

    @property
    def verdict(self) -> str:
        return {None: "info", True: "pass", False: "FAIL"}[self.passed]

    def row(self) -> list[str]:
        return [self.title, f"{self.a_label}: {self.a:.4g} {self.unit}", f"{self.b_label}: {self.b:.4g} {self.unit}",
                f"{self.ratio:.3f} ({self.ratio_of})", str(self.target) if self.target else "-", self.verdict]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["passed"] = self.passed
        return data


HEADER = ["comparison", "value A", "value B", "ratio", "target", "result"]


def text_table(comparisons: list[Comparison]) -> str:
    rows = [HEADER] + [c.row() for c in comparisons]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(comparisons: list[Comparison]) -> str:
    rows = [HEADER, ["---"] * len(HEADER)] + [c.row() for c in comparisons]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import diffusers
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = list(os.getloadavg())
    return info


def write_results(output_dir: Path, name: str, comparisons: list[Comparison],
                  meta: dict[str, Any]) -> tuple[Path, Path]:
    """Writes ``name``.json (everything) and ``name``.md (the table and the settings)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / f"{name}.json", output_dir / f"{name}.md"
    data = {**meta, "comparisons": [c.to_dict() for c in comparisons]}
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    notes = "\n".join(f"- **{c.title}**: {c.note}" for c in comparisons if c.note)
    machine = meta.get("machine", {})
    settings = meta.get("settings", {})
    shares = {k: v for k, v in machine.get("other_processes_cpu_share", {}).items() if v is not None}
    contention = ("Other processes' share of all CPUs while it ran: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + ".\n\n") if shares else ""
    md = (f"# {name} benchmark\n\n"
          f"{machine.get('date', '')}, {machine.get('cpu_model', '')} ({machine.get('cpu_count')} CPUs, "
          f"{machine.get('torch_threads')} torch threads), torch {machine.get('torch')}, "
          f"diffusers {machine.get('diffusers')}. Model preset `{settings.get('preset')}`, "
          f"{settings.get('width')}x{settings.get('height')} px, {settings.get('frames')} timed frames per side, "
          f"medians.\n\n{markdown_table(comparisons)}\n\n{notes}\n\n{contention}"
          f"All numbers, settings and FLOPs: `{json_path.name}`.\n")
    md_path.write_text(md)
    return json_path, md_path
