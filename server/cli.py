"""The ``sana-stream`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from stream.tiny_model import TinyPreset, make_tiny_model

logger = logging.getLogger("sana_stream")


def _make_tiny_model(args: argparse.Namespace) -> int:
    path = make_tiny_model(args.directory, preset=args.preset, seed=args.seed)
    logger.info("tiny model written to %s (random weights: its images are not a real style)", path)
    return 0


def _serve(args: argparse.Namespace) -> int:
    logger.error("server not built yet: the WebRTC server lands with issue #4")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-stream", description="Real-time Sana-Sprint img2img streaming")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("make-tiny-model", help="write a tiny random Sana-Sprint in diffusers format")
    tiny.add_argument("directory")
    tiny.add_argument("--preset", default=TinyPreset.TINY.value, choices=[p.value for p in TinyPreset])
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny_model)

    serve = sub.add_parser("serve", help="run the streaming server")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
