"""``sana-stream serve``: the streaming server. Every option can also come from a SANA_STREAM_<OPTION> variable."""

from __future__ import annotations

import argparse

from cluster.options import add_cluster_options, wants_cluster
from engines import AUTO, backend_names
from engines.specs import Precision
from rtc.ice_config import DEFAULT_TURN_TTL_S
from sana_stream.env import env
from stream.config import CfgType, AutoencoderKind


def run(args: argparse.Namespace) -> int:
    if wants_cluster(args):
        from cluster.serve import run_cluster  # Ray only for --workers

        return run_cluster(args)
    from server.serve import run_server  # aiortc, uvicorn and the model stack only for this command

    return run_server(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=env("model"),
                   help="diffusers-format Sana-Sprint directory or hub id (default: cached Sana-Sprint 0.6B; on a "
                        "CUDA GPU with network access it is downloaded, else a tiny demo model is served)")
    p.add_argument("--host", default=env("host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("port", "8080") or 8080))
    p.add_argument("--backend", default=env("backend", AUTO), choices=[AUTO, *backend_names()],
                   help="auto (default): tensorrt on an NVIDIA GPU, onnxruntime on a CPU, torch where those are "
                        "not installed; compiled backends are built on first use (cached; see `sana-stream build`)")
    p.add_argument("--precision", default=env("precision"), choices=[x.value for x in Precision],
                   help="compiled graph precision (default: fp32 for onnxruntime, bf16 for tensorrt)")
    p.add_argument("--width", type=int, default=int(env("width", "512") or 512))
    p.add_argument("--height", type=int, default=int(env("height", "512") or 512))
    p.add_argument("--steps", type=int, default=int(env("steps", "1") or 1), help="denoising steps (1-4)")
    p.add_argument("--strength", type=float, default=float(env("strength", "1.0") or 1.0),
                   help="first TrigFlow angle in radians (pi/2 = pure noise)")
    p.add_argument("--t-list", type=parse_t_list, default=env("t_list"),
                   help="explicit comma-separated angles; overrides --steps/--strength")
    p.add_argument("--prompt", default=env("prompt"),
                   help="default: 'a watercolor painting'; the demo model's first trained prompt for the demo model")
    p.add_argument("--cfg-type", default=env("cfg_type", CfgType.NONE.value), choices=[c.value for c in CfgType])
    p.add_argument("--encoder", default=env("encoder"),
                   choices=[AutoencoderKind.DCAE.value, AutoencoderKind.TINY.value],
                   help="default: dcae; the autoencoder it was trained with for the demo model (tiny)")
    p.add_argument("--decoder", default=env("decoder"), choices=[v.value for v in AutoencoderKind],
                   help="default: dcae; the autoencoder it was trained with for the demo model (tiny)")
    p.add_argument("--tiny-vae", default=env("tiny_vae"), help="directory of taesana_*.pth")
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:PREPROCESSOR[:SCALE]]",
                   help="a Sprint ControlNet (directory or hub id) with its preprocessor (canny, passthrough) and "
                        "scale; repeatable")
    p.add_argument("--similarity-filter", action="store_true", default=env("similarity_filter") == "1")
    p.add_argument("--seed", type=int, default=int(env("seed", "0") or 0))
    p.add_argument("--token", default=env("token"), help="require 'Authorization: Bearer TOKEN' to mutate")
    p.add_argument("--max-peers", type=int, default=int(env("max_peers", "4") or 4))
    p.add_argument("--max-viewers", type=int, default=int(env("max_viewers", "-1") or -1),
                   help="receive-only /view connections (OBS Browser Sources); default 4 x --max-peers")
    p.add_argument("--idle-timeout", type=float, default=float(env("idle_timeout", "10") or 10))
    p.add_argument("--cors-origin", action="append", default=[o for o in (env("cors_origin") or "").split(",") if o])
    p.add_argument("--ssl-certfile", default=env("ssl_certfile"))
    p.add_argument("--ssl-keyfile", default=env("ssl_keyfile"))
    p.add_argument("--allow-public-without-token", action="store_true",
                   default=env("allow_public_without_token") == "1")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   default=[h for h in (env("allowed_host") or "").split(",") if h],
                   help="a Host name to answer besides loopback and the bound address (a reverse proxy's, a LAN "
                        "name; *.example.com for subdomains; * turns the check off); repeatable")
    p.add_argument("--request-timeout", type=float, default=float(env("request_timeout", "10") or 10),
                   help="seconds a request's head, and then its body, may take to arrive")
    p.add_argument("--max-connections", type=int, default=int(env("max_connections", "200") or 200),
                   help="open HTTP connections; more are closed at once")
    p.add_argument("--no-pages", action="store_true", default=env("no_pages") == "1",
                   help="serve the API only, without the web pages (/ and /view); without this flag a server "
                        "whose pages are missing refuses to start")
    add_ice_options(p)
    add_cluster_options(p, env)
    p.set_defaults(func=run)


def add_ice_options(p: argparse.ArgumentParser) -> None:
    """STUN/TURN for servers and clients behind NAT (docs/deploy.md). Secrets are better passed in the environment
    than on the command line, where other users of the machine can read them (ps)."""
    p.add_argument("--ice-server", action="append", metavar="URL",
                   default=[u for u in (env("ice_server") or "").split(",") if u.strip()],
                   help="stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]; repeatable "
                        "(SANA_STREAM_ICE_SERVER: comma-separated). The server's own connections, the web pages and "
                        "`sana-stream camera` all use them")
    p.add_argument("--turn-secret", default=env("turn_secret"),
                   help="the TURN server's shared secret (coturn: use-auth-secret + static-auth-secret): each client "
                        "gets its own time-limited credentials (recommended; prefer SANA_STREAM_TURN_SECRET)")
    p.add_argument("--turn-ttl", type=float, default=float(env("turn_ttl") or DEFAULT_TURN_TTL_S),
                   help="seconds a minted TURN credential stays valid (default: %(default)g); clients fetch new "
                        "ones for every connection")
    p.add_argument("--turn-username", default=env("turn_username"), help="static TURN username (instead of a secret)")
    p.add_argument("--turn-credential", default=env("turn_credential"),
                   help="static TURN password (prefer SANA_STREAM_TURN_CREDENTIAL)")


def parse_t_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t-list must be comma-separated angles in radians, got {text!r}") from None
