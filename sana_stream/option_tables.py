"""The docs' option tables, made from the argument parsers and ``stream.live_settings``, so docs and program
cannot drift: ``python -m sana_stream.option_tables --write`` rewrites each table between its markers in
docs/*.md, and ``tests/test_docs_true.py`` fails while one differs from what this module makes.

Which options read a ``SANA_STREAM_*`` variable is found, not declared: the parser is defined once with no such
variable set and once with every one set, and an option whose default moves reads its variable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sana_stream.env import PREFIX

DOCS = Path(__file__).resolve().parent.parent / "docs"
PROBES = ("1", "7")  # two values, so an option whose default is one of them still moves


@dataclass(frozen=True)
class Table:
    name: str  # the marker's name
    doc: str  # the file under docs/
    render: Callable[[], str]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with every SANA_STREAM_* variable removed, then ``values`` set; restored afterwards."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith(PREFIX)]:
            del os.environ[name]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def command_actions(command: str, values: dict[str, str] | None = None) -> list[argparse.Action]:
    """The options of ``sana-stream COMMAND``, defined under an environment of ``values`` alone."""
    from sana_stream.cli import build_parser

    with environment(values or {}):
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[command]
        parser.define()
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def variable(action: argparse.Action) -> str:
    return PREFIX + action.dest.upper()


def reads_variable(command: str) -> set[str]:
    """The dests of ``command``'s options whose default comes from their SANA_STREAM_* variable."""
    plain = {a.dest: a.default for a in command_actions(command)}
    moved: set[str] = set()
    for probe in PROBES:
        actions = command_actions(command, {variable(a): probe for a in command_actions(command)})
        moved |= {a.dest for a in actions if a.default != plain[a.dest]}
    return moved


def show_default(action: argparse.Action) -> str:
    default = action.default
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if default is None or default == [] or default == ():
        return ""
    if isinstance(default, (list, tuple)):
        return "`" + ",".join(str(v) for v in default) + "`"
    return f"`{default}`"


def show_variable(action: argparse.Action) -> str:
    name = f"`{variable(action)}`"
    if isinstance(action, argparse._StoreTrueAction):
        return f"{name}=`1` (only `1` turns it on)"
    if isinstance(action, argparse._AppendAction):
        return f"{name} (comma-separated)"
    return name


def show_option(action: argparse.Action) -> str:
    name = max(action.option_strings, key=len)
    if action.nargs == 0:
        return f"`{name}`"
    metavar = action.metavar or action.dest.upper()
    repeat = " (repeatable)" if isinstance(action, argparse._AppendAction) else ""
    return f"`{name} {metavar}`{repeat}".replace("|", "\\|")


def show_help(action: argparse.Action) -> str:
    text = (action.help or "") % {"default": action.default, "prog": "sana-stream"}
    if action.choices is not None and not isinstance(action.choices, dict):
        text = (text + "; " if text else "") + "one of: " + ", ".join(f"`{c}`" for c in action.choices)
    return text.replace("|", "\\|")


def options_table(command: str) -> str:
    env_read = reads_variable(command)
    rows = ["| option | default | environment | meaning |", "|---|---|---|---|"]
    for action in command_actions(command):
        env_cell = show_variable(action) if action.dest in env_read else "none"
        rows.append(f"| {show_option(action)} | {show_default(action)} | {env_cell} | {show_help(action)} |")
    return "\n".join(rows)


def live_settings_table() -> str:
    from stream.live_settings import LIVE_SETTINGS

    rows = ["| `POST /prompt` field | bridge command | value | meaning |", "|---|---|---|---|"]
    rows.append("| `stream` | `--stream` at start | stream id | the stream to change; without it every stream "
                "(and later ones) |")
    for s in LIVE_SETTINGS:
        value = f"list of {s.kind.__name__}" if s.many else s.kind.__name__
        bounds = ", ".join(f"{k} {v}" for k, v in s.bounds.items())
        meaning = "; ".join(x for x in (s.description or "", bounds) if x)
        rows.append(f"| `{s.name}` | `/{s.command} {s.placeholder}` | {value} | {meaning} |")
    return "\n".join(rows) + "\n\nEvery field is optional; only the fields given change."


TABLES = (
    Table("serve options", "api.md", lambda: options_table("serve")),
    Table("live settings", "api.md", live_settings_table),
    Table("camera options", "bridge.md", lambda: options_table("camera")),
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} (python -m sana_stream.option_tables --write) -->", f"<!-- end: {name} -->"


def replace_table(text: str, table: Table) -> str:
    begin, end = markers(table.name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text) is None:
        raise ValueError(f"docs/{table.doc} has no {begin!r} ... {end!r} markers")
    return pattern.sub(lambda _: f"{begin}\n{table.render()}\n{end}", text)


def rendered_docs() -> dict[Path, str]:
    """Each doc with a table, as it should read."""
    texts: dict[Path, str] = {}
    for table in TABLES:
        path = DOCS / table.doc
        texts[path] = replace_table(texts.get(path) or path.read_text(), table)
    return texts


def main(argv: list[str]) -> int:
    stale = [p for p, text in rendered_docs().items() if p.read_text() != text]
    if "--write" in argv:
        for path, text in rendered_docs().items():
            path.write_text(text)
        return 0
    for path in stale:
        sys.stderr.write(f"{path} differs from its options; run python -m sana_stream.option_tables --write\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
