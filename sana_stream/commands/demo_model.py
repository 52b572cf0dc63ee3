"""``sana-stream make-demo-model DIR [--train]`` (and its old name ``make-tiny-model``): writes a demo Sana-Sprint in
diffusers format. Without ``--train``: random weights of a preset (tests, benchmarks). With ``--train``: the demo
model the server serves on a machine without real weights, trained in a few minutes on a CPU to imitate simple
filters, one per prompt (docs/demo-model.md); the committed one is ``stream/demo_weights``."""

from __future__ import annotations

import argparse
import logging

from stream.demo_model import DemoPreset, make_demo_model

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    if args.train:
        from stream.demo_training import DemoTrainingConfig, make_trained_demo_model

        path = make_trained_demo_model(args.directory, DemoTrainingConfig(seed=args.seed))
        logger.info("trained demo model written to %s", path)
        return 0
    path = make_demo_model(args.directory, preset=args.preset, seed=args.seed)
    logger.info("demo model written to %s (random weights: its images are not a real style)", path)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")
    p.add_argument("--preset", default=DemoPreset.TINY.value, choices=[x.value for x in DemoPreset],
                   help="sizes of a random model (without --train)")
    p.add_argument("--train", action="store_true",
                   help="train the demo model to imitate its filters (a few minutes on 2 CPU cores; seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
