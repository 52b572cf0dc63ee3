"""``sana-stream camera`` runs on a laptop without torch: the bridge and ``rtc.client`` import none of the
server's own dependencies, and the command line defines a subcommand's options only when it runs (so
``--version`` and ``--help`` are quick too). Checked in a fresh interpreter, with everything importable (no
server-only module may load) and with only the bridge-only install of docs/install.md importable."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from engines.install_hint import install_hint
from sana_stream.extras import SERVER

ROOT = Path(__file__).resolve().parent.parent
OURS = ("sana_stream", "bridge", "rtc", "server", "stream", "engines", "cluster", "web")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the bridge-only install (docs/install.md): pip install '.[bridge,ndi]', the core dependencies and those extras
BRIDGE_REQUIREMENTS = tuple(Requirement(line).name for line in (
    *PROJECT["dependencies"], *PROJECT["optional-dependencies"]["bridge"], *PROJECT["optional-dependencies"]["ndi"]))
# the core dependencies only the server needs: the bridge-only install lacks them
SERVER_ONLY = ("torch", "torchvision", "diffusers", "transformers", "tokenizers", "huggingface_hub", "safetensors",
               "accelerate", "fastapi", "starlette", "uvicorn", "uvloop", "onnxruntime", "onnx", "tensorrt")
BRIDGE_MODULES = ("bridge", "bridge.background", "bridge.bridge", "bridge.cli", "bridge.errors", "bridge.prompts",
                  "bridge.sinks", "bridge.sources", "rtc.client", "stream.frames", "stream.live_settings")

# a meta-path finder that makes every module outside ALLOWED (and the standard library) look uninstalled
ONLY_ALLOWED = """
import sys

class OnlyAllowed:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return None
        raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in the bridge-only install)", name=name)

sys.meta_path.insert(0, OnlyAllowed())
"""

# runs COMMAND(), then reports as one JSON line its exit status, the server-only modules loaded and where our
# own modules came from
REPORT = f"""
import json, sys
try:
    COMMAND()
except SystemExit as exc:
    status = exc.code
else:
    status = 0
print(json.dumps({{"status": status,
                  "server_only": sorted(m for m in sys.modules if m.partition(".")[0] in {SERVER_ONLY!r}),
                  "files": {{m: getattr(mod, "__file__", None) for m, mod in sys.modules.items()
                            if m.partition(".")[0] in {OURS!r}}}}}))
"""


def run_reported(python: str | Path, command: str, *, allowed: set[str] | None, env: dict[str, str], cwd: Path,
                 timeout: float = 120) -> dict:
    """Runs ``command`` (Python source defining COMMAND()) in a fresh ``python`` and returns its report; with
    ``allowed``, top-level modules outside it and the standard library cannot be imported there."""
    block = "" if allowed is None else f"ALLOWED = {sorted(allowed)!r}\n" + ONLY_ALLOWED
    done = subprocess.run([str(python), "-c", block + command + REPORT], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["output"] = done.stdout + done.stderr
    return report


def bridge_install() -> set[str]:
    """The top-level modules a bridge-only install has: ours, and those of BRIDGE_REQUIREMENTS and everything
    they require, as installed here."""
    wanted, seen = [canonicalize_name(n) for n in BRIDGE_REQUIREMENTS], set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:  # required on another platform only
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(canonicalize_name(requirement.name))
    modules = {module for module, dists in importlib.metadata.packages_distributions().items()
               if any(canonicalize_name(d) in seen for d in dists)}
    assert not modules & set(SERVER_ONLY), "a bridge requirement pulls in a server-only package"
    return modules | set(OURS)


def checkout_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_bridge_imports_none_of_the_servers_dependencies():
    command = f"""
import importlib
def COMMAND():
    for name in {BRIDGE_MODULES!r}:
        importlib.import_module(name)
"""
    for allowed in (None, bridge_install()):
        report = run_reported(sys.executable, command, allowed=allowed, env=checkout_env(), cwd=ROOT)
        assert report["status"] == 0, report["output"]
        assert report["server_only"] == [], "the bridge loaded server-only modules"
        assert set(BRIDGE_MODULES) <= set(report["files"])


def test_camera_help_runs_with_only_the_bridge_install():
    command = """
def COMMAND():
    from sana_stream.cli import main
    sys.exit(main(["camera", "--help"]))
"""
    report = run_reported(sys.executable, command, allowed=bridge_install(), env=checkout_env(), cwd=ROOT)
    assert report["status"] == 0, report["output"]
    assert "--virtual-camera" in report["output"] and "--keep-background" in report["output"]


def test_version_and_help_need_only_the_bridge_install():
    commands = ["make-tiny-model", "serve", "build", "camera"]
    for argv, shown in ((["--version"], ["sana-stream "]), (["--help"], commands)):
        command = f"""
def COMMAND():
    from sana_stream.cli import main
    sys.exit(main({argv!r}))
"""
        report = run_reported(sys.executable, command, allowed=bridge_install(), env=checkout_env(), cwd=ROOT)
        assert report["status"] == 0 and all(text in report["output"] for text in shown), report["output"]


def test_the_stream_package_exports_every_name_on_first_use():
    import stream

    assert all(getattr(stream, name) is not None for name in stream.__all__)
    assert stream.StreamEngine.__module__ == "stream.engine"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        stream.nothing_here  # noqa: B018


def test_the_bridge_streams_with_only_the_bridge_install(demo_model_dir, tmp_path):
    """Not only imports: a whole ``camera`` run (a file source, WebRTC both ways, PNGs recorded) where nothing
    outside the bridge-only install can be imported, so an import made lazily at run time fails here too."""
    from tests.support import ServerThread
    from tests.support.bridge import bridge_app, bridge_engine, write_clip

    clip, out = write_clip(tmp_path / "clip.mp4"), tmp_path / "frames"
    with ServerThread(bridge_app(bridge_engine(demo_model_dir), token=None)) as server:
        argv = ["camera", "--server", server.base, "--source", f"file:{clip}", "--loop", "--record", str(out),
                "--max-frames", "5", "--no-stdin"]
        command = f"""
def COMMAND():
    from rtc.ice import include_loopback_candidates
    from sana_stream.cli import main
    include_loopback_candidates()
    sys.exit(main({argv!r}))
"""
        report = run_reported(sys.executable, command, allowed=bridge_install(), env=checkout_env(), cwd=ROOT)
    assert report["status"] == 0, report["output"]
    assert report["server_only"] == [], "the bridge loaded server-only modules while streaming"
    assert len(list(out.glob("frame_*.png"))) == 5, report["output"]
    assert {"bridge.bridge", "bridge.pump", "rtc.client"} <= set(report["files"])


def test_serve_without_the_server_extra_names_it_in_one_line():
    for argv in (["serve"], ["serve", "--help"], ["build", "--model", "x"], ["make-tiny-model", "out"]):
        command = f"""
def COMMAND():
    from sana_stream.cli import main
    sys.exit(main({argv!r}))
"""
        report = run_reported(sys.executable, command, allowed=bridge_install(), env=checkout_env(), cwd=ROOT)
        lines = [line for line in report["output"].splitlines() if line and not line.startswith('{"status"')]
        assert report["status"] == 1 and len(lines) == 1, report["output"]
        assert f"`sana-stream {argv[0]}` needs the server extra" in lines[0]
        assert install_hint("server") in lines[0] and "no torch" in lines[0]


def test_the_server_extra_provides_every_module_its_commands_check():
    server = {canonicalize_name(Requirement(line).name) for line in PROJECT["optional-dependencies"]["server"]}
    providers = importlib.metadata.packages_distributions()
    for module in SERVER.modules:
        assert {canonicalize_name(d) for d in providers[module]} & server, f"{module} is not in the server extra"
    core = {canonicalize_name(Requirement(line).name) for line in PROJECT["dependencies"]}
    assert not core & {canonicalize_name(name) for name in SERVER_ONLY}, "a server-only package is a core dependency"
