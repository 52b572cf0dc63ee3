"""``sana-stream build``: export (and for TensorRT, build) every part into the part cache ahead of time.

    sana-stream build --model DIR_OR_HUB_ID --backend tensorrt --width 512 --height 512 --steps 1 --streams 1

``serve`` with the same settings then finds everything in the cache. ``--controlnet`` (repeatable, as for
``serve``) adds each ControlNet's part; the transformer is the same with or without them. ``--check`` compares
each exported part with torch (ONNX Runtime, fp32) and exits 1 when any relative error is above the tolerance
(1e-3).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engines import BackendName
from engines.cache import CACHE_ENV, default_cache_dir
from engines.compile import compile_backend
from engines.compile_options import CompileOptions
from engines.exceptions import EngineError, ParityError
from engines.specs import Precision
from stream.config import CfgType, StreamConfig, AutoencoderKind, even_t_list
from stream.control import ControlNetConfig
from stream.loading import build_spec, load_model

logger = logging.getLogger(__name__)

COMPILED = [BackendName.ONNXRUNTIME.value, BackendName.TENSORRT.value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True, help="diffusers-format Sana-Sprint directory or hub id")
    p.add_argument("--backend", default=BackendName.TENSORRT.value, choices=COMPILED)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="number of denoising steps (1-4)")
    steps.add_argument("--t-list", type=float, nargs="+", default=None, help="the angles themselves (radians)")
    p.add_argument("--cfg-type", default=CfgType.NONE.value, choices=[c.value for c in CfgType])
    p.add_argument("--streams", type=int, default=1,
                   help="the most streams one model call serves (the parts take any batch up to it)")
    p.add_argument("--precision", default=None, choices=[x.value for x in Precision],
                   help="graph precision (default: fp32 for onnxruntime, bf16 for tensorrt)")
    p.add_argument("--kv-length", type=int, default=None,
                   help="prompt tokens the transformer holds (default: all 300; fewer is faster, longer prompts fail)")
    p.add_argument("--check", action="store_true", help="compare every part with torch; exit 1 above 1e-3")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where compiled parts are cached (default: {default_cache_dir()}, the engines/ directory of "
                        f"${CACHE_ENV} or ~/.cache/sana-stream)")
    p.add_argument("--encoder", default=AutoencoderKind.DCAE.value,
                   choices=[AutoencoderKind.DCAE.value, AutoencoderKind.TINY.value])
    p.add_argument("--decoder", default=AutoencoderKind.DCAE.value, choices=[v.value for v in AutoencoderKind])
    p.add_argument("--tiny-vae", default=None, help="directory of taesana_*.pth (for --encoder/--decoder tiny)")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:PREPROCESSOR[:SCALE]]",
                   help="a Sprint ControlNet to build a part for (as serve's option; only PATH shapes the part); "
                        "repeatable")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda where present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="torch dtype of the loaded model")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Loads the model, compiles every part (or finds it cached) and logs a summary. Returns the exit code."""
    t_list = tuple(args.t_list) if args.t_list else even_t_list(1.0, args.steps or 1)  # only their number counts
    device = args.device or ("cpu" if args.backend == BackendName.ONNXRUNTIME.value else None)
    try:
        config = StreamConfig(width=args.width, height=args.height, t_list=t_list, cfg_type=args.cfg_type,
                              encoder=args.encoder, decoder=args.decoder, tiny_vae=args.tiny_vae,
                              device=device, dtype=args.dtype, backend=args.backend,
                              controlnets=tuple(ControlNetConfig.from_option(c) for c in args.controlnet))
        options = CompileOptions(streams=args.streams, precision=args.precision, check=args.check,
                                 kv_length=args.kv_length, cache_dir=args.cache_dir or default_cache_dir())
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        loaded = load_model(args.model, config)  # for tensorrt, probes the GPU stack first (seconds, not minutes)
    except EngineError as exc:
        logger.error("%s", exc)
        return 1
    try:
        parts = compile_backend(loaded.torch_backend, build_spec(config, options), options, config.backend)
    except ParityError as exc:
        logger.error("check failed: %s", exc)
        return 1
    except EngineError as exc:
        logger.error("build failed: %s", exc)
        return 1
    for component, report in parts.parity.items():
        logger.info("check %s", report)
    for component, engine_path in parts.part_paths.items():
        logger.info("%-12s %s", component.value, engine_path)
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(parts.seconds.items()))
    logger.info("done (%s)", timings)
    parts.backend.close()
    return 0

