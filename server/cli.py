"""The ``sana-stream`` command. Every ``serve`` option can also come from a SANA_STREAM_<OPTION> variable."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.cli import add_camera_parser
from cluster.options import add_cluster_options, wants_cluster
from engines import AUTO, backend_names
from server.ice_config import DEFAULT_TURN_TTL_S
from stream.exceptions import ModelNotFoundError

logger = logging.getLogger("sana_stream")
BUILD_HELP = "export and build compiled engines into the engine cache"  # as engines.build_cli says it


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
    from stream.tiny_model import make_tiny_model

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
                   help="diffusers-format Sana-Sprint directory or hub id (default: cached Sana-Sprint 0.6B; on a "
                        "CUDA GPU with network access it is downloaded, else a tiny demo model is served)")
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
    p.add_argument("--no-pages", action="store_true", default=_env("no_pages") == "1",
                   help="serve the API only, without the web pages (/ and /view); without this flag a server "
                        "whose pages are missing refuses to start")
    add_ice_options(p)
    add_cluster_options(p, _env)
    p.set_defaults(func=_serve)


def add_ice_options(p: argparse.ArgumentParser) -> None:
    """STUN/TURN for servers and clients behind NAT (docs/deploy.md). Secrets are better passed in the environment
    than on the command line, where other users of the machine can read them (ps)."""
    p.add_argument("--ice-server", action="append", metavar="URL",
                   default=[u for u in (_env("ice_server") or "").split(",") if u.strip()],
                   help="stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]; repeatable "
                        "(SANA_STREAM_ICE_SERVER: comma-separated). The server's own connections, the web pages and "
                        "`sana-stream camera` all use them")
    p.add_argument("--turn-secret", default=_env("turn_secret"),
                   help="the TURN server's shared secret (coturn: use-auth-secret + static-auth-secret): each client "
                        "gets its own time-limited credentials (recommended; prefer SANA_STREAM_TURN_SECRET)")
    p.add_argument("--turn-ttl", type=float, default=float(_env("turn_ttl") or DEFAULT_TURN_TTL_S),
                   help="seconds a minted TURN credential stays valid (default: %(default)g); clients fetch new "
                        "ones for every connection")
    p.add_argument("--turn-username", default=_env("turn_username"), help="static TURN username (instead of a secret)")
    p.add_argument("--turn-credential", default=_env("turn_credential"),
                   help="static TURN password (prefer SANA_STREAM_TURN_CREDENTIAL)")


class DeferredParser(argparse.ArgumentParser):
    """A subcommand parser that defines its options only when it parses or shows its help: ``build`` and
    ``make-tiny-model`` take their choices from modules that import torch, which ``--version``, ``--help`` and
    ``camera`` should not load (``camera`` runs on machines without torch)."""

    def __init__(self, *args: Any, define: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._define = define

    def _ensure_defined(self) -> None:
        define, self._define = self._define, None
        if define is not None:
            define(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # argparse's call for a subcommand
        self._ensure_defined()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._ensure_defined()
        return super().format_help()


def _define_make_tiny_model(parser: argparse.ArgumentParser) -> None:
    from stream.tiny_model import TinyPreset

    parser.add_argument("directory")
    parser.add_argument("--preset", default=TinyPreset.TINY.value, choices=[p.value for p in TinyPreset])
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_make_tiny_model)


def _define_build(parser: argparse.ArgumentParser) -> None:
    from engines.build_cli import add_build_options

    add_build_options(parser)


def version() -> str:
    try:
        return importlib.metadata.version("sana-stream")
    except importlib.metadata.PackageNotFoundError:  # a checkout run with PYTHONPATH, never pip-installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-stream", description="Real-time Sana-Sprint img2img streaming")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=DeferredParser)
    sub.add_parser("make-tiny-model", help="write a tiny random Sana-Sprint in diffusers format",
                   define=_define_make_tiny_model)
    add_serve_parser(sub)
    sub.add_parser("build", help=BUILD_HELP, define=_define_build)
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
