"""``sana-stream build``: export (and for TensorRT, build) every part into the engine cache ahead of time.

    sana-stream build --model DIR_OR_HUB_ID --backend tensorrt --width 512 --height 512 --steps 1 --streams 1

``serve`` with the same settings then finds everything in the cache. ``--controlnet`` (repeatable, as for
``serve``) adds each ControlNet's part; the transformer is the same with or without them. ``--check`` compares
each exported part with torch (ONNX Runtime, fp32) and exits 1 when any relative error is above the tolerance
(1e-3).
Wire it into the command with ``add_build_parser(subparsers)``; ``python -m engines.build_cli build ...`` runs
it on its own.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from engines import BackendName
from engines.cache import CACHE_ENV, default_cache_dir
from engines.exceptions import EngineError, ParityError
from engines.specs import Precision

logger = logging.getLogger(__name__)

COMPILED = [BackendName.ONNXRUNTIME.value, BackendName.TENSORRT.value]


def default_t_list(steps: int) -> tuple[float, ...]:
    """Evenly spaced angles from 1.0 rad down (only their number shapes the engines)."""
    return tuple(round(1.0 * (steps - i) / steps, 4) for i in range(steps))


def add_build_parser(subparsers: Any) -> None:
    """Adds the ``build`` subcommand to an argparse subparsers object (``parser.add_subparsers()``)."""
    p = subparsers.add_parser("build", help="export and build compiled engines into the engine cache")
    add_build_options(p)


def add_build_options(p: argparse.ArgumentParser) -> None:
    """The ``build`` subcommand's description and options, on its parser."""
    from stream.config import CfgType, VaeKind

    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True, help="diffusers-format Sana-Sprint directory or hub id")
    p.add_argument("--backend", default=BackendName.TENSORRT.value, choices=COMPILED)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="number of denoising steps (1-4)")
    steps.add_argument("--t-list", type=float, nargs="+", default=None, help="the angles themselves (radians)")
    p.add_argument("--cfg-type", default=CfgType.NONE.value, choices=[c.value for c in CfgType])
    p.add_argument("--streams", type=int, default=1, help="streams served by one model call")
    p.add_argument("--precision", default=None, choices=[x.value for x in Precision],
                   help="graph precision (default: fp32 for onnxruntime, bf16 for tensorrt)")
    p.add_argument("--kv-length", type=int, default=None,
                   help="prompt tokens the transformer holds (default: all 300; fewer is faster, longer prompts fail)")
    p.add_argument("--check", action="store_true", help="compare every part with torch; exit 1 above 1e-3")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"engine cache (default: ${CACHE_ENV} or {default_cache_dir()})")
    p.add_argument("--encoder", default=VaeKind.DCAE.value, choices=[VaeKind.DCAE.value, VaeKind.TINY.value])
    p.add_argument("--decoder", default=VaeKind.DCAE.value, choices=[v.value for v in VaeKind])
    p.add_argument("--tiny-vae", default=None, help="directory of taesana_*.pth (for --encoder/--decoder tiny)")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:PREPROCESSOR[:SCALE]]",
                   help="a Sprint ControlNet to build a part for (as serve's option; only PATH shapes the engine); "
                        "repeatable")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda where present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="torch dtype of the loaded model")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Loads the model, compiles every part (or finds it cached) and logs a summary. Returns the exit code."""
    from engines.compile import CompileOptions, compile_backend
    from engines.specs import BuildSpec
    from engines.torch_backend import TorchBackend
    from stream.config import StreamConfig
    from stream.control import ControlNetConfig
    from stream.loading import choose_placement, load_codecs, load_controlnets, load_pipeline, resolve_model_dir

    t_list = tuple(args.t_list) if args.t_list else default_t_list(args.steps or 1)
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
    if config.backend is BackendName.TENSORRT:  # the GPU stack's real problem in a second, not after loading
        from engines.gpu_probe import probe_tensorrt

        try:
            probe_tensorrt(config.device)
        except EngineError as exc:
            logger.error("%s", exc)
            return 1
    placement = choose_placement(config.device, config.dtype)
    path = resolve_model_dir(args.model)
    pipe = load_pipeline(path, placement)
    encoder, decoder = load_codecs(path, config, placement, int(pipe.vae.config.latent_channels))
    controlnets = load_controlnets(config.controlnets, placement)
    torch_backend = TorchBackend(pipe.transformer, pipe.vae, encoder=encoder, decoder=decoder, controlnets=controlnets)
    spec = BuildSpec(width=config.width, height=config.height, steps=config.num_steps, streams=options.streams,
                     cfg_type=config.cfg_type.value, kv_length=options.kv_length or config.max_sequence_length)
    try:
        parts = compile_backend(torch_backend, spec, options, config.backend)
    except ParityError as exc:
        logger.error("check failed: %s", exc)
        return 1
    except EngineError as exc:
        logger.error("build failed: %s", exc)
        return 1
    for component, report in parts.parity.items():
        logger.info("check %s", report)
    for component, engine_path in parts.engine_paths.items():
        logger.info("%-12s %s", component.value, engine_path)
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(parts.seconds.items()))
    logger.info("done (%s)", timings)
    parts.backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sana-stream")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_build_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
