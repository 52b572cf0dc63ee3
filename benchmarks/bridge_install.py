"""How big a camera-bridge install is: `pip install '.[bridge]'`, `'.[bridge,ndi]'`, and what `'.[bridge]'` installed
before the server's dependencies moved to the `server` extra (the same as `'.[server,bridge]'` now). Each is
installed offline into a fresh virtual environment from this environment's packages (benchmarks/wheelhouse.py),
and measured like `du -sb` of the environment. The torch in it is whatever this environment has (the CPU build
on the test machines; the CUDA build on a GPU machine is several GB more).

    python -m benchmarks.bridge_install [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.report import machine_info
from benchmarks.wheelhouse import fresh_venv, install_offline, size_bytes, wheelhouse

ROOT = Path(__file__).resolve().parent.parent
INSTALLS = {  # name -> the extras installed
    "bridge": "bridge",
    "bridge,ndi": "bridge,ndi",
    "bridge before the split (now server,bridge)": "server,bridge",
}


def requirements(extras: str) -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    return [*project["dependencies"], *(line for e in extras.split(",") for line in optional[e])]


def build_wheel(directory: Path) -> Path:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "--wheel-dir", str(directory), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = directory.glob("sana_stream-*.whl")
    return wheel


def measure(extras: str, wheel: Path, work: Path) -> dict[str, object]:
    house = work / "wheelhouse"
    packed = wheelhouse([r for r in requirements(extras) if not r.startswith("sana-stream")], house)
    shutil.copy(wheel, house)
    python = fresh_venv(work / "venv")
    done = install_offline(python, f"sana-stream[{extras}]", house)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    return {"extras": extras, "distributions": len(packed), "bytes": size_bytes(work / "venv"),
            "torch": "torch" in packed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bridge-install-") as tmp:
        wheel = build_wheel(Path(tmp) / "dist")
        for name, extras in INSTALLS.items():
            work = Path(tmp) / extras.replace(",", "-")
            rows.append({"install": name, **measure(extras, wheel, work)})
            shutil.rmtree(work)
    before = rows[-1]["bytes"]
    table = ["| install | distributions | torch | size (du) | vs before |", "|---|---|---|---|---|"]
    table += [f"| `pip install '.[{r['extras']}]'` ({r['install']}) | {r['distributions']} | "
              f"{'yes' if r['torch'] else 'no'} | {r['bytes'] / 1e6:.0f} MB | {r['bytes'] / before:.2f} |"
              for r in rows]
    print("\n".join(table))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "bridge_install.json").write_text(json.dumps({"machine": machine_info(), "installs": rows},
                                                                indent=2) + "\n")
    (args.output / "bridge_install.md").write_text("# bridge install sizes\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
