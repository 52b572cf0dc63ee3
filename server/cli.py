"""The ``sana-stream`` command. Every ``serve`` option can also come from a SANA_STREAM_<OPTION> variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bridge.cli import add_camera_parser
from cluster.options import add_cluster_options, wants_cluster
from engines import AUTO, backend_names
from engines.build_cli import add_build_parser
from stream.exceptions import ModelNotFoundError
from stream.tiny_model import TinyPreset, make_tiny_model

logger = logging.getLogger("sana_stream")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SANA_STREAM_{name.upper().replace('-', '_')}", default)


def cache_dir() -> Path:
    return Path(_env("cache") or Path.home() / ".cache" / "sana-stream")


def parse_t_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t-list must be comma-separated angles in radians, got {text!r}") from None


def even_t_list(strength: float, steps: int) -> tuple[float, ...]:
    """``steps`` angles from ``strength`` down, evenly spaced: 1.0 with 2 steps gives (1.0, 0.5)."""
    return tuple(strength * (steps - i) / steps for i in range(steps))


def _make_tiny_model(args: argparse.Namespace) -> int:
    path = make_tiny_model(args.directory, preset=args.preset, seed=args.seed)
    logger.info("tiny model written to %s (random weights: its images are not a real style)", path)
    return 0


def _serve(args: argparse.Namespace) -> int:
    if wants_cluster(args):
        from cluster.serve import run_cluster  # Ray only for --workers

        return run_cluster(args)
    from server.serve import run_server  # heavy imports (aiortc, uvicorn) only for this command

    return run_server(args)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the streaming server")
    p.add_argument("--model", default=_env("model"),
                   help="diffusers-format Sana-Sprint directory or hub id (default: cached Sana-Sprint 0.6B, "
                        "else a tiny demo model)")
    p.add_argument("--host", default=_env("host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env("port", "8080") or 8080))
    p.add_argument("--backend", default=_env("backend", AUTO), choices=[AUTO, *backend_names()],
                   help="auto (default): tensorrt on an NVIDIA GPU, onnxruntime on a CPU, torch where those are "
                        "not installed; compiled backends are built on first use (cached; see `sana-stream build`)")
    p.add_argument("--precision", default=_env("precision"), choices=["fp32", "fp16", "bf16"],
                   help="compiled graph precision (default: fp32 for onnxruntime, bf16 for tensorrt)")
    p.add_argument("--width", type=int, default=int(_env("width", "512") or 512))
    p.add_argument("--height", type=int, default=int(_env("height", "512") or 512))
    p.add_argument("--steps", type=int, default=int(_env("steps", "1") or 1), help="denoising steps (1-4)")
    p.add_argument("--strength", type=float, default=float(_env("strength", "1.0") or 1.0),
                   help="first TrigFlow angle in radians (pi/2 = pure noise)")
    p.add_argument("--t-list", type=parse_t_list, default=_env("t_list"),
                   help="explicit comma-separated angles; overrides --steps/--strength")
    p.add_argument("--prompt", default=_env("prompt", "a watercolor painting"))
    p.add_argument("--cfg-type", default=_env("cfg_type", "none"), choices=["none", "full", "self", "onetime"])
    p.add_argument("--encoder", default=_env("encoder", "dcae"), choices=["dcae", "tiny"])
    p.add_argument("--decoder", default=_env("decoder", "dcae"), choices=["dcae", "tiny", "dcae-lite"])
    p.add_argument("--tiny-vae", default=_env("tiny_vae"), help="directory of taesana_*.pth")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:PREPROCESSOR[:SCALE]]",
                   help="a Sprint ControlNet (directory or hub id) with its preprocessor (canny, passthrough) and "
                        "scale; repeatable")
    p.add_argument("--similarity-filter", action="store_true", default=_env("similarity_filter") == "1")
    p.add_argument("--seed", type=int, default=int(_env("seed", "0") or 0))
    p.add_argument("--token", default=_env("token"), help="require 'Authorization: Bearer TOKEN' to mutate")
    p.add_argument("--max-peers", type=int, default=int(_env("max_peers", "4") or 4))
    p.add_argument("--max-viewers", type=int, default=int(_env("max_viewers", "-1") or -1),
                   help="receive-only /view connections (OBS Browser Sources); default 4 x --max-peers")
    p.add_argument("--idle-timeout", type=float, default=float(_env("idle_timeout", "10") or 10))
    p.add_argument("--cors-origin", action="append", default=[o for o in (_env("cors_origin") or "").split(",") if o])
    p.add_argument("--ssl-certfile", default=_env("ssl_certfile"))
    p.add_argument("--ssl-keyfile", default=_env("ssl_keyfile"))
    p.add_argument("--allow-public-without-token", action="store_true",
                   default=_env("allow_public_without_token") == "1")
    add_cluster_options(p, _env)
    p.set_defaults(func=_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-stream", description="Real-time Sana-Sprint img2img streaming")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("make-tiny-model", help="write a tiny random Sana-Sprint in diffusers format")
    tiny.add_argument("directory")
    tiny.add_argument("--preset", default=TinyPreset.TINY.value, choices=[p.value for p in TinyPreset])
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny_model)

    add_serve_parser(sub)
    add_build_parser(sub)
    add_camera_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, ModelNotFoundError) as exc:  # a bad option or missing weights: one clear line
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
