"""``sana-stream make-tiny-model DIR``: writes the demo model, a tiny randomly initialised Sana-Sprint in
diffusers format (its images are not a real style)."""

from __future__ import annotations

import argparse
import logging

from stream.demo_model import DemoPreset, make_demo_model

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    path = make_demo_model(args.directory, preset=args.preset, seed=args.seed)
    logger.info("demo model written to %s (random weights: its images are not a real style)", path)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")
    p.add_argument("--preset", default=DemoPreset.TINY.value, choices=[x.value for x in DemoPreset])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
