"""The ``sana-stream`` command. Each subcommand's module is imported only when that command is parsed, so
``sana-stream camera`` on a laptop loads neither the server nor torch."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys
from dataclasses import dataclass
from typing import Any

from engines.exceptions import ModelNotFoundError
from sana_stream.extras import SERVER, Extra, MissingExtra, require

logger = logging.getLogger("sana_stream")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


@dataclass(frozen=True)
class Command:
    module: str  # a sana_stream.commands module: add_arguments(parser) defines the options and sets func
    help: str
    extra: Extra | None = None  # the optional extra the command needs, checked before its module loads


COMMANDS = {
    "serve": Command("sana_stream.commands.serve", "run the streaming server", SERVER),
    "build": Command("sana_stream.commands.build", "export and build compiled parts into the cache", SERVER),
    "camera": Command("sana_stream.commands.camera",
                      "send a camera, screen region, window or video file to a server and write the restyled video "
                      "to a virtual camera or an NDI source (OBS, Zoom, VTuber setups)"),
    "make-demo-model": Command("sana_stream.commands.demo_model",
                               "write a demo Sana-Sprint in diffusers format: random, or trained to imitate simple "
                               "filters (--train)", SERVER),
    "make-tiny-model": Command("sana_stream.commands.demo_model",
                               "write a tiny random Sana-Sprint in diffusers format (make-demo-model's old name)",
                               SERVER),
}


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser. Its options, and the module that defines them, load only when it parses or shows
    its help, so ``--version``, ``--help`` and ``camera`` load no other command's dependencies."""

    def __init__(self, *args: Any, command: Command | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._command = command

    def define(self) -> None:
        """Adds the command's options (once); raises MissingExtra when the command's extra is not installed."""
        command = self._command
        if command is None:
            return
        if command.extra is not None:
            require(self.prog.rpartition(" ")[2], command.extra)
        self._command = None
        importlib.import_module(command.module).add_arguments(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # argparse's call for a subcommand
        self.define()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.define()
        return super().format_help()


def version() -> str:
    try:
        return importlib.metadata.version("sana-stream")
    except importlib.metadata.PackageNotFoundError:  # a checkout run with PYTHONPATH, never pip-installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-stream", description="Real-time Sana-Sprint img2img streaming")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, spec in COMMANDS.items():
        sub.add_parser(name, help=spec.help, command=spec)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except MissingExtra as exc:  # a bridge-only install asked to serve: one line naming the extra
        configure_logging("INFO")
        logger.error("%s", exc)
        return 1
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except (ValueError, ModelNotFoundError) as exc:  # a bad option or missing weights: one clear line
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
