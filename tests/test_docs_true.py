"""What the project says about itself stays true: the option tables in docs/ are the parsers' own, every pip
line the docs and the program's hints give installs (offline, from a copy of this checkout), the rules for
secrets are stated where the options are, and the package list names every package the wheel installs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engines import install_hint as hints
from rtc.secret_rules import MIN_TOKEN_CHARS, MIN_TURN_SECRET_CHARS
from sana_stream import option_tables
from sana_stream.cli import main
from tests.test_wheel import CODE_PACKAGES, PROJECT, source, wheel  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PIP_LINE = re.compile(r"^\s*(pip install [^#\n]+)", re.MULTILINE)  # a command line in a code block
PIP_INLINE = re.compile(r"`(pip install [^`]+)`")


def test_the_option_tables_are_the_parsers_own():
    stale = [str(p) for p, text in option_tables.rendered_docs().items() if p.read_text() != text]
    assert stale == [], "run: python -m sana_stream.option_tables --write"


def test_the_option_tables_know_which_options_read_a_variable():
    serve = option_tables.reads_variable("serve")
    assert {"token", "max_peers", "no_pages", "turn_secret", "workers"} <= serve
    assert "controlnet" not in serve  # repeatable on the command line only
    table = option_tables.options_table("serve")
    assert "| `--controlnet PATH[:PREPROCESSOR[:SCALE]]` (repeatable) |  | none |" in table
    assert "`SANA_STREAM_NO_PAGES`=`1` (only `1` turns it on)" in table
    assert {"server", "token", "source", "relay"} == option_tables.reads_variable("camera")


def test_every_live_setting_is_in_the_table_and_the_bridge_help(capsys):
    from stream.live_settings import LIVE_SETTINGS

    table = option_tables.live_settings_table()
    with pytest.raises(SystemExit):
        main(["camera", "--help"])
    camera_help = capsys.readouterr().out
    for s in LIVE_SETTINGS:
        assert f"| `{s.name}` | `/{s.command} {s.placeholder}` |" in table
        assert f"/{s.command} {s.placeholder}" in camera_help or s.name == "prompt"
    assert "type a prompt" in camera_help


def doc_pip_lines() -> list[str]:
    lines = []
    for doc in DOCS:
        text = doc.read_text()
        lines += [m.strip() for m in PIP_LINE.findall(text) + PIP_INLINE.findall(text)]
    return list(dict.fromkeys(lines))


def installable(line: str, wheel_dir: Path) -> list[str] | None:
    """The arguments of ``line`` for an offline dry run, or None for a line that names no requirement or one
    only an NVIDIA GPU machine has (tensorrt)."""
    args = [a.replace("dist/", f"{wheel_dir}/") for a in shlex.split(line)[2:]]
    if not [a for a in args if not a.startswith("-")]:
        return None  # prose such as "`pip install --no-deps` on top of a dependency layer"
    if any("tensorrt" in a for a in args) and not _has("tensorrt"):
        return None
    return args


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def dry_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--disable-pip-version-check", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


@pytest.mark.slow
def test_every_pip_line_of_the_docs_installs(source, wheel):  # noqa: F811 - fixtures
    lines = doc_pip_lines()
    assert "pip install '.[bridge]'" in lines and len(lines) >= 6
    for line in lines:
        args = installable(line, wheel.parent)
        if args is None:
            continue
        done = dry_run(args, cwd=source)
        assert done.returncode == 0, (line, done.stdout + done.stderr)


def declared_extras() -> list[str]:
    return sorted(e for e in PROJECT["optional-dependencies"] if e != "tensorrt" or _has("tensorrt"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", declared_extras())
def test_the_programs_install_hint_installs_each_extra_from_a_checkout(source, monkeypatch, extra):  # noqa: F811
    monkeypatch.setattr(hints, "checkout_root", lambda: source)
    hint = hints.install_hint(extra)
    assert hint == f"pip install '{source}[{extra}]'"
    done = dry_run(shlex.split(hint)[2:], cwd=source.parent)
    assert done.returncode == 0, (hint, done.stdout + done.stderr)


def test_the_install_hint_of_an_installed_wheel_names_the_extras_requirements(monkeypatch):
    monkeypatch.setattr(hints, "checkout_root", lambda: None)
    cluster = hints.install_hint("cluster")  # the server extra's requirements, expanded, and ray
    assert cluster.startswith("pip install 'torch>=") and cluster.endswith(" 'ray>=2.40'")
    onnx = set(hints.extra_requirements("onnx"))
    assert {"onnx>=1.17", "onnxruntime>=1.20"} <= onnx and set(hints.extra_requirements("tensorrt")) > onnx
    done = dry_run(shlex.split(hints.install_hint("cluster"))[2:], cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_hint_names_a_package_no_index_has():
    """``pip install 'sana-stream[...]'`` can only fail: the project is on no index."""
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in [*DOCS, *ROOT.glob("*/**/*.py")]
           if ".venv" not in p.parts and p.name != "install_hint.py" and p != Path(__file__)
           for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
           if re.search(r"pip install ['\"]?sana-stream", line)]
    assert bad == []


def test_the_secret_rules_are_stated_in_help_and_docs(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"at least {MIN_TOKEN_CHARS} characters" in text and f"at least {MIN_TURN_SECRET_CHARS} characters" in text
    api = (ROOT / "docs" / "api.md").read_text()
    assert f"at least {MIN_TOKEN_CHARS} characters" in api and f"at least {MIN_TURN_SECRET_CHARS}" in api
    for doc in DOCS:  # every example that passes a token says how long it must be, in the same code block
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.DOTALL):
            if "--token" in block and "$TOKEN" in block:
                assert f"at least {MIN_TOKEN_CHARS} characters" in block, (doc.name, block)


def test_the_install_docs_name_every_package_the_wheel_installs():
    text = " ".join((ROOT / "docs" / "install.md").read_text().split())
    listed = re.search(r"the top-level packages (.*?)\.", text).group(1)
    assert set(re.findall(r"`(\w+)`", listed)) == {*CODE_PACKAGES, "web"}
