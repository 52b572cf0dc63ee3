"""The pip line that installs one of sana-stream's extras, from where this copy of sana-stream stands.

sana-stream is on no package index, so ``pip install 'sana-stream[EXTRA]'`` can only fail ("No matching
distribution"). From a checkout (the editable install ``make`` sets up) the line names the checkout;
from an installed wheel it names the extra's own requirements, which any index has. Stdlib only: the camera
bridge reads it on a machine without torch.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

DISTRIBUTION = "sana-stream"
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([\w.-]+)["']""")
_SELF_EXTRAS = re.compile(r"^sana[-_]stream\[([^\]]+)\]", re.IGNORECASE)


def checkout_root() -> Path | None:
    """The source checkout this code runs from (its pyproject.toml names sana-stream), or None."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'^name\s*=\s*"sana-stream"', pyproject.read_text(), re.MULTILINE):
        return root
    return None


def extra_requirements(extra: str) -> list[str]:
    """The requirements ``extra`` adds, its own extras of sana-stream expanded, from the installed metadata."""
    try:
        declared = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found: list[str] = []
    for line in declared:
        requirement, _, marker = line.partition(";")
        match = _EXTRA_MARKER.search(marker)
        if match is None or match.group(1) != extra:
            continue
        nested = _SELF_EXTRAS.match(requirement.strip())
        if nested is None:
            found.append(requirement.strip())
        else:
            found += [r for e in nested.group(1).split(",") for r in extra_requirements(e.strip())]
    return list(dict.fromkeys(found))


def install_hint(extra: str) -> str:
    """A command that installs ``extra`` here, e.g. ``pip install '/src/sana-stream[cluster]'``."""
    root = checkout_root()
    if root is not None:
        return f"pip install '{root}[{extra}]'"
    requirements = extra_requirements(extra)
    if not requirements:
        return f"pip install '.[{extra}]' from a sana-stream checkout"
    return "pip install " + " ".join(f"'{r}'" for r in requirements)
