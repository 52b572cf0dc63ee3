"""The ``sana-stream`` command. Each subcommand's module is imported only when it runs (or for the full help), so
``sana-stream camera`` on a laptop loads neither the server nor torch."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

from engines.exceptions import ModelNotFoundError

logger = logging.getLogger("sana_stream")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


@dataclass(frozen=True)
class Command:
    module: str  # a sana_stream.commands module: add_arguments(parser) sets the parser's func
    help: str


COMMANDS = {
    "serve": Command("sana_stream.commands.serve", "run the streaming server"),
    "build": Command("sana_stream.commands.build", "export and build compiled parts into the cache"),
    "camera": Command("sana_stream.commands.camera",
                      "send a camera, screen region, window or video file to a server and write the restyled video "
                      "to a virtual camera (OBS, Zoom, VTuber setups)"),
    "make-tiny-model": Command("sana_stream.commands.demo_model",
                               "write a tiny random Sana-Sprint (the demo model) in diffusers format"),
}


def requested_command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, or None (no command, or a request for the full help)."""
    first = argparse.ArgumentParser(prog="sana-stream", add_help=False)
    first.add_argument("--log-level")
    first.add_argument("command", nargs="?")
    known, _ = first.parse_known_args(argv)
    return known.command if known.command in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; every subcommand is listed, but only ``command``'s options are defined (all when None)."""
    parser = argparse.ArgumentParser(prog="sana-stream", description="Real-time Sana-Sprint img2img streaming")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec.help)
        if command is None or command == name:
            importlib.import_module(spec.module).add_arguments(p)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(requested_command(argv)).parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except (ValueError, ModelNotFoundError) as exc:  # a bad option or missing weights: one clear line
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
